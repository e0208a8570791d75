// Command cleaner consumes due drain checks (tenant.cleanup.drain.*): it
// reschedules tenants not drained yet, reports stuck ones and cleans drained
// ones. Any number of replicas share the work. See the README (or cleaner -h).
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
	var cfg config.Cleaner
	_, err := service.Flags("cleaner", "checks drained tenants and cleans them up", &cfg, args, os.Stdout, nil)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if err := config.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "cleaner:", err)
		return 2
	}
	log := service.Logger("cleaner", cfg.LogLevel)
	ctx, stop := service.SignalContext()
	defer stop()
	if err := service.RunCleaner(ctx, &cfg, log); err != nil {
		log.Error("cleaner failed", "error", err)
		return 1
	}
	return 0
}
