package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
)

// PGServer is a PostgreSQL server of the test's own (initdb in a temporary
// directory, trust auth, a loopback port), for tests that restart or stop
// the database without disturbing every other test.
type PGServer struct {
	// AdminURL is its maintenance database.
	AdminURL string
	Port     int
	dir      string
	bin      string
	settings []string
	t        testing.TB
}

// StartPostgres creates and starts a server; it is stopped and removed when
// the test ends. As root, the server runs as the postgres user. It runs with
// fsync=off unless settings ("name=value", passed as -c) say otherwise, as
// a test of load or durability needs.
func StartPostgres(t testing.TB, settings ...string) *PGServer {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		t.Fatal("testenv: no /usr/lib/postgresql/*/bin/initdb (install postgresql)")
	}
	sort.Strings(bins)
	p := &PGServer{bin: filepath.Dir(bins[len(bins)-1]), Port: freePort(t), settings: settings, t: t}
	dir, err := os.MkdirTemp("", "tc-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() {
		_ = p.pgctl("stop", "-m", "immediate")
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := p.command(filepath.Join(p.bin, "initdb"), "-D", filepath.Join(dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	p.AdminURL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	p.Start()
	return p
}

func (p *PGServer) command(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func (p *PGServer) pgctl(args ...string) error {
	args = append(args, "-D", filepath.Join(p.dir, "data"), "-w", "-t", "60")
	out, err := p.command(filepath.Join(p.bin, "pg_ctl"), args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_ctl %v: %v\n%s", args, err, out)
	}
	return nil
}

// Start starts the server and waits until it accepts connections.
func (p *PGServer) Start() {
	p.t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", p.Port, p.dir)
	for _, s := range p.settings {
		opts += " -c " + s
	}
	if err := p.pgctl("start", "-o", opts, "-l", filepath.Join(p.dir, "log")); err != nil {
		p.t.Fatal(err)
	}
}

// Stop stops the server at once (in-flight transactions are rolled back).
func (p *PGServer) Stop() {
	p.t.Helper()
	if err := p.pgctl("stop", "-m", "immediate"); err != nil {
		p.t.Fatal(err)
	}
}

// Restart stops and starts the server.
func (p *PGServer) Restart() {
	p.t.Helper()
	p.Stop()
	p.Start()
}
