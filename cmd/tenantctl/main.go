// Command tenantctl is the operators' command line for the tenant cleanup
// pipeline; run tenantctl -h for its commands and configuration.
package main

import (
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/ctl"
)

func main() { os.Exit(ctl.Main(os.Args[1:], os.Stdout, os.Stderr)) }
