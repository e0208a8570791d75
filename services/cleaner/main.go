// Command cleaner consumes due drain checks (tenant.cleanup.drain.*): it
// reschedules tenants not drained yet, reports stuck ones and cleans drained
// ones. Any number of replicas share the work. See the README (or cleaner -h).
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

func main() {
	var cfg config.Cleaner
	os.Exit(service.Main("cleaner", "checks drained tenants and cleans them up", os.Args[1:], &cfg, nil,
		func(ctx context.Context, log *slog.Logger) error { return service.RunCleaner(ctx, &cfg, log) }))
}
