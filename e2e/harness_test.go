// Package e2e drives the whole pipeline (analyzer, marker, cleaner and
// tenantctl) against real PostgreSQL databases and a real JetStream server,
// with Onyx's background deletion simulated by fixture.drain_step. The
// harness is internal/testworld; this file adds running the services.
package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

// world is a testworld.World that runs the services in this process (the
// same code the binaries run).
type world struct {
	*testworld.World
	t *testing.T
}

func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldWith(t, testworld.Options{})
}

func newWorldWith(t *testing.T, o testworld.Options) *world {
	t.Helper()
	return &world{World: testworld.New(t, o), t: t}
}

// startServices runs a marker and a cleaner configured by w.Marker and
// w.Cleaner, and the drain simulation; all stop when the test ends.
func (w *world) startServices() { w.startReplicas(1, 1) }

// startReplicas runs that many markers and cleaners.
func (w *world) startReplicas(markers, cleaners int) { w.run(markers, cleaners, w.Marker, w.Cleaner) }

func (w *world) run(markers, cleaners int, m config.Marker, c config.Cleaner) {
	w.t.Helper()
	mcfg, ccfg := testworld.Validated(w.t, m), testworld.Validated(w.t, c)
	for range markers {
		w.Go(func(ctx context.Context) error { return service.RunMarker(ctx, mcfg, w.Logger("marker")) })
	}
	for range cleaners {
		w.Go(func(ctx context.Context) error { return service.RunCleaner(ctx, ccfg, w.Logger("cleaner")) })
	}
	w.SimulateDeletion()
}

// analyze runs one analyzer pass (w.Analyzer) in this process and returns
// its output.
func (w *world) analyze() string {
	w.t.Helper()
	var out bytes.Buffer
	if err := service.RunAnalyzer(context.Background(), testworld.Validated(w.t, w.Analyzer), true, &out, w.Logger("analyzer")); err != nil {
		w.t.Fatalf("analyzer pass: %v\n%s", err, out.String())
	}
	return out.String()
}

// setenv puts the world's configuration into the environment, for tenantctl
// run in this process (ctl.Main reads it there): a test that calls it cannot
// run in parallel.
func (w *world) setenv() {
	for _, kv := range w.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		w.t.Setenv(name, value)
	}
}
