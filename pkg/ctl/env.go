package ctl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

// The configuration each command reads: only what it needs, so that, say,
// tenantctl hold runs without a database URL. Usage prints exactly these.
type (
	// natsSpec: dead, watch.
	natsSpec struct {
		config.NATS
	}
	// cleanupSpec: cleanup (the data plane and the control plane only when
	// they are configured).
	cleanupSpec struct {
		config.NATS
		config.ControlPlane
		config.Bastion
		DataPlaneURL string `envconfig:"DATA_PLANE_DATABASE_URL" secret:"postgres" desc:"when set, each tenant is looked up first: one whose schema is gone is completed only once you confirm it"`
		// A sharded fleet's other shards: a schema on any shard is not gone.
		ShardsJSON       string `envconfig:"ONYX_DB_SHARDS" secret:"shards" desc:"the other shards, as the services read them: a tenant is looked up on every shard"`
		DefaultShardName string `envconfig:"ONYX_DB_DEFAULT_SHARD" desc:"as the services read it"`
		CatalogShardName string `envconfig:"ONYX_DB_CATALOG_SHARD" desc:"as the services read it"`
	}
	// controlSpec: ledger.
	controlSpec struct {
		config.ControlPlane
		config.Bastion
	}
	// statusSpec: status (the control plane only when it is configured).
	statusSpec struct {
		config.NATS
		config.ControlPlane
		config.Bastion
		// The data plane, read only in a sharded fleet (ONYX_DB_SHARDS set):
		// status TENANT_ID then shows where the tenant lives.
		DataPlaneURL     string `envconfig:"DATA_PLANE_DATABASE_URL" secret:"postgres" desc:"with ONYX_DB_SHARDS: status TENANT_ID shows its shard"`
		ShardsJSON       string `envconfig:"ONYX_DB_SHARDS" secret:"shards" desc:"the other shards, as the services read them"`
		DefaultShardName string `envconfig:"ONYX_DB_DEFAULT_SHARD" desc:"as the services read it"`
		CatalogShardName string `envconfig:"ONYX_DB_CATALOG_SHARD" desc:"as the services read it"`
	}
	// analysisSpec: report.
	analysisSpec struct {
		config.DataPlane
		config.ControlPlane
		config.Bastion
		config.Inactivity
		DBMaxConns int32 `envconfig:"DB_MAX_CONNS" default:"4" range:"1..1000" desc:"connections per database (tenant schemas read at once)"`
	}
	// verifySpec: verify (NATS only with --repair; the other stores when
	// configured).
	verifySpec struct {
		config.DataPlane
		config.ControlPlane
		config.Bastion
		config.NATS
		config.OtherStores
	}
)

var discard = slog.New(slog.DiscardHandler)

// loadEnv fills spec from the environment and validates it with the
// services' own checks (config.Load: the bounds of its variables, then
// spec.Validate, made of pkg/config's parts).
func (c *CLI) loadEnv(cmd *cobra.Command, spec interface{ Validate() error }) bool {
	if err := config.Load(spec); err != nil {
		c.errorf("%v\n(%s --help lists the variables it reads)", err, cmd.CommandPath())
		return false
	}
	return true
}

// Validate checks the NATS credentials.
func (s *natsSpec) Validate() error { return s.NATS.Validate() }

// Validate checks NATS and the bastion; the control plane is optional for
// cleanup (it is read only when configured).
func (s *cleanupSpec) Validate() error { return errors.Join(s.NATS.Validate(), s.Bastion.Validate()) }

// Validate checks the control plane and the bastion.
func (s *controlSpec) Validate() error {
	return errors.Join(s.ControlPlane.Validate(), s.Bastion.Validate())
}

// Validate checks NATS and the bastion; the control plane is optional for
// status (it reads the ledger only when one is configured).
func (s *statusSpec) Validate() error { return errors.Join(s.NATS.Validate(), s.Bastion.Validate()) }

// Validate checks both planes, the bastion, NATS and the configured stores.
func (s *verifySpec) Validate() error {
	return errors.Join(s.DataPlane.Validate(), s.ControlPlane.Validate(), s.Bastion.Validate(), s.NATS.Validate(),
		s.OtherStores.Validate())
}

// Validate checks both planes and the bastion.
func (s *analysisSpec) Validate() error {
	return errors.Join(s.DataPlane.Validate(), s.ControlPlane.Validate(), s.Bastion.Validate())
}

// connectBus connects to JetStream as tenantctl, leaving the streams the
// services set up as they are.
func connectBus(ctx context.Context, n config.NATS) (*bus.Bus, error) {
	b, err := bus.Connect(ctx, n.NATSURL, bus.Options{Name: "tenantctl", Replicas: n.NATSReplicas, NoUpdate: true, Log: discard,
		Creds: n.NATSCreds, NkeySeed: n.NATSNkeySeed})
	if err != nil {
		return nil, fmt.Errorf("%w\n(check NATS_URL: a nats-server %s or newer with JetStream must be listening there)",
			err, bus.MinServerVersion)
	}
	return b, nil
}

// openControl opens the control plane the way the services do: through the
// SSH bastion when BASTION_HOST is set, never directly then. It reads only;
// it does not create the ledger.
func openControl(ctx context.Context, cp config.ControlPlane, b config.Bastion) (*controlplane.Store, func(), error) {
	common := &config.Common{ControlPlane: cp, Bastion: b}
	dial, closeDial, err := service.ControlPlaneDialer(common, discard)
	if err != nil {
		return nil, nil, fmt.Errorf("control plane: %w\n(check BASTION_HOST, BASTION_PORT, BASTION_USER, PEM_FILE_LOCATION, BASTION_KNOWN_HOSTS)", err)
	}
	store, err := controlplane.Open(ctx, common.ControlPlaneDSN(), "tenant-cleanup-tenantctl", 2, dial)
	if err == nil {
		err = store.Ping(ctx)
		if err != nil {
			store.Close()
			err = fmt.Errorf("control plane: %w", err)
		}
	}
	if err != nil {
		closeDial()
		return nil, nil, fmt.Errorf("%w\n(check CONTROL_PLANE_DATABASE_URL or CONTROL_PLANE_RDS_*, and BASTION_* when the control plane is behind the bastion)", err)
	}
	return store, func() { store.Close(); closeDial() }, nil
}

// openData opens the data plane with service.Open, as the services do.
func openData(ctx context.Context, d config.DataPlane, maxConns int32) (*dataplane.Store, func(), error) {
	env, err := service.Open(ctx, "tenantctl", &config.Common{DataPlane: d, DBMaxConns: max(maxConns, 1)},
		service.What{Data: true, ReadOnly: true}, discard, false)
	if err != nil {
		return nil, nil, fmt.Errorf("%w\n(check DATA_PLANE_DATABASE_URL)", err)
	}
	return env.Data, env.Close, nil
}

// dataPlane is the data plane cleanup looks tenants up on.
func (s *cleanupSpec) dataPlane() config.DataPlane {
	return config.DataPlane{DataPlaneURL: s.DataPlaneURL, ShardsJSON: s.ShardsJSON, DefaultShardName: s.DefaultShardName,
		CatalogShardName: s.CatalogShardName}
}

// dataPlane is the data plane status reads in a sharded fleet.
func (s *statusSpec) dataPlane() config.DataPlane {
	return config.DataPlane{DataPlaneURL: s.DataPlaneURL, ShardsJSON: s.ShardsJSON, DefaultShardName: s.DefaultShardName,
		CatalogShardName: s.CatalogShardName}
}

// openShards opens the data plane's shards (the catalog's store in Data,
// the others in Shards) read-only, as the services do.
func openShards(ctx context.Context, d config.DataPlane, maxConns int32) (*service.Env, error) {
	env, err := service.Open(ctx, "tenantctl", &config.Common{DataPlane: d, DBMaxConns: max(maxConns, 1)},
		service.What{Data: true, ReadOnly: true}, discard, false)
	if err != nil {
		return nil, fmt.Errorf("%w\n(check DATA_PLANE_DATABASE_URL and ONYX_DB_SHARDS)", err)
	}
	return env, nil
}

// fail reports err and returns exitFailed, or exitInterrupted when the
// command was interrupted.
func (c *CLI) fail(ctx context.Context, err error) int {
	if ctx.Err() != nil {
		c.errorf("interrupted")
		return exitInterrupted
	}
	c.errorf("%v", err)
	return exitFailed
}
