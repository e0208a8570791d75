// Package testenv gives tests real parts: PostgreSQL databases of their own,
// cloned from templates built from the Onyx-like fixture, and an embedded
// JetStream server (nats-server v2.15). Nothing here is a mock.
package testenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantcleanup/tenant-cleanup/fixtures/onyx"
)

// AdminURL is the maintenance database tests create their databases from:
// TEST_DATABASE_URL, or the local PostgreSQL with trust auth.
func AdminURL() string {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Databases is a data plane and a control plane of the test's own, loaded
// with the fixture, dropped when the test ends.
type Databases struct {
	DataURL    string
	ControlURL string
	Data       *pgxpool.Pool
	Control    *pgxpool.Pool
}

var (
	templatesMu sync.Mutex
	templates   = map[string]error{} // admin URL → build result
	dbCounter   atomic.Int64
)

// Template database names, one pair per fixture version.
var (
	dataTemplate = "tc_tpl_data_" + shortHash(onyx.DataPlaneSQL)
	ctlTemplate  = "tc_tpl_control_" + shortHash(onyx.ControlPlaneSQL)
)

// NewDatabases creates a fresh data-plane and control-plane database for t
// on the PostgreSQL server at AdminURL.
func NewDatabases(t testing.TB) *Databases {
	t.Helper()
	return NewDatabasesOn(t, AdminURL())
}

// NewDatabasesOn creates them on the server whose maintenance database is admin.
func NewDatabasesOn(t testing.TB, admin string) *Databases {
	t.Helper()
	templatesMu.Lock()
	err, built := templates[admin]
	if !built {
		err = buildTemplates(context.Background(), admin)
		templates[admin] = err
	}
	templatesMu.Unlock()
	if err != nil {
		t.Fatalf("testenv: build template databases: %v", err)
	}
	d := &Databases{
		DataURL:    cloneDatabase(t, admin, dataTemplate, ""),
		ControlURL: cloneDatabase(t, admin, ctlTemplate, ""),
	}
	d.Data = Pool(t, d.DataURL)
	d.Control = Pool(t, d.ControlURL)
	return d
}

// Pool opens a pool on url, closed when the test ends.
func Pool(t testing.TB, url string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("testenv: parse %s: %v", url, err)
	}
	cfg.MaxConns = 4
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("testenv: connect: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// CloneDatabase creates a database from template for the test and drops it
// (forcibly) when the test ends. It returns the new database's URL.
func CloneDatabase(t testing.TB, template string) string {
	t.Helper()
	return cloneDatabase(t, AdminURL(), template, "")
}

// CopyDatabase is CloneDatabase with STRATEGY FILE_COPY: a checkpoint, then
// the template's files copied, much faster than the default (WAL_LOG) for a
// template of many relations (the bench's fleets).
func CopyDatabase(t testing.TB, template string) string {
	t.Helper()
	return cloneDatabase(t, AdminURL(), template, " STRATEGY FILE_COPY")
}

// cloneDatabase creates a database from template, with the options of
// CREATE DATABASE in with (empty: none).
func cloneDatabase(t testing.TB, adminURL, template, with string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("testenv: connect to PostgreSQL at %s: %v (is it running? pg_ctlcluster --skip-systemctl-redirect 15 main start)", adminURL, err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("tc_%d_%d", os.Getpid(), dbCounter.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+
		" TEMPLATE "+pgx.Identifier{template}.Sanitize()+with); err != nil {
		t.Fatalf("testenv: create database %s from %s: %v", name, template, err)
	}
	t.Cleanup(func() { dropDatabase(adminURL, name) })
	return databaseURL(adminURL, name)
}

// DatabaseURL is AdminURL pointed at another database.
func DatabaseURL(name string) string { return databaseURL(AdminURL(), name) }

func databaseURL(admin, name string) string {
	u, err := url.Parse(admin)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	return u.String()
}

func dropDatabase(adminURL, name string) {
	// Minutes: the bench's fleets have hundreds of thousands of files.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// buildTemplates creates (once per fixture version, shared by all test
// processes) a data-plane and a control-plane template database, and drops
// databases left behind by test processes that died.
func buildTemplates(ctx context.Context, adminURL string) error {
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL at %s: %w (is it running? pg_ctlcluster --skip-systemctl-redirect 15 main start)", adminURL, err)
	}
	defer admin.Close(ctx)
	// Serialise template building across concurrently running test binaries.
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(7417, 1)"); err != nil {
		return err
	}
	defer admin.Exec(ctx, "SELECT pg_advisory_unlock(7417, 1)") //nolint:errcheck
	dropOrphans(ctx, admin)
	for name, sql := range map[string]string{dataTemplate: onyx.DataPlaneSQL, ctlTemplate: onyx.ControlPlaneSQL} {
		if err := buildTemplate(ctx, admin, adminURL, name, sql); err != nil {
			return fmt.Errorf("template %s: %w", name, err)
		}
	}
	return nil
}

func buildTemplate(ctx context.Context, admin *pgx.Conn, adminURL, name, sql string) error {
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	// Build under a temporary name and rename, so a half-built template is
	// never taken for a finished one.
	tmp := name + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{tmp}.Sanitize()+" WITH (FORCE)"); err != nil {
		return err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{tmp}.Sanitize()); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, databaseURL(adminURL, tmp))
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, sql) // the simple protocol runs the whole script
	conn.Close(ctx)
	if err != nil {
		return fmt.Errorf("load fixture: %w", err)
	}
	_, err = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{tmp}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize())
	return err
}

// dropOrphans drops tc_<pid>_<n> databases whose test process is gone.
func dropOrphans(ctx context.Context, admin *pgx.Conn) {
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname ~ '^tc_[0-9]+_[0-9]+$'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range names {
		pid, _ := strconv.Atoi(strings.Split(name, "_")[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:6])
}
