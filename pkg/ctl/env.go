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
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
)

// The configuration each command reads: only what it needs, so that, say,
// tenantctl hold runs without a database URL. Usage prints exactly these.
type (
	// natsSpec: dead, watch.
	natsSpec struct {
		config.NATS
	}
	// lookupSpec: cleanup and status. The control plane and the data plane
	// are read only when they are configured: cleanup looks each tenant up
	// first (one whose schema is gone is completed only once you confirm
	// it), status TENANT_ID in a sharded fleet shows where it lives.
	lookupSpec struct {
		config.NATS
		config.ControlPlane
		config.Bastion
		config.OptionalDataPlane
	}
	// controlSpec: ledger, hold, unhold.
	controlSpec struct {
		config.ControlPlane
		config.Bastion
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

// Validate checks NATS, the bastion and the shard variables (as the
// services do); the control plane and the data plane are optional.
func (s *lookupSpec) Validate() error {
	return errors.Join(s.NATS.Validate(), s.Bastion.Validate(), s.OptionalDataPlane.Validate())
}

// Validate checks the control plane and the bastion.
func (s *controlSpec) Validate() error {
	return errors.Join(s.ControlPlane.Validate(), s.Bastion.Validate())
}

// Validate checks both planes, the bastion, NATS and the configured stores.
func (s *verifySpec) Validate() error {
	return errors.Join(s.DataPlane.Validate(), s.ControlPlane.Validate(), s.Bastion.Validate(), s.NATS.Validate(),
		s.OtherStores.Validate())
}

// Validate checks both planes and the bastion.
func (s *analysisSpec) Validate() error {
	return errors.Join(s.DataPlane.Validate(), s.ControlPlane.Validate(), s.Bastion.Validate())
}

// connect loads spec from the environment and connects to the JetStream
// of n (spec's NATS); on failure it returns nil and the exit status.
func (c *CLI) connect(ctx context.Context, cmd *cobra.Command, spec interface{ Validate() error }, n *config.NATS) (*bus.Bus, int) {
	if !c.loadEnv(cmd, spec) {
		return nil, exitUsage
	}
	b, err := connectBus(ctx, *n)
	if err != nil {
		return nil, c.fail(ctx, err)
	}
	return b, exitOK
}

// controlPlane loads controlSpec from the environment and opens the control
// plane; on failure it returns nil and the exit status, else the store and
// the function that closes it.
func (c *CLI) controlPlane(ctx context.Context, cmd *cobra.Command) (*controlplane.Store, func(), int) {
	var spec controlSpec
	if !c.loadEnv(cmd, &spec) {
		return nil, nil, exitUsage
	}
	control, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
	if err != nil {
		return nil, nil, c.fail(ctx, err)
	}
	return control, closeControl, exitOK
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
