// Command analyzer finds gated, inactive tenants and publishes them as
// cleanup candidates (tenant.cleanup.candidate), every ANALYZER_INTERVAL or
// once with --once, writing the candidate CSV and printing a summary. See the
// README (or run analyzer -h).
package main

import (
	"context"
	"flag"
	"log/slog"
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() {
	var (
		cfg  config.Analyzer
		once bool
	)
	os.Exit(service.Main("analyzer", "publishes gated, inactive tenants as cleanup candidates", os.Args[1:], &cfg,
		func(fs *flag.FlagSet) { fs.BoolVar(&once, "once", false, "run a single analysis pass and exit") },
		func(ctx context.Context, log *slog.Logger) error {
			return service.RunAnalyzer(ctx, &cfg, once, os.Stdout, log)
		}))
}
