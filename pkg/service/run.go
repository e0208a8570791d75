package service

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/analyzer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pipeline"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// rowLockTimeout bounds the wait for a control-plane tenant row held by
// someone else (billing updating it, another replica).
const rowLockTimeout = 15 * time.Second

// reconcileInterval is how often a cleaner looks for lost work (marked
// tenants without a drain check), besides at start and whenever the bus
// recreated a stream.
const reconcileInterval = 10 * time.Minute

// RunMarker runs the marker until ctx is cancelled. It returns nil after a
// clean shutdown (or when ctx ends while it is still waiting for its
// dependencies) and an error when it cannot start.
func RunMarker(ctx context.Context, cfg *config.Marker, log *slog.Logger) error {
	httpCtx, stopHTTP := context.WithCancel(ctx)
	obs, err := startObservability(httpCtx, "marker", cfg.HTTPAddr, log)
	if err != nil {
		stopHTTP()
		return err
	}
	defer obs.wait()
	defer stopHTTP()
	env, err := Open(ctx, "marker", &cfg.Common, What{Data: true, Control: true, Bus: true}, log, true)
	if err != nil {
		return startErr(ctx, err)
	}
	defer env.Close()
	obs.attach(env)
	m := &pipeline.Marker{
		Stores:     env.pipelineStores(),
		Rules:      env.pipelineRules(cfg.InactiveDays),
		Pending:    env.Bus,
		CheckDelay: cfg.CheckDelay,
		Now:        time.Now,
	}
	log.Info("marker started", "concurrency", cfg.Concurrency, "inactive_days", cfg.InactiveDays,
		"drain_check_delay", cfg.CheckDelay.String())
	err = env.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerMarker, FilterSubject: bus.SubjectCandidate,
		Concurrency: cfg.Concurrency, AckWait: cfg.AckWait, MaxFailures: cfg.MaxFailures},
		bus.Chain(m.Handle, measured(obs.metrics, "mark", false)))
	log.Info("marker stopped")
	return err
}

// RunCleaner runs the cleaner until ctx is cancelled (see RunMarker).
func RunCleaner(ctx context.Context, cfg *config.Cleaner, log *slog.Logger) error {
	httpCtx, stopHTTP := context.WithCancel(ctx)
	obs, err := startObservability(httpCtx, "cleaner", cfg.HTTPAddr, log)
	if err != nil {
		stopHTTP()
		return err
	}
	defer obs.wait()
	defer stopHTTP()
	// The pacer's sampler has a connection of its own, within DB_MAX_CONNS.
	pools := cfg.Common
	if cfg.Pace.Mode != pacer.ModeOff {
		pools.DBMaxConns--
	}
	env, err := Open(ctx, "cleaner", &pools, What{Data: true, Control: true, Bus: true,
		LockTimeout: cfg.DDLLockTimeout, DropSlots: cfg.DropSlots}, log, true)
	if err != nil {
		return startErr(ctx, err)
	}
	defer env.Close()
	if err := env.OpenOtherStores(ctx, &cfg.OtherStores); err != nil {
		return err
	}
	obs.attach(env)
	obs.metrics.OnScrape(phaseExporter(env.Bus, obs.metrics, 5*time.Second, log))
	identity := Identity("cleaner")
	pacers, closePacers, err := startPacers(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closePacers()
	paced := map[string]pipeline.Pacer{}
	for shard, p := range pacers {
		paced[shard] = p
		go reportPace(ctx, p, env.Bus, obs.metrics, identity, shard, len(pacers) > 1, log)
	}
	c := &pipeline.Cleaner{
		Stores:           env.pipelineStores(),
		Rules:            env.pipelineRules(cfg.InactiveDays),
		CheckDelay:       cfg.CheckDelay,
		CheckMaxDelay:    cfg.CheckMaxDelay,
		Timeout:          cfg.Timeout,
		MaxLeftoverDocs:  cfg.MaxLeftoverDocs,
		MaxPerHour:       cfg.MaxPerHour,
		MaxPerDay:        cfg.MaxPerDay,
		Identity:         identity,
		Now:              time.Now,
		Pacers:           paced,
		ObserveStep:      obs.metrics.ObserveStep,
		ObserveShardStep: obs.metrics.ObserveShardStep,
		ObserveStore:     storeMetrics(obs.metrics),
	}
	if env.Files != nil {
		c.Files = env.Files
	}
	if env.Keys != nil {
		c.Keys = env.Keys
	}
	obs.metrics.SetShards(c.ShardNames(c.Rules))
	breaker := &pipeline.Breaker{Window: cfg.BreakerWindow, MinFailures: cfg.BreakerMin, Rate: cfg.BreakerRate,
		Cooldown: cfg.BreakerPause}
	reconciler := &pipeline.Reconciler{Stores: c.Stores, Bus: env.Bus, Now: time.Now, Log: log}
	log.Info("cleaner started", "concurrency", cfg.Concurrency, "inactive_days", cfg.InactiveDays,
		"drain_timeout", cfg.Timeout.String(), "max_leftover_docs", cfg.MaxLeftoverDocs,
		"max_per_hour", cfg.MaxPerHour, "max_per_day", cfg.MaxPerDay, "pace", cfg.Pace.Mode,
		"s3_file_store", env.Files != nil, "redis", env.Keys != nil)
	go reconciler.Run(ctx, reconcileInterval)
	err = env.Bus.Consume(ctx, bus.ConsumeOptions{Consumer: bus.ConsumerCleaner, FilterSubject: bus.DrainSubjects,
		Concurrency: cfg.Concurrency, AckWait: cfg.AckWait, MaxFailures: cfg.MaxFailures},
		bus.Chain(c.Handle, measured(obs.metrics, "drain_check", true), breaker.Middleware(c.Identity, time.Now)))
	log.Info("cleaner stopped")
	return err
}

// RunAnalyzer runs analysis passes every ANALYZER_INTERVAL until ctx is
// cancelled, or a single pass with once (whose failure it returns). The
// summary goes to out.
func RunAnalyzer(ctx context.Context, cfg *config.Analyzer, once bool, out io.Writer, log *slog.Logger) error {
	addr := cfg.HTTPAddr
	if once {
		addr = "" // a single pass serves nothing
	}
	httpCtx, stopHTTP := context.WithCancel(ctx)
	obs, err := startObservability(httpCtx, "analyzer", addr, log)
	if err != nil {
		stopHTTP()
		return err
	}
	defer obs.wait()
	defer stopHTTP()
	capHeap(ctx, analyzerHeap)
	env, err := Open(ctx, "analyzer", &cfg.Common, What{Data: true, Control: true, Bus: true, ReadOnly: true}, log, !once)
	if err != nil {
		return startErr(ctx, err)
	}
	defer env.Close()
	obs.attach(env)
	a := &analyzer.Analyzer{Data: env.Data, Shards: env.Shards, CatalogShard: env.CatalogShard, DefaultShard: env.DefaultShard,
		Control: env.Control, Bus: env.Bus, InactiveDays: cfg.InactiveDays,
		ReportDir: cfg.ReportDir, Workers: int(cfg.DBMaxConns), Out: out, Now: time.Now, Log: log}
	interval := cfg.Interval
	if once {
		interval = 0
	}
	a.Observe = observePasses(obs.metrics, env.Bus, interval, log)
	if once {
		return a.Pass(ctx)
	}
	log.Info("analyzer started", "interval", cfg.Interval.String(), "inactive_days", cfg.InactiveDays)
	err = a.Run(ctx, cfg.Interval)
	log.Info("analyzer stopped")
	return err
}

// startErr is nil when the start was cut short by shutdown.
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// pipelineStores are env's databases as the marker and the cleaner use them.
func (e *Env) pipelineStores() pipeline.Stores {
	return pipeline.Stores{Data: e.Data, Control: e.Control, Shards: e.Shards}
}

// pipelineRules are the eligibility rules of the marker and the cleaner on
// env's shards.
func (e *Env) pipelineRules(inactiveDays int) pipeline.Rules {
	return pipeline.Rules{Window: tenant.Window(inactiveDays), ShardName: e.CatalogShard, DefaultShard: e.DefaultShard,
		RowLockTimeout: rowLockTimeout}
}
