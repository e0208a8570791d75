package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds bin/analyzer, bin/marker, bin/cleaner and bin/tenantctl
// (as `make build` does) once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "tenant-cleanup-bin-")
		if buildErr != nil {
			return
		}
		// nats-server too (the version go.mod embeds), for the tests that
		// kill JetStream as a process.
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./services/analyzer", "./services/marker", "./services/cleaner", "./cmd/tenantctl",
			"github.com/nats-io/nats-server/v2")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type proc struct {
	cmd    *exec.Cmd
	stdout *testenv.SyncBuffer
	stderr *testenv.SyncBuffer
	done   chan struct{}
	err    error
}

func start(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stdout: &testenv.SyncBuffer{}, stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s stderr:\n%s", filepath.Base(bin), p.stderr.String())
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.cmd.Path, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// startNATSServer runs the nats-server binary on addr with JetStream
// storing in store, and waits until it listens.
func startNATSServer(t *testing.T, bin, addr, store string) *proc {
	t.Helper()
	_, port, _ := strings.Cut(addr, ":")
	p := start(t, filepath.Join(bin, "nats-server"), nil, "-a", "127.0.0.1", "-p", port, "-js", "-sd", store)
	testenv.Eventually(t, 20*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "nats-server listening on %s", addr)
	return p
}

func run(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	p := start(t, bin, env, args...)
	code := p.wait(t, 60*time.Second)
	return code, p.stdout.String(), p.stderr.String()
}

func TestHelpShowsConfigurationWithoutSecrets(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	env := []string{
		"DATA_PLANE_DATABASE_URL=postgres://app:dp-secret-1@db:5432/onyx",
		"CONTROL_PLANE_RDS_PASSWORD=cp-secret-2",
		"BASTION_KEY_PASSPHRASE=key-secret-3",
		"NATS_URL=nats://u:nats-secret-4@127.0.0.1:4222",
	}
	for _, name := range []string{"analyzer", "marker", "cleaner", "tenantctl"} {
		code, stdout, stderr := run(t, filepath.Join(bin, name), env, "-h")
		if code != 0 {
			t.Errorf("%s -h: exit %d (%s)", name, code, stderr)
		}
		for _, want := range []string{"DATA_PLANE_DATABASE_URL", "CONTROL_PLANE_RDS_HOST", "BASTION_HOST", "NATS_URL", "INACTIVE_DAYS"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s -h does not show %s", name, want)
			}
		}
		for _, secret := range []string{"dp-secret-1", "cp-secret-2", "key-secret-3", "nats-secret-4"} {
			if strings.Contains(stdout+stderr, secret) {
				t.Errorf("%s -h prints the secret %s", name, secret)
			}
		}
	}
	for name, wants := range map[string][]string{
		"analyzer": {"ANALYZER_INTERVAL", "--once"},
		"marker":   {"DRAIN_CHECK_DELAY"},
		"cleaner":  {"DRAIN_CHECK_MAX_DELAY", "DRAIN_TIMEOUT", "DRAIN_MAX_LEFTOVER_DOCS"},
	} {
		_, stdout, _ := run(t, filepath.Join(bin, name), env, "-h")
		for _, want := range wants {
			if !strings.Contains(stdout, strings.TrimPrefix(want, "-")) {
				t.Errorf("%s -h does not show %s", name, want)
			}
		}
	}
}

func TestBadConfigurationIsRefused(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	code, _, stderr := run(t, filepath.Join(bin, "marker"), []string{"DATA_PLANE_DATABASE_URL=", "CONTROL_PLANE_DATABASE_URL=postgres://x@127.0.0.1/x"})
	if code != 2 || !strings.Contains(stderr, "DATA_PLANE_DATABASE_URL") {
		t.Errorf("marker without DATA_PLANE_DATABASE_URL: exit %d, %q", code, stderr)
	}
	code, _, stderr = run(t, filepath.Join(bin, "cleaner"), []string{"DATA_PLANE_DATABASE_URL=postgres://x@127.0.0.1/x",
		"CONTROL_PLANE_DATABASE_URL=postgres://x@127.0.0.1/x", "DRAIN_TIMEOUT=soon"})
	if code != 2 || !strings.Contains(stderr, "DRAIN_TIMEOUT") {
		t.Errorf("cleaner with DRAIN_TIMEOUT=soon: exit %d, %q", code, stderr)
	}
}

// TestOldNATSServerIsRefused points the marker at the Debian nats-server 2.9
// on 127.0.0.1:4222: it must refuse to run, naming both versions.
func TestOldNATSServerIsRefused(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	dbs := testenv.NewDatabases(t)
	code, _, stderr := run(t, filepath.Join(bin, "marker"), []string{"DATA_PLANE_DATABASE_URL=" + dbs.DataURL,
		"CONTROL_PLANE_DATABASE_URL=" + dbs.ControlURL, "NATS_URL=nats://127.0.0.1:4222", "HTTP_ADDR="})
	if code != 1 || !strings.Contains(stderr, "2.12.0 or newer") || !strings.Contains(stderr, "server version is 2.") {
		t.Errorf("marker against the 2.9 server: exit %d, %s", code, stderr)
	}
}

func TestBinariesRunThePipelineAndStopOnSIGTERM(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 4})
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleNever, Status: tenant.StatusGatedAccess, Pairs: 1, DocsPerPair: 2})
	env := w.Environ()
	marker := start(t, filepath.Join(bin, "marker"), env)
	cleaner := start(t, filepath.Join(bin, "cleaner"), env)
	w.DrainTenants(true, eligibleOld, eligibleNever)
	w.SimulateDeletion()

	code, stdout, stderr := run(t, filepath.Join(bin, "analyzer"), env, "--once")
	if code != 0 || !strings.Contains(stdout, "published 2 candidates") {
		t.Fatalf("analyzer --once: exit %d\n%s\n%s", code, stdout, stderr)
	}
	// A manual request for a tenant already requested is harmless.
	code, stdout, stderr = run(t, filepath.Join(bin, "tenantctl"), env, "cleanup", eligibleNever)
	if code != 0 || !strings.Contains(stdout, "published 1") {
		t.Fatalf("tenantctl cleanup: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, _, stderr = run(t, filepath.Join(bin, "tenantctl"), env, "cleanup", "pg_catalog")
	if code != 1 || !strings.Contains(stderr, `invalid tenant id "pg_catalog"`) {
		t.Fatalf("tenantctl cleanup pg_catalog: exit %d, %s", code, stderr)
	}
	w.WaitFor(eligibleOld, tenant.OutcomeCleaned, 30*time.Second)
	w.WaitFor(eligibleNever, tenant.OutcomeCleaned, 30*time.Second)
	w.AssertCleaned(eligibleOld)
	w.AssertCleaned(eligibleNever)

	for _, p := range []*proc{marker, cleaner} {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", p.cmd.Path, code)
		}
		logs := p.stderr.String()
		if !strings.Contains(logs, `"msg":"`+filepath.Base(p.cmd.Path)+` stopped"`) {
			t.Errorf("%s did not log its stop:\n%s", p.cmd.Path, logs)
		}
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			if !strings.HasPrefix(line, "{") {
				t.Errorf("%s log line is not JSON: %s", p.cmd.Path, line)
			}
		}
	}
	if !bytes.Contains([]byte(cleaner.stderr.String()), []byte(`"tenant_id":"`+eligibleOld+`"`)) {
		t.Errorf("cleaner logs never name %s", eligibleOld)
	}
}
