package bastion_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion/bastiontest"
)

// pgAddr is the PostgreSQL server the tests reach through the bastion
// (user postgres, trust authentication, database postgres).
const pgAddr = "127.0.0.1:5432"

// requirePostgres skips the test when PostgreSQL is not running, unless CI
// is "true", where that is a failure.
func requirePostgres(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout("tcp", pgAddr, 2*time.Second)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at %s is required in CI: %v", pgAddr, err)
		}
		t.Skipf("PostgreSQL at %s not available: %v", pgAddr, err)
	}
	c.Close()
}

// pgConnect connects to PostgreSQL through d, tagging the session with
// appName. The LookupFunc keeps the host name unresolved so the bastion
// resolves it.
func pgConnect(ctx context.Context, t *testing.T, d *bastion.Dialer, appName string) (*pgx.Conn, error) {
	t.Helper()
	cfg, err := pgx.ParseConfig("postgres://postgres@" + pgAddr + "/postgres?sslmode=disable&connect_timeout=10")
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialFunc = d.DialContext
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	cfg.RuntimeParams["application_name"] = appName
	return pgx.ConnectConfig(ctx, cfg)
}

// pgBastion starts a bastion and a dialer through it, skipping the test
// when PostgreSQL is not running (failing it in CI).
func pgBastion(t *testing.T) (*bastiontest.SSHD, *bastion.Dialer) {
	t.Helper()
	requirePostgres(t)
	s := bastiontest.Start(t)
	d, _ := newDialer(t, s.BastionConfig())
	return s, d
}

func uniqueAppName(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "bastion-test-" + hex.EncodeToString(b)
}

func TestPgxThroughBastion(t *testing.T) {
	s, d := pgBastion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	app := uniqueAppName(t)

	conn1, err := pgConnect(ctx, t, d, app)
	if err != nil {
		t.Fatalf("connect through bastion: %v", err)
	}
	defer conn1.Close(ctx)
	var one int
	if err := conn1.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	// The pgx connection is a tunnel, not a TCP socket of ours.
	if _, isTCP := conn1.PgConn().Conn().(*net.TCPConn); isTCP {
		t.Errorf("pgx got a direct TCP connection")
	}

	conn2, err := pgConnect(ctx, t, d, app)
	if err != nil {
		t.Fatalf("second connect: %v", err)
	}
	defer conn2.Close(ctx)
	var sessions int
	if err := conn2.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&sessions); err != nil {
		t.Fatal(err)
	}
	if sessions != 2 {
		t.Errorf("PostgreSQL sees %d sessions named %s, want 2", sessions, app)
	}
	if got := d.ConnectCount(); got != 1 {
		t.Errorf("SSH connections = %d, want 1 shared by both pgx connections", got)
	}
	// sshd opened both database connections.
	eventually(t, 5*time.Second, "sshd to log the tunnels to PostgreSQL", func() bool {
		return strings.Count(s.Log(), "target 127.0.0.1 port 5432") == 2
	})
	if got := strings.Count(s.Log(), "Accepted publickey"); got != 1 {
		t.Errorf("sshd logged %d logins, want 1", got)
	}

	// Context cancellation interrupts a running query (pgx sets a deadline
	// on the connection, which the tunnel must honour).
	qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer qcancel()
	start := time.Now()
	_, err = conn2.Exec(qctx, "SELECT pg_sleep(30)")
	if err == nil {
		t.Fatal("pg_sleep(30) finished despite a 300ms context")
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("cancelled query returned after %s", elapsed)
	}
	if err := conn1.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Errorf("other connection broken by the cancellation: %v", err)
	}
}

func TestPgxCancelRequestThroughBastion(t *testing.T) {
	_, d := pgBastion(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgConnect(ctx, t, d, uniqueAppName(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)

	// pgx sends cancel requests to RemoteAddr() through DialFunc; it must
	// name the database, not a zero address.
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		done <- err
	}()
	eventually(t, 5*time.Second, "the query to start", func() bool {
		var n int
		c2, err := pgConnect(ctx, t, d, uniqueAppName(t))
		if err != nil {
			return false
		}
		defer c2.Close(ctx)
		_ = c2.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").Scan(&n)
		return n > 0
	})
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		t.Fatalf("CancelRequest: %v", err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "canceling statement") {
			t.Errorf("query err = %v, want a cancellation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("query not cancelled within 10s")
	}
}

func TestPgxNoDirectFallback(t *testing.T) {
	requirePostgres(t)
	s := bastiontest.Start(t)
	cfg := s.BastionConfig()
	cfg.KnownHostsFile = s.WrongKnownHostsFile(t)
	d, _ := newDialer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app := uniqueAppName(t)
	_, err := pgConnect(ctx, t, d, app)
	if !errors.Is(err, bastion.ErrHostKey) {
		t.Fatalf("pgx connect err = %v, want ErrHostKey", err)
	}
	// Check from a direct (test-only) connection that nothing reached
	// PostgreSQL under this application name.
	direct, err := pgx.Connect(ctx, "postgres://postgres@"+pgAddr+"/postgres?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	var n int
	if err := direct.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("PostgreSQL saw %d sessions despite the host key failure", n)
	}
}
