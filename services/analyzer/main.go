// Command analyzer finds gated, inactive tenants and publishes them as
// cleanup candidates (tenant.cleanup.candidate), every ANALYZER_INTERVAL or
// once with --once, writing the candidate CSV and printing a summary. See the
// README (or run analyzer -h).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	var (
		cfg  config.Analyzer
		once bool
	)
	_, err := service.Flags("analyzer", "publishes gated, inactive tenants as cleanup candidates", &cfg, args, os.Stdout,
		func(fs *flag.FlagSet) { fs.BoolVar(&once, "once", false, "run a single analysis pass and exit") })
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if err := config.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "analyzer:", err)
		return 2
	}
	log := service.Logger("analyzer", cfg.LogLevel)
	ctx, stop := service.SignalContext()
	defer stop()
	if err := service.RunAnalyzer(ctx, &cfg, once, os.Stdout, log); err != nil {
		log.Error("analyzer failed", "error", err)
		return 1
	}
	return 0
}
