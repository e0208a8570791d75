package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Ready checks the service's dependencies: the databases it opened answer,
// JetStream is connected, and the service's consume loop (marker, cleaner)
// is consuming: false while its consumer or stream is gone and being
// recreated.
func (e *Env) Ready(ctx context.Context) error {
	if e.Data != nil {
		if err := e.Data.Ping(ctx); err != nil {
			return fmt.Errorf("data plane: %w", err)
		}
	}
	if e.Control != nil {
		if err := e.Control.Ping(ctx); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
	}
	if e.Files != nil {
		if err := e.Files.Ping(ctx); err != nil {
			return fmt.Errorf("S3 file store: %w", err)
		}
	}
	if e.Keys != nil {
		if err := e.Keys.Ping(ctx); err != nil {
			return fmt.Errorf("redis store: %w", err)
		}
	}
	if e.Bus != nil {
		if err := e.Bus.Ready(); err != nil {
			return fmt.Errorf("JetStream: %w", err)
		}
	}
	return nil
}

// observability serves /metrics, /healthz and /readyz on addr (nothing when
// addr is empty) from before the service's dependencies are open, so that a
// liveness probe does not kill a service that is waiting for its database.
type observability struct {
	metrics *metrics.Metrics
	env     atomic.Pointer[Env]
	done    chan struct{}
}

func startObservability(ctx context.Context, name, addr string, log *slog.Logger) (*observability, error) {
	o := &observability{metrics: metrics.New(name), done: make(chan struct{})}
	if addr == "" {
		close(o.done)
		return o, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR %s: %w", addr, err)
	}
	go func() {
		defer close(o.done)
		if err := metrics.ServeListener(ctx, ln, o.metrics, o.ready, log); err != nil {
			log.Error("metrics server stopped", "error", err)
		}
	}()
	return o, nil
}

func (o *observability) ready(ctx context.Context) error {
	env := o.env.Load()
	if env == nil {
		return errors.New("starting: waiting for the databases and JetStream")
	}
	return env.Ready(ctx)
}

// attach makes the opened environment the one /readyz checks and counts its
// outcomes.
func (o *observability) attach(env *Env) {
	o.env.Store(env)
	env.Bus.OnReport = func(ev tenant.Event) { o.metrics.Outcome(string(ev.Outcome)) }
}

// wait blocks until the HTTP server has shut down (after ctx ends).
func (o *observability) wait() { <-o.done }

// phaseExporter refreshes the per-phase gauges from the tenants' state when
// /metrics is scraped, at most once every minInterval.
func phaseExporter(b *bus.Bus, m *metrics.Metrics, minInterval time.Duration, log *slog.Logger) func(context.Context) {
	var (
		mu   sync.Mutex
		last time.Time
	)
	return func(ctx context.Context) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) < minInterval {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		states, err := b.States(ctx)
		if err != nil {
			log.Warn("read tenant states for the phase metrics", "error", err)
			return
		}
		last = time.Now()
		count := map[string]int{}
		oldest := map[string]time.Duration{}
		for _, p := range tenant.Phases {
			count[string(p)] = 0
		}
		for _, s := range states {
			p := string(s.Phase)
			count[p]++
			if age := last.Sub(s.Since); age > oldest[p] {
				oldest[p] = age
			}
		}
		m.SetPhases(count, oldest)
	}
}
