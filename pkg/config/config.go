// Package config reads each service's configuration from the environment
// with envconfig, validates it, and prints it for -h with secrets redacted.
// The variables and defaults are the ones in CONTRACT.md, plus the documented
// additions in the README.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// DataPlane locates the data-plane database (the catalog shard holding public).
type DataPlane struct {
	DataPlaneURL string `envconfig:"DATA_PLANE_DATABASE_URL" required:"true" secret:"url" desc:"data-plane Postgres (the catalog shard holding public)"`
	ShardName    string `envconfig:"DATA_PLANE_SHARD_NAME" desc:"when set, tenants whose public.tenant_shard row names another shard are refused"`
}

// ControlPlane locates the control-plane database, directly or through the bastion.
type ControlPlane struct {
	ControlPlaneURL string `envconfig:"CONTROL_PLANE_DATABASE_URL" secret:"url" desc:"control-plane Postgres; built from CONTROL_PLANE_RDS_* when empty"`
	RDSHost         string `envconfig:"CONTROL_PLANE_RDS_HOST" desc:"control-plane host (as seen from the bastion when BASTION_HOST is set)"`
	RDSPassword     string `envconfig:"CONTROL_PLANE_RDS_PASSWORD" secret:"true" desc:"control-plane password"`
	RDSPort         int    `envconfig:"CONTROL_PLANE_RDS_PORT" default:"5432" desc:"control-plane port"`
	RDSUser         string `envconfig:"CONTROL_PLANE_RDS_USER" default:"postgres" desc:"control-plane user"`
	RDSDB           string `envconfig:"CONTROL_PLANE_RDS_DB" default:"control" desc:"control-plane database name"`
}

// Bastion configures the SSH bastion the control plane is reached through.
type Bastion struct {
	BastionHost       string `envconfig:"BASTION_HOST" desc:"when set, control-plane connections go through this SSH bastion"`
	PEMFile           string `envconfig:"PEM_FILE_LOCATION" desc:"private key for the bastion (ed25519, RSA or ECDSA)"`
	BastionPort       int    `envconfig:"BASTION_PORT" default:"22" desc:"bastion SSH port"`
	BastionUser       string `envconfig:"BASTION_USER" default:"ec2-user" desc:"bastion SSH user"`
	BastionKnownHosts string `envconfig:"BASTION_KNOWN_HOSTS" default:"~/.ssh/known_hosts" desc:"known_hosts file; the bastion's host key is always verified (the file is re-read on every connection attempt)"`
	BastionPassphrase string `envconfig:"BASTION_KEY_PASSPHRASE" secret:"true" desc:"passphrase of an encrypted PEM_FILE_LOCATION key"`
}

// NATS locates the JetStream server.
type NATS struct {
	NATSURL      string `envconfig:"NATS_URL" default:"nats://127.0.0.1:4222" secret:"url" desc:"JetStream server (2.12 or newer); several URLs comma-separated for a cluster"`
	NATSReplicas int    `envconfig:"NATS_REPLICAS" default:"1" desc:"replicas of the streams and KV buckets (3 on a three-node cluster)"`
}

// Common is what every service reads.
type Common struct {
	DataPlane
	ControlPlane
	Bastion
	NATS
	InactiveDays int    `envconfig:"INACTIVE_DAYS" default:"90" desc:"the inactivity window, in days"`
	DBMaxConns   int32  `envconfig:"DB_MAX_CONNS" default:"6" desc:"connections per database per replica"`
	LogLevel     string `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
}

// Consumer tunes how a service consumes its work.
type Consumer struct {
	AckWait     time.Duration `envconfig:"NATS_ACK_WAIT" default:"60s" desc:"redelivery of a message whose consumer died (progress is reported while working)"`
	MaxFailures int           `envconfig:"DEAD_LETTER_AFTER" default:"5" desc:"failures after which a message moves to the dead-letter stream"`
}

// Level is LOG_LEVEL.
func (c *Common) Level() string { return c.LogLevel }

// Drain configures the drain checks.
type Drain struct {
	CheckDelay      time.Duration `envconfig:"DRAIN_CHECK_DELAY" default:"10m" desc:"first drain check after marking"`
	CheckMaxDelay   time.Duration `envconfig:"DRAIN_CHECK_MAX_DELAY" default:"6h" desc:"cap of the backoff between drain checks"`
	Timeout         time.Duration `envconfig:"DRAIN_TIMEOUT" default:"168h" desc:"give up and report the tenant stuck"`
	MaxLeftoverDocs int64         `envconfig:"DRAIN_MAX_LEFTOVER_DOCS" default:"5" desc:"documents tolerated in a drained tenant"`
}

// Analyzer is the analyzer's configuration.
type Analyzer struct {
	Common
	HTTPAddr  string        `envconfig:"HTTP_ADDR" default:":9090" desc:"serves /metrics, /healthz and /readyz (empty: off; --once serves nothing)"`
	Interval  time.Duration `envconfig:"ANALYZER_INTERVAL" default:"24h" desc:"time between analysis passes"`
	ReportDir string        `envconfig:"ANALYZER_REPORT_DIR" default:"." desc:"directory the candidate CSV report is written to"`
}

// Marker is the marker's configuration.
type Marker struct {
	Common
	Drain
	Consumer
	HTTPAddr    string `envconfig:"HTTP_ADDR" default:":9091" desc:"serves /metrics, /healthz and /readyz (empty: off)"`
	Concurrency int    `envconfig:"MARKER_CONCURRENCY" default:"2" desc:"tenants marked at once by one replica"`
}

// Cleaner is the cleaner's configuration.
type Cleaner struct {
	Common
	Drain
	Consumer
	HTTPAddr       string        `envconfig:"HTTP_ADDR" default:":9092" desc:"serves /metrics, /healthz and /readyz (empty: off)"`
	Concurrency    int           `envconfig:"CLEANER_CONCURRENCY" default:"4" desc:"tenants checked or cleaned at once by one replica"`
	DDLLockTimeout time.Duration `envconfig:"DDL_LOCK_TIMEOUT" default:"2s" desc:"lock_timeout for DROP; on timeout the tenant is retried soon"`
	DropSlots      int           `envconfig:"DROP_CONCURRENCY" default:"2" desc:"drop transactions at once across all replicas (bounds the locks they hold)"`
	MaxPerHour     int           `envconfig:"CLEANUP_MAX_PER_HOUR" default:"5000" desc:"tenants cleaned per hour across all replicas (0: no cap)"`
	MaxPerDay      int           `envconfig:"CLEANUP_MAX_PER_DAY" default:"50000" desc:"tenants cleaned per day across all replicas (0: no cap)"`
	BreakerWindow  int           `envconfig:"BREAKER_WINDOW" default:"20" desc:"recent cleanups the circuit breaker looks at"`
	BreakerMin     int           `envconfig:"BREAKER_MIN_FAILURES" default:"5" desc:"failures in the window that can open the breaker"`
	BreakerRate    float64       `envconfig:"BREAKER_FAILURE_RATE" default:"0.5" desc:"failure rate in the window that opens the breaker"`
	BreakerPause   time.Duration `envconfig:"BREAKER_COOLDOWN" default:"5m" desc:"how long an open breaker pauses this replica's cleaning"`
}

// Load fills spec (a pointer to one of the structs above) from the
// environment and validates it.
func Load(spec any) error {
	if err := envconfig.Process("", spec); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if v, ok := spec.(interface{ validate() error }); ok {
		if err := v.validate(); err != nil {
			return fmt.Errorf("configuration: %w", err)
		}
	}
	return nil
}

func (c *Common) validate() error {
	var errs []error
	if c.DataPlaneURL == "" {
		errs = append(errs, errors.New("DATA_PLANE_DATABASE_URL is empty: set it to the data-plane Postgres URL"))
	}
	if c.InactiveDays < 1 {
		errs = append(errs, fmt.Errorf("INACTIVE_DAYS must be at least 1, got %d", c.InactiveDays))
	}
	if c.DBMaxConns < 1 {
		errs = append(errs, fmt.Errorf("DB_MAX_CONNS must be at least 1, got %d", c.DBMaxConns))
	}
	if c.NATSReplicas != 1 && c.NATSReplicas != 3 && c.NATSReplicas != 5 {
		errs = append(errs, fmt.Errorf("NATS_REPLICAS must be 1, 3 or 5, got %d", c.NATSReplicas))
	}
	if c.ControlPlaneURL == "" && c.RDSHost == "" {
		errs = append(errs, errors.New("set CONTROL_PLANE_DATABASE_URL, or CONTROL_PLANE_RDS_HOST and CONTROL_PLANE_RDS_PASSWORD"))
	}
	if c.BastionHost != "" && c.PEMFile == "" {
		errs = append(errs, errors.New("BASTION_HOST is set but PEM_FILE_LOCATION is not"))
	}
	return errors.Join(errs...)
}

func (d *Drain) validate() error {
	var errs []error
	if d.CheckDelay < 0 {
		errs = append(errs, errors.New("DRAIN_CHECK_DELAY must not be negative"))
	}
	if d.CheckMaxDelay < time.Second {
		errs = append(errs, errors.New("DRAIN_CHECK_MAX_DELAY must be at least 1s"))
	}
	if d.Timeout <= 0 {
		errs = append(errs, errors.New("DRAIN_TIMEOUT must be positive"))
	}
	if d.MaxLeftoverDocs < 0 {
		errs = append(errs, errors.New("DRAIN_MAX_LEFTOVER_DOCS must not be negative"))
	}
	return errors.Join(errs...)
}

func (a *Analyzer) validate() error {
	err := a.Common.validate()
	if a.Interval < time.Minute {
		err = errors.Join(err, errors.New("ANALYZER_INTERVAL must be at least 1m"))
	}
	return err
}

func (c *Consumer) validate() error {
	var errs []error
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("NATS_ACK_WAIT must be at least 1s"))
	}
	if c.MaxFailures < 1 {
		errs = append(errs, errors.New("DEAD_LETTER_AFTER must be at least 1"))
	}
	return errors.Join(errs...)
}

// concurrency checks a service's concurrency against its pools: each
// tenant in flight holds one connection of each database.
func (c *Common) concurrency(name string, n int) error {
	switch {
	case n < 1:
		return fmt.Errorf("%s must be at least 1", name)
	case int(c.DBMaxConns) < n+1:
		return fmt.Errorf("DB_MAX_CONNS (%d) must be at least %s + 1 (%d): each tenant in flight holds a connection",
			c.DBMaxConns, name, n+1)
	}
	return nil
}

func (m *Marker) validate() error {
	return errors.Join(m.Common.validate(), m.Drain.validate(), m.Consumer.validate(),
		m.Common.concurrency("MARKER_CONCURRENCY", m.Concurrency))
}

func (c *Cleaner) validate() error {
	err := errors.Join(c.Common.validate(), c.Drain.validate(), c.Consumer.validate(),
		c.Common.concurrency("CLEANER_CONCURRENCY", c.Concurrency))
	if c.DDLLockTimeout < 10*time.Millisecond {
		err = errors.Join(err, errors.New("DDL_LOCK_TIMEOUT must be at least 10ms"))
	}
	if c.DropSlots < 1 {
		err = errors.Join(err, errors.New("DROP_CONCURRENCY must be at least 1"))
	}
	if c.MaxPerHour < 0 || c.MaxPerDay < 0 {
		err = errors.Join(err, errors.New("CLEANUP_MAX_PER_HOUR and CLEANUP_MAX_PER_DAY must not be negative"))
	}
	if c.BreakerWindow < 1 || c.BreakerMin < 1 || c.BreakerRate <= 0 || c.BreakerRate > 1 || c.BreakerPause <= 0 {
		err = errors.Join(err, errors.New("BREAKER_WINDOW and BREAKER_MIN_FAILURES must be at least 1, "+
			"BREAKER_FAILURE_RATE in (0, 1], BREAKER_COOLDOWN positive"))
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
