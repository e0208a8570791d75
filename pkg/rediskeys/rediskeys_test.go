package rediskeys_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// The cleaned tenant, and paying tenants whose ids share a prefix with it.
const (
	cleaned = tenant.ID("tenant_i-abc")
	longer  = tenant.ID("tenant_i-abc2") // cleaned's id is a prefix of it
	shorter = tenant.ID("tenant_i-ab")   // a prefix of cleaned's id
)

// db is the database the tests' stores clean (REDIS_DB_NUMBER); keys in
// database 0 must survive.
const db = 3

// setup starts a redis-server and opens a store on database db.
func setup(t *testing.T, mods ...func(*rediskeys.Config)) (*testenv.Redis, *rediskeys.Store, *redis.Client) {
	t.Helper()
	srv := testenv.StartRedis(t)
	cfg := rediskeys.Config{Host: "127.0.0.1", Port: srv.Port, DB: db, Timeout: 5 * time.Second}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := rediskeys.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return srv, s, client(t, srv.Addr, db, nil)
}

// client is the test's own connection, for seeding and checking.
func client(t *testing.T, addr string, db int, tlsCfg *tls.Config) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db, TLSConfig: tlsCfg, Protocol: 2, MaxRetries: -1})
	t.Cleanup(func() { c.Close() })
	return c
}

// seed sets n string keys id:key-NNNNN.
func seed(t *testing.T, c *redis.Client, id tenant.ID, n int) {
	t.Helper()
	ctx := context.Background()
	for start := 0; start < n; start += 1000 {
		var kv []any
		for i := start; i < min(start+1000, n); i++ {
			kv = append(kv, fmt.Sprintf("%s:key-%05d", id, i), i)
		}
		if err := c.MSet(ctx, kv...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// keys lists every key of c's database, sorted (KEYS is fine in a test).
func keys(t *testing.T, c *redis.Client) []string {
	t.Helper()
	k, err := c.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(k)
	return k
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemoveTenantKeepsOtherTenants(t *testing.T) {
	t.Parallel()
	srv, s, c := setup(t)
	ctx := context.Background()
	mine := []string{"tenant_i-abc:a", "tenant_i-abc:h", "tenant_i-abc:s", "tenant_i-abc:z", "tenant_i-abc:l",
		"tenant_i-abc:", "tenant_i-abc:nested:x", "tenant_i-abc:*", "tenant_i-abc:[x]?\\"}
	for _, k := range []string{"tenant_i-abc:a", "tenant_i-abc:", "tenant_i-abc:nested:x", "tenant_i-abc:*", "tenant_i-abc:[x]?\\",
		"tenant_i-abc2:a", "tenant_i-abc2:tenant_i-abc:b", "tenant_i-ab:a", "tenant_i-abc", "tenant_i-abcd:x", "xtenant_i-abc:a",
		"fastapi_users_token:xyz"} {
		must(t, c.Set(ctx, k, "v", 0).Err())
	}
	must(t, c.Expire(ctx, "tenant_i-abc:a", time.Hour).Err())
	must(t, c.HSet(ctx, "tenant_i-abc:h", "f", "v").Err())
	must(t, c.SAdd(ctx, "tenant_i-abc:s", "m").Err())
	must(t, c.ZAdd(ctx, "tenant_i-abc:z", redis.Z{Score: 1, Member: "m"}).Err())
	must(t, c.RPush(ctx, "tenant_i-abc:l", "x").Err())
	must(t, c.SAdd(ctx, rediskeys.GatedTenants, string(cleaned), string(longer)).Err())
	must(t, c.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: string(cleaned)},
		redis.Z{Score: 2, Member: string(longer)}, redis.Z{Score: 3, Member: string(shorter)}).Err())
	other := client(t, srv.Addr, 0, nil) // another database: never touched
	must(t, other.Set(ctx, "tenant_i-abc:a", "v", 0).Err())
	must(t, other.SAdd(ctx, rediskeys.GatedTenants, string(cleaned)).Err())
	before := keys(t, c)

	r, err := s.RemoveTenant(ctx, cleaned)
	if err != nil {
		t.Fatal(err)
	}
	if r != (rediskeys.Removed{Keys: int64(len(mine)), Memberships: 2}) {
		t.Errorf("removed %+v; want %d keys, 2 memberships", r, len(mine))
	}
	var want []string
	for _, k := range before {
		if !slices.Contains(mine, k) {
			want = append(want, k)
		}
	}
	if got := keys(t, c); !slices.Equal(got, want) {
		t.Errorf("keys left:\n%q\nwant:\n%q", got, want)
	}
	if gated, _ := c.SMembers(ctx, rediskeys.GatedTenants).Result(); !slices.Equal(gated, []string{string(longer)}) {
		t.Errorf("%s = %q; want only %s", rediskeys.GatedTenants, gated, longer)
	}
	if active, _ := c.ZRange(ctx, rediskeys.ActiveTenants, 0, -1).Result(); !slices.Equal(active, []string{string(longer), string(shorter)}) {
		t.Errorf("%s = %q; want %s and %s", rediskeys.ActiveTenants, active, longer, shorter)
	}
	if got := keys(t, other); !slices.Equal(got, []string{rediskeys.GatedTenants, "tenant_i-abc:a"}) {
		t.Errorf("database 0 holds %q; want it untouched", got)
	}
	// Leftovers: keys plus memberships.
	for id, want := range map[tenant.ID]int64{cleaned: 0, longer: 2 + 2, shorter: 1 + 1} {
		if n, err := s.Leftovers(ctx, id); err != nil || n != want {
			t.Errorf("Leftovers(%s) = %d, %v; want %d", id, n, err, want)
		}
	}
}

func TestRemoveTenantTenThousandKeys(t *testing.T) {
	t.Parallel()
	_, s, c := setup(t)
	const n = 10000
	seed(t, c, cleaned, n)
	seed(t, c, longer, 100)
	ctx := context.Background()
	if left, err := s.Leftovers(ctx, cleaned); err != nil || left != n {
		t.Fatalf("Leftovers before = %d, %v; want %d", left, err, n)
	}
	batches := 0
	rediskeys.SetAfterBatch(s, func(int) { batches++ })

	start := time.Now()
	r, err := s.RemoveTenant(ctx, cleaned)
	t.Logf("removed %d keys in %s, %d UNLINKs", r.Keys, time.Since(start), batches)
	if err != nil {
		t.Fatal(err)
	}
	if r.Keys != n {
		t.Errorf("removed %d keys; want %d", r.Keys, n)
	}
	if batches != n/rediskeys.BatchSize {
		t.Errorf("%d UNLINKs; want %d", batches, n/rediskeys.BatchSize)
	}
	if size := c.DBSize(ctx).Val(); size != 100 {
		t.Errorf("%d keys left; want the paying tenant's 100", size)
	}
}

// The SCAN pattern matches the prefix literally: with a prefix full of glob
// metacharacters (no tenant id holds any), only keys that start with
// exactly it are removed.
func TestGlobMetacharactersAreLiteral(t *testing.T) {
	t.Parallel()
	_, s, c := setup(t)
	ctx := context.Background()
	prefix := `t*[ab]?\:`
	for _, k := range []string{prefix + "1", prefix, "tXXaY:1", "t*[ab]?:1", "t*a?\\:1", "tb?\\:1"} {
		must(t, c.Set(ctx, k, "v", 0).Err())
	}
	n, err := rediskeys.RemovePrefix(ctx, s, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d keys; want 2", n)
	}
	if got := keys(t, c); !slices.Equal(got, []string{"t*[ab]?:1", "t*a?\\:1", "tXXaY:1", "tb?\\:1"}) {
		t.Errorf("keys left: %q", got)
	}

	for in, want := range map[string]string{
		"tenant_i-abc:": "tenant_i-abc:",
		`a*b?c[d]e\f`:   `a\*b\?c\[d\]e\\f`,
	} {
		if got := rediskeys.EscapeGlob(in); got != want {
			t.Errorf("EscapeGlob(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestRemoveTenantTwice(t *testing.T) {
	t.Parallel()
	_, s, c := setup(t)
	ctx := context.Background()
	seed(t, c, cleaned, 10)
	must(t, c.SAdd(ctx, rediskeys.GatedTenants, string(cleaned)).Err())
	if _, err := s.RemoveTenant(ctx, cleaned); err != nil {
		t.Fatal(err)
	}
	r, err := s.RemoveTenant(ctx, cleaned)
	if err != nil || r != (rediskeys.Removed{}) {
		t.Errorf("second run: %+v, %v; want nothing removed, no error", r, err)
	}
}

func TestRemoveTenantRedisHangsMidway(t *testing.T) {
	t.Parallel()
	srv, s, c := setup(t, func(c *rediskeys.Config) { c.Timeout = time.Second })
	const n = 2000
	seed(t, c, cleaned, n)
	ctx := context.Background()
	rediskeys.SetAfterBatch(s, func(batch int) {
		if batch == 1 {
			srv.Pause()
		}
	})

	start := time.Now()
	first, err := s.RemoveTenant(ctx, cleaned)
	if !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("with Redis hanging: %v; want an unavailable error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %s; want about the 1s timeout", d)
	}

	srv.Resume()
	rediskeys.SetAfterBatch(s, nil)
	second, err := s.RemoveTenant(ctx, cleaned)
	if err != nil {
		t.Fatal(err)
	}
	// A batch whose answer was lost may have been removed uncounted.
	if sum := first.Keys + second.Keys; first.Keys < rediskeys.BatchSize || sum > n || sum < n-rediskeys.BatchSize {
		t.Errorf("removed %d then %d keys; want at least %d first and %d in all, less a batch at most", first.Keys, second.Keys, rediskeys.BatchSize, n)
	}
	if left, err := s.Leftovers(ctx, cleaned); err != nil || left != 0 {
		t.Errorf("Leftovers = %d, %v; want 0", left, err)
	}
}

func TestRemoveTenantRedisStops(t *testing.T) {
	t.Parallel()
	srv, s, c := setup(t, func(c *rediskeys.Config) { c.Timeout = 2 * time.Second })
	seed(t, c, cleaned, 2000)
	ctx := context.Background()
	rediskeys.SetAfterBatch(s, func(batch int) {
		if batch == 1 {
			srv.Stop()
		}
	})
	if _, err := s.RemoveTenant(ctx, cleaned); !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("with Redis stopped mid-way: %v; want an unavailable error", err)
	}
	rediskeys.SetAfterBatch(s, nil)
	if err := s.Ping(ctx); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Ping: %v; want an unavailable error", err)
	}
	if _, err := s.Leftovers(ctx, cleaned); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Leftovers: %v; want an unavailable error", err)
	}

	srv.Start() // empty: no persistence
	seed(t, c, cleaned, 10)
	// The client's pool redials in the background after failed dials; the
	// pipeline's retries wait the same way.
	testenv.Eventually(t, 10*time.Second, func() bool { return s.Ping(ctx) == nil }, "the store reaches Redis again")
	r, err := s.RemoveTenant(ctx, cleaned)
	if err != nil || r.Keys != 10 {
		t.Errorf("after the restart: %+v, %v; want 10 keys removed", r, err)
	}
}

func TestPasswordAndTLS(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedisWith(t, testenv.RedisOptions{Password: "s3cret pass", TLS: true})
	pem, err := os.ReadFile(srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: srv.Password,
		TLSConfig: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}, Protocol: 2})
	t.Cleanup(func() { c.Close() })
	seed(t, c, cleaned, 20)
	good := rediskeys.Config{Host: "127.0.0.1", Port: srv.Port, Password: srv.Password,
		SSL: "TRUE", SSLCACerts: srv.CAFile, Timeout: 5 * time.Second}
	ctx := context.Background()

	for _, tc := range []struct {
		name string
		mod  func(*rediskeys.Config)
		want string // in a plain (not unavailable) error; "" for success
	}{
		{"wrong password", func(c *rediskeys.Config) { c.Password = "wrong" }, "REDIS_PASSWORD"},
		{"no password", func(c *rediskeys.Config) { c.Password = "" }, "REDIS_PASSWORD"},
		{"CA not given", func(c *rediskeys.Config) { c.SSLCACerts = "" }, "REDIS_SSL_CA_CERTS"},
		{"verification off", func(c *rediskeys.Config) { c.SSLCACerts = ""; c.SSLCertReqs = "none" }, ""},
		{"verified", func(*rediskeys.Config) {}, ""},
	} {
		cfg := good
		tc.mod(&cfg)
		s, err := rediskeys.Open(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		err = s.Ping(ctx)
		s.Close()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Ping: %v", tc.name, err)
		case tc.want != "" && (err == nil || errors.Is(err, tenant.ErrUnavailable) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Ping: %v; want a plain error naming %s", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), srv.Password) {
			t.Errorf("%s: error shows the password: %v", tc.name, err)
		}
	}

	s, err := rediskeys.Open(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if r, err := s.RemoveTenant(ctx, cleaned); err != nil || r.Keys != 20 {
		t.Errorf("over TLS with a password: %+v, %v; want 20 keys removed", r, err)
	}
}

func TestRemoveTenantRefusesAnInvalidID(t *testing.T) {
	t.Parallel()
	_, s, c := setup(t)
	ctx := context.Background()
	must(t, c.Set(ctx, ":x", "v", 0).Err())
	for _, id := range []tenant.ID{"", "tenant_i-abc*", "TENANT_I-ABC"} {
		if _, err := s.RemoveTenant(ctx, id); !errors.Is(err, tenant.ErrInvalidID) {
			t.Errorf("RemoveTenant(%q): %v; want an invalid-id error", id, err)
		}
	}
	if size := c.DBSize(ctx).Val(); size != 1 {
		t.Errorf("%d keys left; want 1", size)
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	if (&rediskeys.Config{}).Enabled() || !(&rediskeys.Config{Host: "h"}).Enabled() {
		t.Error("Enabled: want REDIS_HOST to decide")
	}
	if got := (&rediskeys.Config{Host: "redis"}).Addr(); got != "redis:6379" {
		t.Errorf("Addr = %q; want redis:6379", got)
	}
	for in, want := range map[string]bool{"": false, "false": false, "true": true, "True": true, " TRUE ": true} {
		if got := (&rediskeys.Config{SSL: in}).TLS(); got != want {
			t.Errorf("TLS() with REDIS_SSL=%q = %v; want %v", in, got, want)
		}
	}
	for _, tc := range []struct {
		cfg  rediskeys.Config
		want string
	}{
		{rediskeys.Config{}, "REDIS_HOST"},
		{rediskeys.Config{Host: "h", SSL: "yes"}, "REDIS_SSL"},
		{rediskeys.Config{Host: "h", SSL: "true", SSLCertReqs: "maybe"}, "REDIS_SSL_CERT_REQS"},
		{rediskeys.Config{Host: "h", SSL: "true", SSLCACerts: "/nonexistent/ca.pem"}, "REDIS_SSL_CA_CERTS"},
	} {
		if _, err := rediskeys.Open(context.Background(), tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v): %v; want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// The variables are Onyx's, read through pkg/config like every other
// setting; -h never shows the password.
func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("REDIS_HOST", "redis.internal")
	t.Setenv("REDIS_PASSWORD", "very-secret-password")
	t.Setenv("REDIS_SSL", "true")
	t.Setenv("REDIS_DB_NUMBER", "2")
	var cfg rediskeys.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	want := rediskeys.Config{Host: "redis.internal", Port: 6379, Password: "very-secret-password", DB: 2,
		SSL: "true", SSLCertReqs: "required", Timeout: 10 * time.Second}
	if cfg != want {
		t.Errorf("loaded %+v\nwant %+v", cfg, want)
	}
	var usage strings.Builder
	config.Usage(&usage, &cfg)
	if strings.Contains(usage.String(), "very-secret-password") || !strings.Contains(usage.String(), "REDIS_SSL_CA_CERTS") {
		t.Errorf("usage shows the password or misses a variable:\n%s", usage.String())
	}

	t.Setenv("REDIS_PORT", "0")
	if err := config.Load(&cfg); err == nil || !strings.Contains(err.Error(), "REDIS_PORT") {
		t.Errorf("REDIS_PORT=0: %v; want it refused", err)
	}
}
