// Command marker consumes cleanup requests (tenant.cleanup.candidate), marks
// each eligible tenant for Onyx's background deletion and schedules its first
// drain check. See the README for the configuration (or run marker -h).
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
	var cfg config.Marker
	_, err := service.Flags("marker", "marks cleanup candidates and schedules their drain checks", &cfg, args, os.Stdout, nil)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	} else if err != nil {
		return 2
	}
	if err := config.Load(&cfg); err != nil {
		fmt.Fprintln(os.Stderr, "marker:", err)
		return 2
	}
	log := service.Logger("marker", cfg.LogLevel)
	ctx, stop := service.SignalContext()
	defer stop()
	env, err := service.Open(ctx, "marker", &cfg.Common, service.What{Data: true, Control: true, Bus: true}, log, true)
	if err != nil {
		if ctx.Err() != nil {
			return 0
		}
		log.Error("marker cannot start", "error", err)
		return 1
	}
	defer env.Close()

	m := &pipeline.Marker{
		Stores:     pipeline.Stores{Data: env.Data, Control: env.Control},
		Rules:      pipeline.Rules{Window: tenant.Window(cfg.InactiveDays), ShardName: cfg.ShardName, RowLockTimeout: 15 * time.Second},
		Bus:        env.Bus,
		CheckDelay: cfg.CheckDelay,
		Now:        time.Now,
	}
	log.Info("marker started", "concurrency", cfg.Concurrency, "inactive_days", cfg.InactiveDays,
		"drain_check_delay", cfg.CheckDelay.String())
	err = env.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerMarker, FilterSubject: bus.SubjectCandidate,
		Concurrency: cfg.Concurrency}, m.Handle)
	if err != nil {
		log.Error("marker stopped", "error", err)
		return 1
	}
	log.Info("marker stopped")
	return 0
}
