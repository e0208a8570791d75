// Command cleaner consumes due drain checks (tenant.cleanup.drain.*): it
// reschedules tenants not drained yet, reports stuck ones and cleans drained
// ones. Any number of replicas share the work. See the README (or cleaner -h).
package main

import (
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() { os.Exit(service.Program("cleaner", os.Args[1:])) }
