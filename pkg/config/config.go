// Package config reads each service's configuration from the environment
// with envconfig, validates it, and prints it for -h with secrets redacted.
// The variables and defaults are the ones in CONTRACT.md, plus the documented
// additions in the README.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
)

// DataPlane locates the data-plane database (the catalog shard holding public).
type DataPlane struct {
	DataPlaneURL string `envconfig:"DATA_PLANE_DATABASE_URL" required:"true" secret:"postgres" desc:"data-plane Postgres (the catalog shard holding public)"`
	ShardLayout
}

// ShardLayout names the shards of a sharded fleet, as Onyx configures them
// (see DataPlane.Shards).
type ShardLayout struct {
	ShardName string `envconfig:"DATA_PLANE_SHARD_NAME" desc:"older name of ONYX_DB_DEFAULT_SHARD (one-shard setups): the shard DATA_PLANE_DATABASE_URL is; tenants placed on a shard that is not configured are refused"`
	// ShardsJSON, DefaultShardName and CatalogShardName are Onyx's own
	// variables.
	ShardsJSON       string `envconfig:"ONYX_DB_SHARDS" secret:"shards" desc:"other shards, as Onyx: JSON {\"<name>\": {\"host\", \"port\", \"db\", \"user\", \"password\"}} overriding the parts of DATA_PLANE_DATABASE_URL"`
	DefaultShardName string `envconfig:"ONYX_DB_DEFAULT_SHARD" desc:"(default: DATA_PLANE_SHARD_NAME, else default) name of the shard of DATA_PLANE_DATABASE_URL, where tenants without a public.tenant_shard row live"`
	CatalogShardName string `envconfig:"ONYX_DB_CATALOG_SHARD" desc:"the shard holding the public tables and public.tenant_shard (default: the default shard)"`
}

// OptionalDataPlane is the data plane of the tenantctl commands that read
// it only when it is configured (cleanup, status): DATA_PLANE_DATABASE_URL
// may be empty, and the shard variables are checked as the services check
// them all the same, so that a mistake in them is refused at start.
type OptionalDataPlane struct {
	DataPlaneURL string `envconfig:"DATA_PLANE_DATABASE_URL" secret:"postgres" desc:"when set, each tenant is looked up on the data plane, on every shard (see the command's help)"`
	ShardLayout
}

// ControlPlane locates the control-plane database, directly or through the bastion.
type ControlPlane struct {
	ControlPlaneURL string `envconfig:"CONTROL_PLANE_DATABASE_URL" secret:"postgres" desc:"control-plane Postgres; built from CONTROL_PLANE_RDS_* when empty"`
	RDSHost         string `envconfig:"CONTROL_PLANE_RDS_HOST" desc:"control-plane host (as seen from the bastion when BASTION_HOST is set)"`
	RDSPassword     string `envconfig:"CONTROL_PLANE_RDS_PASSWORD" secret:"true" desc:"control-plane password"`
	RDSPort         int    `envconfig:"CONTROL_PLANE_RDS_PORT" default:"5432" range:"1..65535" desc:"control-plane port"`
	RDSUser         string `envconfig:"CONTROL_PLANE_RDS_USER" default:"postgres" desc:"control-plane user"`
	RDSDB           string `envconfig:"CONTROL_PLANE_RDS_DB" default:"control" desc:"control-plane database name"`
}

// Bastion configures the SSH bastion the control plane is reached through.
type Bastion struct {
	BastionHost       string `envconfig:"BASTION_HOST" desc:"when set, control-plane connections go through this SSH bastion"`
	PEMFile           string `envconfig:"PEM_FILE_LOCATION" desc:"private key for the bastion (ed25519, RSA or ECDSA)"`
	BastionPort       int    `envconfig:"BASTION_PORT" default:"22" range:"1..65535" desc:"bastion SSH port"`
	BastionUser       string `envconfig:"BASTION_USER" default:"ec2-user" desc:"bastion SSH user"`
	BastionKnownHosts string `envconfig:"BASTION_KNOWN_HOSTS" default:"~/.ssh/known_hosts" desc:"known_hosts file; the bastion's host key is always verified (the file is re-read on every connection attempt)"`
	BastionPassphrase string `envconfig:"BASTION_KEY_PASSPHRASE" secret:"true" desc:"passphrase of an encrypted PEM_FILE_LOCATION key"`
}

// NATS locates the JetStream server and says how to authenticate to it.
type NATS struct {
	NATSURL      string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222" secret:"nats" desc:"JetStream server (2.12 or newer); several URLs comma-separated for a cluster; user:password@ or TOKEN@ in them is never shown"`
	NATSCreds    string `envconfig:"NATS_CREDS" desc:"path of a NATS credentials file (user JWT and nkey seed) to authenticate with"`
	NATSNkeySeed string `envconfig:"NATS_NKEY_SEED" desc:"path of a file holding an nkey user seed to authenticate with"`
	NATSReplicas int    `envconfig:"NATS_REPLICAS" default:"1" range:"1|3|5" desc:"replicas of the streams and KV buckets (3 on a three-node cluster)"`
}

// Inactivity is the inactivity window, read by the services and by
// tenantctl report.
type Inactivity struct {
	InactiveDays int `envconfig:"INACTIVE_DAYS" default:"90" range:"1..3650" unit:"days" desc:"the inactivity window, in days"`
}

// Common is what every service reads.
type Common struct {
	DataPlane
	ControlPlane
	Bastion
	NATS
	Inactivity
	DBMaxConns int32  `envconfig:"DB_MAX_CONNS" default:"6" range:"1..1000" desc:"connections per database per replica"`
	LogLevel   string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// Consumer tunes how a service consumes its work.
type Consumer struct {
	AckWait     time.Duration `envconfig:"NATS_ACK_WAIT" default:"60s" range:"1s..1h" desc:"redelivery of a message whose consumer died (progress is reported while working)"`
	MaxFailures int           `envconfig:"DEAD_LETTER_AFTER" default:"5" range:"1..100" desc:"failures after which a message moves to the dead-letter stream"`
}

// Level is LOG_LEVEL.
func (c *Common) Level() string { return c.LogLevel }

// Drain configures the drain checks.
type Drain struct {
	CheckDelay      time.Duration `envconfig:"DRAIN_CHECK_DELAY" default:"10m" range:"0s..24h" desc:"first drain check after marking"`
	CheckMaxDelay   time.Duration `envconfig:"DRAIN_CHECK_MAX_DELAY" default:"6h" range:"1s..24h" desc:"cap of the backoff between drain checks"`
	Timeout         time.Duration `envconfig:"DRAIN_TIMEOUT" default:"168h" range:"1s..8760h" desc:"give up and report the tenant stuck"`
	MaxLeftoverDocs int64         `envconfig:"DRAIN_MAX_LEFTOVER_DOCS" default:"5" range:"0..10000" desc:"documents tolerated in a drained tenant"`
}

// FileStore is Onyx's S3 file store (pkg/filestore): when configured, a
// tenant's objects are removed with it.
type FileStore struct{ filestore.Config }

// Redis is Onyx's Redis (pkg/rediskeys): when configured, a tenant's keys and
// memberships are removed with it.
type Redis struct{ rediskeys.Config }

// Pace is the load-aware pacing of drops (pkg/pacer).
type Pace struct{ pacer.Config }

// OtherStores are the stores besides the databases where a tenant lives.
type OtherStores struct {
	FileStore
	Redis
}

// Validate checks the stores that are configured (a store that is not is
// simply not cleaned).
func (o *OtherStores) Validate() error {
	var errs []error
	if o.FileStore.Enabled() {
		errs = append(errs, o.FileStore.Validate())
	}
	if o.Redis.Enabled() {
		errs = append(errs, o.Redis.Validate())
	}
	return errors.Join(errs...)
}

// Analyzer is the analyzer's configuration.
type Analyzer struct {
	Common
	HTTPAddr  string        `envconfig:"HTTP_ADDR" default:":9090" desc:"serves /metrics, /healthz and /readyz (empty: off; --once serves nothing)"`
	Interval  time.Duration `envconfig:"ANALYZER_INTERVAL" default:"24h" range:"1m..720h" desc:"time between analysis passes"`
	ReportDir string        `envconfig:"ANALYZER_REPORT_DIR" default:"." desc:"directory the candidate CSV report is written to"`
}

// Marker is the marker's configuration.
type Marker struct {
	Common
	Drain
	Consumer
	HTTPAddr    string `envconfig:"HTTP_ADDR" default:":9091" desc:"serves /metrics, /healthz and /readyz (empty: off)"`
	Concurrency int    `envconfig:"MARKER_CONCURRENCY" default:"2" range:"1..256" desc:"tenants marked at once by one replica"`
}

// Cleaner is the cleaner's configuration.
type Cleaner struct {
	Common
	Drain
	Consumer
	OtherStores
	Pace
	HTTPAddr       string        `envconfig:"HTTP_ADDR" default:":9092" desc:"serves /metrics, /healthz and /readyz (empty: off)"`
	Concurrency    int           `envconfig:"CLEANER_CONCURRENCY" default:"4" range:"1..256" desc:"tenants checked or cleaned at once by one replica"`
	DDLLockTimeout time.Duration `envconfig:"DDL_LOCK_TIMEOUT" default:"2s" range:"10ms..1m" desc:"lock_timeout for DROP; on timeout the tenant is retried soon"`
	DropSlots      int           `envconfig:"DROP_CONCURRENCY" default:"2" range:"1..64" desc:"drop transactions at once across all replicas (bounds the locks they hold)"`
	MaxPerHour     int           `envconfig:"CLEANUP_MAX_PER_HOUR" default:"5000" range:"0..1000000" desc:"tenants cleaned per hour across all replicas (0: no cap)"`
	MaxPerDay      int           `envconfig:"CLEANUP_MAX_PER_DAY" default:"50000" range:"0..10000000" desc:"tenants cleaned per day across all replicas (0: no cap)"`
	BreakerWindow  int           `envconfig:"BREAKER_WINDOW" default:"20" range:"1..1000" desc:"recent cleanups the circuit breaker looks at"`
	BreakerMin     int           `envconfig:"BREAKER_MIN_FAILURES" default:"5" range:"1..1000" desc:"failures in the window that can open the breaker (at most BREAKER_WINDOW)"`
	BreakerRate    float64       `envconfig:"BREAKER_FAILURE_RATE" default:"0.5" range:"0.01..1" desc:"failure rate in the window that opens the breaker"`
	BreakerPause   time.Duration `envconfig:"BREAKER_COOLDOWN" default:"5m" range:"1s..24h" desc:"how long an open breaker pauses this replica's cleaning"`
}

// Load fills spec (a pointer to one of the structs above) from the
// environment and validates it (Validate).
func Load(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return Validate(spec)
}

// Validate checks spec, however it was filled (Load, or Defaults and then
// fields set by hand): every numeric and duration variable within the
// bounds of its range tag (CheckBounds), then spec's own checks across
// variables (its Validate method, when it has one).
func Validate(spec any) error {
	err := CheckBounds(spec)
	if v, ok := spec.(interface{ Validate() error }); ok {
		err = errors.Join(err, v.Validate())
	}
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// Validate checks what every service needs: both planes, the bastion's key,
// the log level and the NATS credentials.
func (c *Common) Validate() error {
	var level slog.Level
	var errLevel error
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil && c.LogLevel != "" {
		errLevel = fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, got %q", c.LogLevel)
	}
	return errors.Join(c.DataPlane.Validate(), c.ControlPlane.Validate(), c.Bastion.Validate(), errLevel, c.NATS.Validate())
}

// Validate checks that the data plane is set.
func (d *DataPlane) Validate() error {
	if d.DataPlaneURL == "" {
		return errors.New("DATA_PLANE_DATABASE_URL is empty: set it to the data-plane Postgres URL")
	}
	_, err := d.Shards()
	return err
}

// Configured reports whether DATA_PLANE_DATABASE_URL is set.
func (o *OptionalDataPlane) Configured() bool { return o.DataPlaneURL != "" }

// DataPlane is the data plane o configures (DATA_PLANE_DATABASE_URL may be
// empty).
func (o *OptionalDataPlane) DataPlane() DataPlane {
	return DataPlane{DataPlaneURL: o.DataPlaneURL, ShardLayout: o.ShardLayout}
}

// Validate checks the shard variables as DataPlane.Validate does (their
// errors name the variable at fault), whether or not DATA_PLANE_DATABASE_URL
// is set.
func (o *OptionalDataPlane) Validate() error {
	d := o.DataPlane()
	_, err := d.Shards()
	return err
}

// Configured reports whether a control plane is set at all (a URL, or the
// RDS host to build one from).
func (c *ControlPlane) Configured() bool { return c.ControlPlaneURL != "" || c.RDSHost != "" }

// Validate checks that the control plane is set.
func (c *ControlPlane) Validate() error {
	if !c.Configured() {
		return errors.New("set CONTROL_PLANE_DATABASE_URL, or CONTROL_PLANE_RDS_HOST and CONTROL_PLANE_RDS_PASSWORD")
	}
	return nil
}

// Validate checks that a configured bastion has a key.
func (b *Bastion) Validate() error {
	if b.BastionHost != "" && b.PEMFile == "" {
		return errors.New("BASTION_HOST is set but PEM_FILE_LOCATION is not")
	}
	return nil
}

// Validate checks the NATS credentials: at most one way, and a file that
// can be read (its contents are read only by the NATS client, and never
// shown).
func (n *NATS) Validate() error {
	var errs []error
	if n.NATSCreds != "" && n.NATSNkeySeed != "" {
		errs = append(errs, errors.New("set NATS_CREDS or NATS_NKEY_SEED, not both (a credentials file holds its own nkey seed)"))
	}
	for _, f := range []struct{ name, path string }{{"NATS_CREDS", n.NATSCreds}, {"NATS_NKEY_SEED", n.NATSNkeySeed}} {
		if f.path == "" {
			continue
		}
		if err := readable(f.path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", f.name, err))
		}
	}
	return errors.Join(errs...)
}

// readable checks that path is a regular file this process can open.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	return nil
}

// Validate checks the analyzer's configuration.
func (a *Analyzer) Validate() error { return a.Common.Validate() }

// concurrency checks a service's concurrency against its pools: each
// tenant in flight holds one connection of each database.
func (c *Common) concurrency(name string, n int) error {
	if int(c.DBMaxConns) < n+1 {
		return fmt.Errorf("DB_MAX_CONNS (%d) must be at least %s + 1 (%d): each tenant in flight holds a connection",
			c.DBMaxConns, name, n+1)
	}
	return nil
}

// Validate checks the marker's configuration.
func (m *Marker) Validate() error {
	return errors.Join(m.Common.Validate(), m.Common.concurrency("MARKER_CONCURRENCY", m.Concurrency))
}

// Validate checks the cleaner's configuration.
func (c *Cleaner) Validate() error {
	err := errors.Join(c.Common.Validate(), c.OtherStores.Validate(), c.Pace.Config.Validate())
	if c.Pace.Mode == pacer.ModeOff {
		err = errors.Join(err, c.Common.concurrency("CLEANER_CONCURRENCY", c.Concurrency))
	} else if int(c.DBMaxConns) < c.Concurrency+2 {
		err = errors.Join(err, fmt.Errorf("DB_MAX_CONNS (%d) must be at least CLEANER_CONCURRENCY + 2 (%d) with PACE=%s: "+
			"each tenant in flight holds a connection, and the pacer samples the data plane through one of its own",
			c.DBMaxConns, c.Concurrency+2, c.Pace.Mode))
	}
	if c.BreakerMin > c.BreakerWindow {
		// The breaker could never open.
		err = errors.Join(err, fmt.Errorf("BREAKER_MIN_FAILURES (%d) must be at most BREAKER_WINDOW (%d)",
			c.BreakerMin, c.BreakerWindow))
	}
	return err
}

// ControlPlaneDSN returns CONTROL_PLANE_DATABASE_URL, or the URL built from
// the CONTROL_PLANE_RDS_* variables as the original scripts did.
func (c *ControlPlane) ControlPlaneDSN() string {
	if c.ControlPlaneURL != "" {
		return c.ControlPlaneURL
	}
	u := url.URL{
		Scheme: "postgres",
		User:   url.UserPassword(c.RDSUser, c.RDSPassword),
		Host:   net.JoinHostPort(c.RDSHost, strconv.Itoa(c.RDSPort)),
		Path:   "/" + c.RDSDB,
	}
	return u.String()
}
