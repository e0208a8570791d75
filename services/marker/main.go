// Command marker consumes cleanup requests (tenant.cleanup.candidate), marks
// each eligible tenant for Onyx's background deletion and schedules its first
// drain check. See the README for the configuration (or run marker -h).
package main

import (
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() { os.Exit(service.Program("marker", os.Args[1:])) }
