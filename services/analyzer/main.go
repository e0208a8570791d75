// Command analyzer finds gated, inactive tenants and publishes them as
// cleanup candidates (tenant.cleanup.candidate), every ANALYZER_INTERVAL or
// once with --once, writing the candidate CSV and printing a summary. See the
// README (or run analyzer -h).
package main

import (
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() { os.Exit(service.Program("analyzer", os.Args[1:])) }
