// Package rediskeys removes a tenant's state from Onyx's Redis: its keys
// TENANT_ID:* in database REDIS_DB_NUMBER, found with SCAN (never KEYS, which
// blocks the server) and removed with UNLINK in batches, and its membership
// in the set cloud:gated_tenants and the sorted set cloud:active_tenants.
//
// Only keys that start with exactly "TENANT_ID:" are removed. Tenant ids
// are validated (tenant.ParseID) and hold no glob metacharacters, but the
// SCAN pattern escapes *?[]\ anyway, and every key SCAN returns is checked
// for the exact prefix before UNLINK: tenant_i-abc2's keys are never
// touched when cleaning tenant_i-abc.
//
// Every failure to reach Redis (refused or reset connections, timeouts, a
// server loading its data or failing over) comes back as
// tenant.ErrUnavailable, so that the caller retries and never counts the
// tenant as cleaned; an answer that waiting will not change (a wrong
// password, a certificate that does not verify) comes back as a plain error
// that says what to fix. Redis Cluster is not supported: one server (or a
// primary behind one address), as Onyx uses it.
package rediskeys

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// The sets that hold tenant ids as members, in Onyx's cloud deployment.
const (
	GatedTenants  = "cloud:gated_tenants"  // a set
	ActiveTenants = "cloud:active_tenants" // a sorted set
)

const (
	// ScanCount is the COUNT hint of each SCAN.
	ScanCount = 1000
	// BatchSize is the number of keys per UNLINK.
	BatchSize = 500
	// maxPasses bounds the SCAN passes of one RemoveTenant: the second
	// pass normally finds nothing and is the check that nothing is left;
	// keys still found by the last one are being written by someone.
	maxPasses = 3
)

// Store removes tenants' keys from one Redis database. It is safe for
// concurrent use.
type Store struct {
	client  *redis.Client
	cfg     Config
	timeout time.Duration

	// afterBatch, when set (tests), runs after each UNLINK.
	afterBatch func(batch int)
}

// Removed is what RemoveTenant did, for the ledger.
type Removed struct {
	// Keys counts the keys UNLINK removed.
	Keys int64
	// Memberships counts the tenant's removals from cloud:gated_tenants
	// and cloud:active_tenants (0 to 2).
	Memberships int64
}

// Open returns a Store for cfg. It checks the configuration but does not
// reach Redis (Ping does), so a service can start while Redis is down.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	client := redis.NewClient(&redis.Options{
		Addr:                  cfg.Addr(),
		Password:              cfg.Password,
		DB:                    cfg.DB,
		TLSConfig:             tlsCfg,
		Protocol:              2, // as Onyx's redis-py speaks it; works with every server version
		DisableIdentity:       true,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            2,
		PoolSize:              4,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	})
	return &Store{client: client, cfg: cfg, timeout: timeout}, nil
}

// Close closes the connections.
func (s *Store) Close() error { return s.client.Close() }

// Ping checks that Redis answers, with this password, in this database.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.kind(ctx, "ping", s.client.Ping(ctx).Err())
}

// RemoveTenant removes the tenant from cloud:gated_tenants and
// cloud:active_tenants (first, so that nothing schedules work that writes
// its keys again), then UNLINKs its keys, BatchSize at a time, SCAN pass
// after SCAN pass until a pass finds none: that pass is the check that
// nothing is left. Keys that keep appearing make a "later" error.
//
// Running it again is harmless: a tenant with nothing left is a no-op. On
// error, the Removed returned counts what was removed before it.
func (s *Store) RemoveTenant(ctx context.Context, id tenant.ID) (Removed, error) {
	var r Removed
	prefix, err := keyPrefix(id)
	if err != nil {
		return r, err
	}
	if r.Memberships, err = s.removeMemberships(ctx, id); err != nil {
		return r, fmt.Errorf("remove %s from Redis: %w", id, err)
	}
	for pass := 1; ; pass++ {
		found, err := s.removeKeys(ctx, prefix, &r)
		if err != nil {
			return r, fmt.Errorf("remove %s from Redis: %w", id, err)
		}
		if found == 0 {
			return r, nil
		}
		if pass == maxPasses {
			return r, tenant.Later(time.Minute, fmt.Sprintf(
				"%s's Redis keys keep appearing (%d found by pass %d): something still writes them", id, found, pass), nil)
		}
	}
}

// Leftovers counts the tenant's keys and memberships left: 0 once it is
// clean of this store.
func (s *Store) Leftovers(ctx context.Context, id tenant.ID) (int64, error) {
	prefix, err := keyPrefix(id)
	if err != nil {
		return 0, err
	}
	keys := map[string]struct{}{} // SCAN may return a key twice
	err = s.scan(ctx, prefix, func(page []string) error {
		for _, k := range page {
			keys[k] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count %s's Redis keys: %w", id, err)
	}
	n := int64(len(keys))
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	gated, err := s.client.SIsMember(cctx, GatedTenants, string(id)).Result()
	if err != nil {
		return n, fmt.Errorf("count %s's Redis memberships: %w", id, s.kind(cctx, "sismember "+GatedTenants, err))
	}
	_, err = s.client.ZScore(cctx, ActiveTenants, string(id)).Result()
	active := err == nil
	if err != nil && !errors.Is(err, redis.Nil) {
		return n, fmt.Errorf("count %s's Redis memberships: %w", id, s.kind(cctx, "zscore "+ActiveTenants, err))
	}
	if gated {
		n++
	}
	if active {
		n++
	}
	return n, nil
}

// keyPrefix is "TENANT_ID:", for a valid id only: an ID made without
// tenant.ParseID (the zero ID, say) would give a prefix that is not one
// tenant's (":" matches keys of no tenant; worse could).
func keyPrefix(id tenant.ID) (string, error) {
	if _, err := tenant.ParseID(string(id)); err != nil {
		return "", fmt.Errorf("redis: %w", err)
	}
	return string(id) + ":", nil
}

func (s *Store) removeMemberships(ctx context.Context, id tenant.ID) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	gated, err := s.client.SRem(ctx, GatedTenants, string(id)).Result()
	if err != nil {
		return 0, s.kind(ctx, "srem "+GatedTenants, err)
	}
	active, err := s.client.ZRem(ctx, ActiveTenants, string(id)).Result()
	if err != nil {
		return gated, s.kind(ctx, "zrem "+ActiveTenants, err)
	}
	return gated + active, nil
}

// removeKeys makes one SCAN pass over the keys that start with prefix and
// UNLINKs them, BatchSize at a time, counting the removed ones in r. It
// returns how many keys the pass found.
func (s *Store) removeKeys(ctx context.Context, prefix string, r *Removed) (int64, error) {
	var found int64
	batch := make([]string, 0, BatchSize)
	batches := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		uctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		n, err := s.client.Unlink(uctx, batch...).Result()
		if err != nil {
			return s.kind(uctx, "unlink", err)
		}
		r.Keys += n
		batch = batch[:0]
		batches++
		if s.afterBatch != nil {
			s.afterBatch(batches)
		}
		return nil
	}
	err := s.scan(ctx, prefix, func(page []string) error {
		for _, k := range page {
			found++
			batch = append(batch, k)
			if len(batch) == BatchSize {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return found, err
	}
	return found, flush()
}

// scan runs one full SCAN over the keys matching prefix (escaped) and
// hands each page, with every key checked for the exact prefix, to f.
func (s *Store) scan(ctx context.Context, prefix string, f func(page []string) error) error {
	pattern := escapeGlob(prefix) + "*"
	var cursor uint64
	for {
		sctx, cancel := context.WithTimeout(ctx, s.timeout)
		keys, next, err := s.client.Scan(sctx, cursor, pattern, ScanCount).Result()
		if err != nil {
			err = s.kind(sctx, "scan", err)
			cancel()
			return err
		}
		cancel()
		page := keys[:0]
		for _, k := range keys {
			if strings.HasPrefix(k, prefix) {
				page = append(page, k)
			}
		}
		if err := f(page); err != nil {
			return err
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// escapeGlob escapes the characters Redis' glob-style patterns give a
// meaning to (outside brackets: * ? [ ] and the backslash itself), so that
// the pattern matches s literally.
func escapeGlob(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// kind turns a go-redis error into the domain's kind, with a message that
// says what to do about the ones waiting will not fix.
func (s *Store) kind(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("redis %s on %s db %d: %w", op, s.cfg.Addr(), s.cfg.DB, err)
	var (
		rerr        redis.Error
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		certErr     *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() == context.Canceled:
		return err // the caller gave up
	case errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &certErr):
		return fmt.Errorf("%w: the server's certificate does not verify: set REDIS_SSL_CA_CERTS to its CA (or REDIS_SSL_CERT_REQS=none)", err)
	case errors.As(err, &rerr):
		msg := rerr.Error()
		switch {
		case strings.HasPrefix(msg, "NOAUTH"), strings.HasPrefix(msg, "WRONGPASS"), strings.Contains(msg, "invalid password"):
			return fmt.Errorf("%w: check REDIS_PASSWORD", err)
		case strings.HasPrefix(msg, "WRONGTYPE"):
			return fmt.Errorf("%w: %s must be a set and %s a sorted set", err, GatedTenants, ActiveTenants)
		case strings.HasPrefix(msg, "ERR DB index is out of range"), strings.HasPrefix(msg, "ERR invalid DB index"):
			return fmt.Errorf("%w: check REDIS_DB_NUMBER", err)
		case strings.HasPrefix(msg, "LOADING"), strings.HasPrefix(msg, "BUSY"), strings.HasPrefix(msg, "MASTERDOWN"),
			strings.HasPrefix(msg, "TRYAGAIN"), strings.HasPrefix(msg, "READONLY"), strings.HasPrefix(msg, "CLUSTERDOWN"),
			strings.HasPrefix(msg, "ERR max number of clients"):
			return tenant.Unavailable(err)
		}
		return err
	}
	// No answer from Redis: connection refused or reset, a timeout, a
	// closed or exhausted pool.
	return tenant.Unavailable(err)
}
