// Command marker consumes cleanup requests (tenant.cleanup.candidate), marks
// each eligible tenant for Onyx's background deletion and schedules its first
// drain check. See the README for the configuration (or run marker -h).
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
	if err := service.RunMarker(ctx, &cfg, log); err != nil {
		log.Error("marker failed", "error", err)
		return 1
	}
	return 0
}
