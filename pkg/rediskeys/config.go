package rediskeys

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Config is the Redis store's configuration, read from Onyx's own
// variables (envconfig tags, as in pkg/config). The zero value is a store
// that is not configured (Enabled is false).
type Config struct {
	Host     string `envconfig:"REDIS_HOST" desc:"when set, cleaning a tenant removes its Redis keys TENANT_ID:* and its memberships in cloud:gated_tenants and cloud:active_tenants"`
	Port     int    `envconfig:"REDIS_PORT" default:"6379" range:"1..65535" desc:"Redis port"`
	Password string `envconfig:"REDIS_PASSWORD" secret:"true" desc:"Redis password (AUTH)"`
	DB       int    `envconfig:"REDIS_DB_NUMBER" default:"0" range:"0..100000" desc:"the Redis database holding the tenants' keys"`
	// SSL is read as Onyx reads it: "true" (any case) turns TLS on; empty
	// or "false" leaves it off; anything else is refused rather than
	// guessed at.
	SSL string `envconfig:"REDIS_SSL" desc:"true: connect with TLS"`
	// SSLCertReqs takes Onyx's values. Unlike Onyx, whose default is none,
	// the default verifies the server's certificate.
	SSLCertReqs string        `envconfig:"REDIS_SSL_CERT_REQS" default:"required" desc:"with REDIS_SSL: required or optional verify the server's certificate, none does not (Onyx's default; not ours)"`
	SSLCACerts  string        `envconfig:"REDIS_SSL_CA_CERTS" desc:"with REDIS_SSL: PEM file of the CAs to verify the server with (default: the system's)"`
	Timeout     time.Duration `envconfig:"REDIS_TIMEOUT" default:"10s" range:"100ms..5m" desc:"bound on each Redis command, retries included"`
}

// Enabled reports whether Redis is configured: REDIS_HOST is set.
func (c *Config) Enabled() bool { return c.Host != "" }

// Addr is host:port.
func (c *Config) Addr() string {
	port := c.Port
	if port == 0 {
		port = 6379
	}
	return net.JoinHostPort(c.Host, strconv.Itoa(port))
}

// TLS reports whether REDIS_SSL asks for TLS.
func (c *Config) TLS() bool { return strings.EqualFold(strings.TrimSpace(c.SSL), "true") }

// Validate checks what Open needs, with messages that say what to set.
func (c *Config) Validate() error {
	var errs []error
	if !c.Enabled() {
		errs = append(errs, errors.New("REDIS_HOST is not set: Redis is not configured"))
	}
	if s := strings.ToLower(strings.TrimSpace(c.SSL)); s != "" && s != "true" && s != "false" {
		errs = append(errs, fmt.Errorf("REDIS_SSL must be true or false, got %s (Onyx reads anything but true as false)", tenant.QuoteInput(c.SSL)))
	}
	switch strings.ToLower(c.SSLCertReqs) {
	case "", "required", "optional", "none":
	default:
		errs = append(errs, fmt.Errorf("REDIS_SSL_CERT_REQS must be required, optional or none, got %s", tenant.QuoteInput(c.SSLCertReqs)))
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("REDIS_DB_NUMBER must be 0 or more, got %d", c.DB))
	}
	return errors.Join(errs...)
}

// tlsConfig is the TLS configuration REDIS_SSL* ask for (nil without TLS).
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	if strings.EqualFold(c.SSLCertReqs, "none") {
		// The operator asked for it (REDIS_SSL_CERT_REQS=none), as Onyx allows.
		cfg.InsecureSkipVerify = true
	}
	if c.SSLCACerts != "" {
		pem, err := os.ReadFile(c.SSLCACerts)
		if err != nil {
			return nil, fmt.Errorf("REDIS_SSL_CA_CERTS: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("REDIS_SSL_CA_CERTS: no PEM certificate in %s", c.SSLCACerts)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
