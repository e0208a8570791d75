// Command marker consumes cleanup requests (tenant.cleanup.candidate), marks
// each eligible tenant for Onyx's background deletion and schedules its first
// drain check. See the README for the configuration (or run marker -h).
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() {
	var cfg config.Marker
	os.Exit(service.Main("marker", "marks cleanup candidates and schedules their drain checks", os.Args[1:], &cfg, nil,
		func(ctx context.Context, log *slog.Logger) error { return service.RunMarker(ctx, &cfg, log) }))
}
