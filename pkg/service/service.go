// Package service is the wiring the three services and tenantctl share:
// flags with -h printing the configuration, the JSON logger, the signal
// context, and opening the data plane, the control plane (through the bastion
// when one is configured) and JetStream.
package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
)

// Flags parses args; -h/--help prints the summary, the flags and the
// configuration (with secrets redacted) to out and returns flag.ErrHelp.
func Flags(name, summary string, spec any, args []string, out io.Writer, define func(*flag.FlagSet)) (*flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	if define != nil {
		define(fs)
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "%s: %s\n\nUsage: %s [flags]\n", name, summary, name)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintln(out, "\nFlags:")
			fs.PrintDefaults()
		}
		fmt.Fprintln(out, "\nConfiguration (environment variables):")
		config.Usage(out, spec)
	}
	return fs, fs.Parse(args)
}

// Logger is a JSON slog logger on stderr tagged with the service name.
func Logger(service, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})).With("service", service)
}

// SignalContext is cancelled by SIGTERM or SIGINT.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}

// Identity names this process in the ledger: host/pid.
func Identity(service string) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s@%s/%d", service, host, os.Getpid())
}

// Retry calls fn until it succeeds or ctx ends, backing off up to 30s and
// logging each failure; a nats-server without message scheduling or bad
// database credentials end it at once. Services use it to wait for their dependencies at
// start instead of crashing while a database or JetStream is restarting.
func Retry(ctx context.Context, log *slog.Logger, what string, fn func(context.Context) error) error {
	delay := 500 * time.Millisecond
	for {
		err := fn(ctx)
		if err == nil || errors.Is(err, bus.ErrServerTooOld) || pgerr.BadCredentials(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Error(what+" failed; retrying", "error", err, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// Env is an opened environment: the stores and the bus a service works with.
type Env struct {
	// Data is the data plane's catalog shard; Shards its other shards by
	// name (ONYX_DB_SHARDS; nil with one shard). CatalogShard and
	// DefaultShard name the catalog and the default shard.
	Data                       *dataplane.Store
	Shards                     map[string]*dataplane.Store
	CatalogShard, DefaultShard string
	Control                    *controlplane.Store
	Bus                        *bus.Bus
	// Files and Keys are the S3 file store and Redis, when configured
	// (OpenOtherStores).
	Files   *filestore.Store
	Keys    *rediskeys.Store
	closers []func()
}

// Close closes everything Open opened, in reverse order.
func (e *Env) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// What Open should open.
type What struct {
	Data, Control, Bus bool
	// ReadOnly: the caller changes nothing, so the databases are only
	// checked (a ping), not given this pipeline's tables.
	ReadOnly bool
	// DropSlots and LockTimeout tune the data-plane store (0: defaults).
	DropSlots   int
	LockTimeout time.Duration
}

// Open opens what is asked for, one after the other: the data plane, then
// the control plane, then the bus. With retry, each is retried until it is
// reachable or ctx ends; without, its first failure is returned. On a
// failure what was opened is closed again.
func Open(ctx context.Context, name string, cfg *config.Common, what What, log *slog.Logger, retry bool) (*Env, error) {
	o := &opener{env: &Env{}, ctx: ctx, name: name, cfg: cfg, what: what, log: log, retry: retry}
	steps := []struct {
		want bool
		open func() error
	}{{what.Data, o.dataPlane}, {what.Control, o.controlPlane}, {what.Bus, o.bus}}
	for _, step := range steps {
		if !step.want {
			continue
		}
		if err := step.open(); err != nil {
			o.env.Close()
			return nil, err
		}
	}
	return o.env, nil
}

// opener is one call of Open: what it opens goes into env.
type opener struct {
	env   *Env
	ctx   context.Context
	name  string
	cfg   *config.Common
	what  What
	log   *slog.Logger
	retry bool
}

// try calls fn once, or with Retry.
func (o *opener) try(desc string, fn func(context.Context) error) error {
	if o.retry {
		return Retry(o.ctx, o.log, desc, fn)
	}
	return fn(o.ctx)
}

// dataPlane opens the data-plane stores, one per shard (each its own pool,
// drop slots and lock budget), and, unless read-only, gives each database
// this pipeline's tables. Every shard must be reachable at start; later, a
// shard that is down delays only the tenants on it.
func (o *opener) dataPlane() error {
	shards, err := o.cfg.DataPlane.Shards()
	if err != nil {
		return err
	}
	o.env.CatalogShard, o.env.DefaultShard = o.cfg.CatalogShard(), o.cfg.DefaultShard()
	for _, sh := range shards {
		if err := o.openShard(sh, len(shards) > 1); err != nil {
			return err
		}
	}
	return nil
}

// openShard opens the store of one shard into env.
func (o *opener) openShard(sh config.Shard, sharded bool) error {
	pcfg, err := dataPlanePool(o.cfg, sh.URL, o.name)
	if err != nil {
		if sharded {
			return fmt.Errorf("shard %s: %w", sh.Name, err)
		}
		return err
	}
	pcfg.ConnConfig.Tracer = queryTracer(o.ctx)
	desc := "connect to the data plane"
	if sharded {
		desc += " (shard " + sh.Name + ")"
	}
	return o.try(desc, func(ctx context.Context) error {
		data, err := dataplane.Open(ctx, pcfg, dataplane.Options{DropSlots: o.what.DropSlots, LockTimeout: o.what.LockTimeout,
			Shard: sh.Name, NotCatalog: !sh.Catalog})
		if err != nil {
			return err
		}
		if sh.Catalog {
			o.env.Data = data
		} else {
			if o.env.Shards == nil {
				o.env.Shards = map[string]*dataplane.Store{}
			}
			o.env.Shards[sh.Name] = data
		}
		o.env.closers = append(o.env.closers, data.Close)
		if o.what.ReadOnly {
			return nil
		}
		guarded, err := data.Ensure(ctx, true)
		if err == nil && !guarded {
			o.log.Info("the sql_drop event trigger net is not installed (the data-plane role is not a superuser); "+
				"every drop is still checked against its own locks", "shard", sh.Name)
		}
		return err
	})
}

// controlPlane opens the control-plane store (through the bastion when one
// is configured) and checks it: a ping when read-only, else its tables.
func (o *opener) controlPlane() error {
	dial, closeDial, err := ControlPlaneDialer(o.cfg, o.log)
	if err != nil {
		return err
	}
	o.env.closers = append(o.env.closers, closeDial)
	store, err := controlplane.Open(o.ctx, o.cfg.ControlPlaneDSN(), "tenant-cleanup-"+o.name, o.cfg.DBMaxConns, dial)
	if err != nil {
		return err
	}
	o.env.Control = store
	o.env.closers = append(o.env.closers, store.Close)
	check := store.Ensure
	if o.what.ReadOnly {
		check = store.Ping
	}
	return o.try("connect to the control plane", check)
}

// bus connects to JetStream.
func (o *opener) bus() error {
	return o.try("connect to JetStream", func(ctx context.Context) (err error) {
		n := o.cfg.NATS
		o.env.Bus, err = bus.Connect(ctx, n.NATSURL, bus.Options{Name: o.name, Replicas: n.NATSReplicas, Log: o.log,
			Creds: n.NATSCreds, NkeySeed: n.NATSNkeySeed})
		if err == nil {
			o.env.closers = append(o.env.closers, o.env.Bus.Close)
		}
		return err
	})
}

// dataPlanePool is the pool configuration of DATA_PLANE_DATABASE_URL for
// the service name.
func dataPlanePool(cfg *config.Common, url, name string) (*pgxpool.Config, error) {
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, errors.New("DATA_PLANE_DATABASE_URL is not a valid connection string (not shown: it may hold a password)")
	}
	pcfg.MaxConns = cfg.DBMaxConns
	pcfg.ConnConfig.RuntimeParams["application_name"] = ApplicationName(name)
	return pcfg, nil
}

// ApplicationName is the application_name of this replica's data-plane
// sessions: tenant-cleanup-<service>-<8 hex digits of its Identity>, unique
// per replica, so that the pacer tells this replica's drops from the
// others' (pacer.SamplerOptions.OwnApplicationName).
func ApplicationName(service string) string {
	sum := sha256.Sum256([]byte(Identity(service)))
	return "tenant-cleanup-" + service + "-" + hex.EncodeToString(sum[:4])
}

// OpenOtherStores opens the S3 file store and Redis, those configured, into
// env. It does not reach them: a store that is down makes cleanups wait
// ("later") and /readyz fail, not the service's start.
func (e *Env) OpenOtherStores(ctx context.Context, cfg *config.OtherStores) error {
	if cfg.FileStore.Enabled() {
		files, err := filestore.Open(ctx, cfg.FileStore.Config)
		if err != nil {
			return err
		}
		e.Files = files
	}
	if cfg.Redis.Enabled() {
		keys, err := rediskeys.Open(ctx, cfg.Redis.Config)
		if err != nil {
			return err
		}
		e.Keys = keys
		e.closers = append(e.closers, func() { keys.Close() })
	}
	return nil
}
