// Command cleaner consumes due drain checks (tenant.cleanup.drain.*): it
// reschedules tenants that are not drained yet, reports stuck ones, and cleans
// drained ones (schema, public rows, control-plane rows, ledger row). Any
// number of replicas share the work. See the README (or run cleaner -h).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pipeline"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
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
	env, err := service.Open(ctx, "cleaner", &cfg.Common, service.What{Data: true, Control: true, Bus: true,
		LockTimeout: cfg.DDLLockTimeout}, log, true)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		log.Error("cleaner cannot start", "error", err)
		return 1
	}
	defer env.Close()

	c := &pipeline.Cleaner{
		Stores:          pipeline.Stores{Data: env.Data, Control: env.Control},
		Rules:           pipeline.Rules{Window: tenant.Window(cfg.InactiveDays), ShardName: cfg.ShardName, RowLockTimeout: 15 * time.Second},
		Bus:             env.Bus,
		CheckDelay:      cfg.CheckDelay,
		CheckMaxDelay:   cfg.CheckMaxDelay,
		Timeout:         cfg.Timeout,
		MaxLeftoverDocs: cfg.MaxLeftoverDocs,
		Identity:        service.Identity("cleaner"),
		Now:             time.Now,
		Log:             log,
	}
	log.Info("cleaner started", "concurrency", cfg.Concurrency, "inactive_days", cfg.InactiveDays,
		"drain_timeout", cfg.Timeout.String(), "max_leftover_docs", cfg.MaxLeftoverDocs)
	err = env.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerCleaner, FilterSubject: bus.DrainSubjects,
		Concurrency: cfg.Concurrency}, c.Handle)
	if err != nil {
		log.Error("cleaner stopped", "error", err)
		return 1
	}
	log.Info("cleaner stopped")
	return 0
}
