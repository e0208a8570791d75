package e2e

// End-to-end tests of the control plane reached through an SSH bastion: a
// real OpenSSH server (bastiontest) in front of the control-plane database,
// the marker and the cleaner running in this process as the binaries do.
//
// How "never a direct connection" is proven: the services' control-plane
// URL names a forwarder of this file (cpForwarder), not PostgreSQL. Both the
// bastion and the test run on this machine, so the forwarder is reachable
// both through sshd and directly; for every connection it accepts it looks
// up, through /proc, which process holds the connecting socket. A socket
// held by this test process is a direct connection (the services run here);
// one held by an sshd process came through the bastion. Only the latter are
// forwarded to PostgreSQL; direct ones are counted and closed, so that a
// regression can neither go unnoticed nor delete anything.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion/bastiontest"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/ctl"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// Tenants of the bastion tests (all gated, last queried 200 days ago).
const (
	viaBastionA = "tenant_0000000b-0000-4000-8000-00000000000a"
	viaBastionB = "tenant_0000000b-0000-4000-8000-00000000000b"
	viaBastionC = "tenant_0000000b-0000-4000-8000-00000000000c"
	viaBastionD = "tenant_0000000b-0000-4000-8000-00000000000d"
)

// bastionRoute is the control plane of a world routed through a test sshd.
type bastionRoute struct {
	w    *world
	sshd *bastiontest.SSHD
	fwd  *cpForwarder
	// knownHosts is the services' BASTION_KNOWN_HOSTS, a file of the test's
	// own that it edits as an operator would.
	knownHosts string
}

// routeControlPlaneThroughBastion starts sshd (with opts), puts a forwarder
// in front of the world's control-plane database and points the services'
// configuration at both: CONTROL_PLANE_DATABASE_URL names the forwarder, the
// BASTION_* variables the sshd. knownHostsFrom is copied to the services'
// known_hosts file (empty: the right one). Call it before startServices.
func routeControlPlaneThroughBastion(w *world, knownHostsFrom func(*bastiontest.SSHD) string, opts ...bastiontest.Option) *bastionRoute {
	t := w.t
	t.Helper()
	s := bastiontest.Start(t, opts...)
	cp, err := url.Parse(w.DBs.ControlURL)
	if err != nil {
		t.Fatal(err)
	}
	r := &bastionRoute{w: w, sshd: s, fwd: startCPForwarder(t, cp.Host)}
	r.knownHosts = filepath.Join(t.TempDir(), "known_hosts")
	src := s.KnownHostsFile
	if knownHostsFrom != nil {
		src = knownHostsFrom(s)
	}
	r.setKnownHosts(src)

	cp.Host = r.fwd.addr()
	w.Common(func(c *config.Common) {
		c.ControlPlaneURL = cp.String()
		c.Bastion = config.Bastion{BastionHost: s.Host, BastionPort: s.Port, BastionUser: s.User(), PEMFile: s.KeyFile,
			BastionKnownHosts: r.knownHosts, BastionPassphrase: s.KeyPassphrase}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("control-plane forwarder: %s", r.fwd.summary())
		}
	})
	return r
}

// setKnownHosts overwrites the services' known_hosts file with src's
// contents, in place, as an operator editing it does.
func (r *bastionRoute) setKnownHosts(src string) {
	r.w.t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		r.w.t.Fatal(err)
	}
	if err := os.WriteFile(r.knownHosts, b, 0o600); err != nil {
		r.w.t.Fatal(err)
	}
}

// assertNoDirectConnection fails the test if anything but sshd connected
// to the control-plane address.
func (r *bastionRoute) assertNoDirectConnection() {
	r.w.t.Helper()
	if direct, other := r.fwd.count(ownerSelf), r.fwd.notViaSSHD(); direct != 0 || other != 0 {
		r.w.t.Errorf("the control-plane address received %d direct connection(s) from this process and %d from "+
			"processes other than sshd (%s): connections must only go through the bastion", direct, other, r.fwd.summary())
	}
}

// assertNoConnectionSince fails the test if the control-plane address
// received a connection after the first before ones; why says why none was
// expected.
func (r *bastionRoute) assertNoConnectionSince(before int, why string) {
	r.w.t.Helper()
	if n := r.fwd.total() - before; n != 0 {
		r.w.t.Errorf("the control-plane address received %d connection(s) %s (%s)", n, why, r.fwd.summary())
	}
}

// waitCleaned waits until id is cleaned (AssertCleaned), then checks that
// its control-plane connections went through the bastion and that no tenant
// was lost on the way.
func (r *bastionRoute) waitCleaned(id string) {
	r.w.t.Helper()
	r.w.WaitCleaned(30*time.Second, id)
	r.assertTunnelled()
	r.w.bastionAssertNothingLost()
}

// assertTunnelled checks that control-plane connections arrived through sshd
// and that sshd logged opening direct-tcpip channels to the forwarder.
func (r *bastionRoute) assertTunnelled() {
	r.w.t.Helper()
	r.w.t.Logf("control-plane forwarder: %s", r.fwd.summary())
	if r.fwd.count(ownerSSHD) == 0 {
		r.w.t.Errorf("no control-plane connection came through sshd (%s)", r.fwd.summary())
	}
	target := fmt.Sprintf("target %s port %d", r.fwd.host(), r.fwd.port())
	if !strings.Contains(r.sshd.Log(), target) {
		r.w.t.Errorf("sshd did not log a direct-tcpip channel to the control plane (%q)", target)
	}
	r.assertNoDirectConnection()
}

// bastionRequest sends a manual cleanup request for each id.
func (w *world) bastionRequest(ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		if err := w.Bus.PublishRequest(context.Background(), tenant.Request{ID: tenant.ID(id), RequestedBy: "bastion-test"}); err != nil {
			w.t.Fatal(err)
		}
	}
}

func (w *world) bastionCreateEligible(ids ...string) {
	w.t.Helper()
	for _, id := range ids {
		w.DBs.CreateTenant(w.t, testenv.Tenant{ID: id, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200),
			Pairs: 1, DocsPerPair: 3, Filler: 2})
	}
}

// bastionLogCount counts the service log lines containing every one of subs.
func (w *world) bastionLogCount(subs ...string) int {
	n := 0
	for _, line := range strings.Split(w.Logs.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// bastionAssertNothingLost fails if any tenant was refused, reported stuck
// or dead-lettered: a bastion failure must only ever delay work.
func (w *world) bastionAssertNothingLost() {
	w.t.Helper()
	for _, o := range []tenant.Outcome{tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeDead} {
		if evs := w.EventsWith(o); len(evs) != 0 {
			w.t.Errorf("%d %s event(s): %+v", len(evs), o, evs)
		}
	}
}

// bastionAssertUntouched checks that the tenant is as it was, was not marked and
// has no ledger row.
func (w *world) bastionAssertUntouched(id string, before testworld.State) {
	w.t.Helper()
	if got := w.State(id); got != before {
		w.t.Errorf("%s was changed while the control plane was out of reach", id)
	}
	// The ledger table does not exist until a service has reached the
	// control plane once.
	if w.DBs.CountControl(w.t, "SELECT count(*) FROM pg_tables WHERE schemaname = 'tenant_cleanup' AND tablename = 'ledger'") == 1 &&
		w.DBs.CountControl(w.t, "SELECT count(*) FROM tenant_cleanup.ledger WHERE tenant_id = $1", id) != 0 {
		w.t.Errorf("%s has a ledger row", id)
	}
	// Nothing may progress (marked …) or be given up on (refused, dead:
	// work lost) while the control plane is out of reach.
	for _, o := range w.Outcomes(id) {
		switch o {
		case tenant.OutcomeMarked, tenant.OutcomeDraining, tenant.OutcomeCleaned,
			tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeDead:
			w.t.Errorf("%s reported %s while the control plane was out of reach (outcomes: %v)", id, o, w.Outcomes(id))
		}
	}
}

func TestBastionFullCleanup(t *testing.T) {
	w := newWorld(t)
	w.bastionCreateEligible(viaBastionA)
	r := routeControlPlaneThroughBastion(w, nil)
	w.DrainTenants(true, viaBastionA)
	w.startServices()
	w.bastionRequest(viaBastionA)

	r.waitCleaned(viaBastionA)
	// Both services logged in with the key (one SSH connection each).
	if n := strings.Count(r.sshd.Log(), "Accepted publickey for "+r.sshd.User()); n < 2 {
		t.Errorf("sshd logged %d logins, want one per service (2)", n)
	}
	if n := w.bastionLogCount(`"msg":"bastion connected"`, r.sshd.Addr); n < 2 {
		t.Errorf("%d bastion connected log lines, want one per service", n)
	}

	// The analyzer and tenantctl reach the control plane the same way.
	logins := strings.Count(r.sshd.Log(), "Accepted publickey for "+r.sshd.User())
	if out := w.analyze(); !strings.Contains(out, "published 0 candidates") {
		t.Errorf("analyzer pass through the bastion:\n%s", out)
	}
	w.setenv() // for tenantctl
	var stdout, stderr bytes.Buffer
	if code := ctl.Main([]string{"status", viaBastionA}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "cleaned") {
		t.Errorf("tenantctl status through the bastion: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := ctl.Main([]string{"verify"}, &stdout, &stderr); code != 0 {
		t.Errorf("tenantctl verify through the bastion: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	if n := strings.Count(r.sshd.Log(), "Accepted publickey for "+r.sshd.User()); n < logins+3 {
		t.Errorf("sshd logged %d more logins, want one each for the analyzer, tenantctl status and tenantctl verify", n-logins)
	}
	r.assertNoDirectConnection()
}

// A wrong host key: first at start (a wrong known_hosts entry), then while
// running (the bastion is rebuilt with a new key). Each time nothing
// happens to the tenant, the logs say "host key" and name the bastion, and
// once the operator fixes known_hosts the work completes by itself.
func TestBastionWrongHostKey(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.bastionCreateEligible(viaBastionA, viaBastionB)
	r := routeControlPlaneThroughBastion(w, func(s *bastiontest.SSHD) string { return s.WrongKnownHostsFile(t) })
	beforeA, beforeB := w.State(viaBastionA), w.State(viaBastionB)
	w.DrainTenants(true, viaBastionA, viaBastionB)

	// 1. At start: the services wait for the control plane.
	w.startServices()
	w.bastionRequest(viaBastionA)
	for _, svc := range []string{"marker", "cleaner"} {
		testenv.Eventually(t, 15*time.Second, func() bool {
			return w.bastionLogCount(`"service":"`+svc+`"`, "connect to the control plane failed", "host key", r.sshd.Addr, "CHANGED") >= 3
		}, "%s to log three host key failures naming %s", svc, r.sshd.Addr)
	}
	w.bastionAssertUntouched(viaBastionA, beforeA)
	if strings.Contains(r.sshd.Log(), "Accepted publickey") {
		t.Errorf("a service logged in to a bastion whose host key it refused")
	}
	r.assertNoConnectionSince(0, "despite the host key failure")

	r.setKnownHosts(r.sshd.KnownHostsFile) // the operator fixes known_hosts
	w.WaitCleaned(30*time.Second, viaBastionA)

	// 2. While running: the bastion is rebuilt with a new host key. The
	// SSH connections drop; the reconnections are refused.
	r.sshd.ChangeHostKey(t)
	connsBefore := r.fwd.total()
	failuresBefore := w.bastionLogCount("host key", r.sshd.Addr)
	w.bastionRequest(viaBastionB)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return w.bastionLogCount(`"tenant_id":"`+viaBastionB+`"`, "will retry", "host key", r.sshd.Addr) >= 2
	}, "the marker to retry %s twice after host key failures", viaBastionB)
	if w.bastionLogCount("host key", r.sshd.Addr) <= failuresBefore {
		t.Errorf("no new host key log line")
	}
	w.bastionAssertUntouched(viaBastionB, beforeB)
	r.assertNoConnectionSince(connsBefore, "despite the host key failure")

	r.setKnownHosts(r.sshd.KnownHostsFile) // the operator checks the new fingerprint and updates known_hosts
	r.waitCleaned(viaBastionB)
}

// An unreachable bastion: first at start, then while running. Nothing
// happens to the tenant, nothing connects to the control plane (directly or
// otherwise), and the work completes once the bastion is back.
func TestBastionUnreachable(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.bastionCreateEligible(viaBastionA, viaBastionB)
	r := routeControlPlaneThroughBastion(w, nil)
	beforeA, beforeB := w.State(viaBastionA), w.State(viaBastionB)
	w.DrainTenants(true, viaBastionA, viaBastionB)
	r.sshd.Stop()

	// 1. At start.
	w.startServices()
	w.bastionRequest(viaBastionA)
	for _, svc := range []string{"marker", "cleaner"} {
		testenv.Eventually(t, 15*time.Second, func() bool {
			return w.bastionLogCount(`"service":"`+svc+`"`, "connect to the control plane failed", "bastion unreachable", r.sshd.Addr) >= 3
		}, "%s to log three failures to reach the bastion %s", svc, r.sshd.Addr)
	}
	w.bastionAssertUntouched(viaBastionA, beforeA)
	r.assertNoConnectionSince(0, "while the bastion was down")

	r.sshd.Restart(t) // the bastion comes up
	w.WaitCleaned(30*time.Second, viaBastionA)

	// 2. While running: the bastion goes down, a request arrives.
	r.sshd.Stop()
	connsBefore := r.fwd.total()
	w.bastionRequest(viaBastionB)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return w.bastionLogCount(`"tenant_id":"`+viaBastionB+`"`, "will retry", "bastion unreachable", r.sshd.Addr) >= 2
	}, "the marker to retry %s twice because the bastion is unreachable", viaBastionB)
	w.bastionAssertUntouched(viaBastionB, beforeB)
	r.assertNoConnectionSince(connsBefore, "while the bastion was down")

	r.sshd.Restart(t)
	r.waitCleaned(viaBastionB)
}

// The bastion restarts twice mid-run: after the tenants were marked, and
// while the cleaner is working on two of them, one of which is in flight
// inside its final control-plane transaction (waiting for the tenant's row,
// which the test keeps locked). Everything completes, each tenant cleaned
// exactly once.
func TestBastionRestartMidRun(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	all := []string{viaBastionA, viaBastionB, viaBastionC, viaBastionD}
	w.bastionCreateEligible(all...)
	r := routeControlPlaneThroughBastion(w, nil)
	w.startServices()
	w.bastionRequest(all...)
	for _, id := range all {
		w.WaitFor(id, tenant.OutcomeMarked, 20*time.Second)
	}
	logins := strings.Count(r.sshd.Log(), "Accepted publickey")

	// 1. Between marking and cleaning.
	r.sshd.Restart(t)
	w.DrainTenants(true, viaBastionA, viaBastionB)
	w.WaitFor(viaBastionA, tenant.OutcomeCleaned, 15*time.Second)
	w.WaitFor(viaBastionB, tenant.OutcomeCleaned, 15*time.Second)

	// 2. While C is being checked or cleaned and D's cleanup is in flight:
	// the cleaner has D's drain check in hand and waits, in its
	// control-plane transaction, for the row lock the test keeps.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	blocker, err := w.DBs.Control.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = blocker.Rollback(context.Background()) }()
	var blockerPID int
	if err := blocker.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&blockerPID); err != nil {
		t.Fatal(err)
	}
	if _, err := blocker.Exec(ctx, "SELECT 1 FROM public.tenant WHERE tenant_id = $1 FOR UPDATE", viaBastionD); err != nil {
		t.Fatal(err)
	}
	w.DrainTenants(true, viaBastionC, viaBastionD)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return w.DBs.CountControl(t, "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", blockerPID) > 0
	}, "the cleaner to wait for %s's control-plane row", viaBastionD)
	retriesD := w.bastionLogCount(`"tenant_id":"`+viaBastionD+`"`, "will retry")
	r.sshd.Restart(t)
	testenv.Eventually(t, 15*time.Second, func() bool {
		return w.bastionLogCount(`"tenant_id":"`+viaBastionD+`"`, "will retry") > retriesD
	}, "the cleaner to hand %s's in-flight drain check back for a retry", viaBastionD)
	if !w.DBs.SchemaExists(t, viaBastionD) {
		t.Errorf("%s's schema was dropped although its control-plane row was never locked by the cleaner", viaBastionD)
	}
	if err := blocker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	w.WaitFor(viaBastionC, tenant.OutcomeCleaned, 15*time.Second)
	w.WaitFor(viaBastionD, tenant.OutcomeCleaned, 15*time.Second)
	testenv.Eventually(t, 20*time.Second, w.WorkDone, "all work acknowledged")

	for _, id := range all {
		w.AssertCleaned(id)
	}
	w.bastionAssertNothingLost()
	if got := strings.Count(r.sshd.Log(), "Accepted publickey"); got <= logins {
		t.Errorf("no SSH login after the restarts (%d before, %d after)", logins, got)
	}
	for _, line := range []string{`"msg":"bastion connection lost"`, `"msg":"bastion reconnected"`} {
		if w.bastionLogCount(line, `"service":"cleaner"`) == 0 {
			t.Errorf("the cleaner did not log %s", line)
		}
	}
	if n := w.bastionLogCount("dead-letter"); n != 0 {
		t.Errorf("%d log lines mention the dead-letter stream", n)
	}
	r.assertTunnelled()
}

// An encrypted key with BASTION_KEY_PASSPHRASE, and the control plane given
// as the original scripts did (CONTROL_PLANE_RDS_*): the cleanup works and
// neither the passphrase, the password nor the key shows in -h, logs,
// events or errors.
func TestBastionEncryptedKey(t *testing.T) {
	const (
		passphrase = "pp-b4st10n-s3cr3t-phrase"
		password   = "pw-c0ntr0l-pl4ne-s3cr3t"
	)
	w := newWorld(t)
	w.bastionCreateEligible(viaBastionA)
	r := routeControlPlaneThroughBastion(w, nil, bastiontest.WithEncryptedUserKey(passphrase))
	cp, err := url.Parse(w.Marker.ControlPlaneURL)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(cp.Port())
	if err != nil {
		t.Fatal(err)
	}
	w.Common(func(c *config.Common) {
		c.ControlPlane = config.ControlPlane{
			RDSHost: cp.Hostname(), // the forwarder, as seen from the bastion
			RDSPort: port, RDSUser: cp.User.Username(), RDSDB: strings.TrimPrefix(cp.Path, "/"),
			RDSPassword: password, // trust auth: PostgreSQL does not ask for it
		}
	})
	if got := w.Marker.BastionPassphrase; got != passphrase {
		t.Fatalf("BASTION_KEY_PASSPHRASE = %q", got)
	}
	w.setenv() // for -h and tenantctl below

	w.DrainTenants(true, viaBastionA)
	w.startServices()
	w.bastionRequest(viaBastionA)
	w.WaitCleaned(30*time.Second, viaBastionA)
	r.assertTunnelled()

	// -h of every service and of tenantctl.
	var help bytes.Buffer
	for name, spec := range map[string]any{"analyzer": &config.Analyzer{}, "marker": &config.Marker{}, "cleaner": &config.Cleaner{}} {
		var out bytes.Buffer
		if _, err := service.Flags(name, "test", spec, []string{"-h"}, &out, nil); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s -h: %v", name, err)
		}
		for _, want := range []string{"BASTION_KEY_PASSPHRASE", "CONTROL_PLANE_RDS_PASSWORD", "PEM_FILE_LOCATION", "(set, hidden)"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s -h lacks %q", name, want)
			}
		}
		help.Write(out.Bytes())
	}
	var stderr bytes.Buffer
	if code := ctl.Main([]string{"-h"}, &help, &stderr); code != 0 {
		t.Errorf("tenantctl -h: exit %d: %s", code, stderr.String())
	}
	help.Write(stderr.Bytes())

	// A wrong passphrase stops a service at start, with an error that says
	// so and does not quote it.
	const wrong = "pp-wrong-passphrase-guess"
	mcfg := w.Marker
	mcfg.BastionPassphrase = wrong
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	startErr := service.RunMarker(ctx, testworld.Validated(t, mcfg), w.Logger("marker-wrong-passphrase"))
	if startErr == nil || !strings.Contains(startErr.Error(), "wrong passphrase") || !strings.Contains(startErr.Error(), "BASTION_KEY_PASSPHRASE") {
		t.Errorf("marker with a wrong passphrase: err = %v, want a wrong-passphrase error naming BASTION_KEY_PASSPHRASE", startErr)
	}

	events, err := json.Marshal(w.Events())
	if err != nil {
		t.Fatal(err)
	}
	places := map[string]string{
		"-h output":   help.String(),
		"service log": w.Logs.String(),
		"events":      string(events),
		"start error": fmt.Sprint(startErr),
	}
	secrets := append([]string{passphrase, password, wrong}, bastionKeyBodyLines(t, r.sshd.KeyFile)...)
	for where, text := range places {
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s contains a secret (%.12s…)", where, secret)
			}
		}
	}
}

// bastionKeyBodyLines returns the base64 lines of a PEM key file.
func bastionKeyBodyLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if len(line) > 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no key material in %s", path)
	}
	return out
}

// ---------------------------------------------------------------- forwarder

// Who held the socket that connected to the forwarder.
const (
	ownerSelf    = "this test process (direct)"
	ownerSSHD    = "sshd"
	ownerUnknown = "unknown"
	// ownerVanished: the peer closed before it could be attributed (sshd
	// killed by a restart as it opened the channel). Nothing was forwarded.
	ownerVanished = "closed before it could be attributed"
)

// cpForwarder listens on a loopback port standing for the control-plane
// database and forwards connections made by sshd to it. Every accepted
// connection is attributed to the process holding its other end; anything
// but sshd is counted and closed without being forwarded.
type cpForwarder struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	owners map[string]int // owner → connections accepted
	conns  map[net.Conn]struct{}
	closed bool
}

func startCPForwarder(t *testing.T, target string) *cpForwarder {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &cpForwarder{t: t, ln: ln, target: target, owners: map[string]int{}, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	wg.Go(func() { f.serve(&wg) })
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		f.closed = true
		for c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *cpForwarder) addr() string { return f.ln.Addr().String() }
func (f *cpForwarder) host() string { return f.ln.Addr().(*net.TCPAddr).IP.String() }
func (f *cpForwarder) port() int    { return f.ln.Addr().(*net.TCPAddr).Port }

func (f *cpForwarder) serve(wg *sync.WaitGroup) {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		// Attribute the connection before anything is sent back: the
		// client is still waiting for PostgreSQL's answer, so its socket
		// is certainly open.
		owner := socketOwner(c.RemoteAddr().(*net.TCPAddr), c.LocalAddr().(*net.TCPAddr))
		if owner == ownerUnknown && peerClosed(c) {
			owner = ownerVanished
		}
		f.mu.Lock()
		f.owners[owner]++
		if owner != ownerSSHD && owner != ownerVanished && f.owners[owner] == 1 {
			f.t.Errorf("the control-plane address %s accepted a connection from %s, not through the bastion (refused)", f.addr(), owner)
		}
		if owner != ownerSSHD || f.closed {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[c] = struct{}{}
		f.mu.Unlock()
		wg.Go(func() { f.forward(c) })
	}
}

func (f *cpForwarder) forward(c net.Conn) {
	defer f.drop(c)
	up, err := net.Dial("tcp", f.target)
	if err != nil {
		return
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		up.Close()
		return
	}
	f.conns[up] = struct{}{}
	f.mu.Unlock()
	defer f.drop(up)
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (f *cpForwarder) drop(c net.Conn) {
	c.Close()
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
}

func (f *cpForwarder) count(owner string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owners[owner]
}

func (f *cpForwarder) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.owners {
		n += c
	}
	return n
}

// notViaSSHD counts connections from anyone but sshd and this process
// (vanished ones excepted).
func (f *cpForwarder) notViaSSHD() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for o, c := range f.owners {
		if o != ownerSSHD && o != ownerSelf && o != ownerVanished {
			n += c
		}
	}
	return n
}

func (f *cpForwarder) summary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("%s → %s, connections by origin: %v", f.addr(), f.target, f.owners)
}

// socketOwner names the process holding the TCP socket whose local address
// is client and whose peer is server: ownerSelf for this process,
// ownerSSHD for an sshd process (sshd, sshd-session), "pid N (comm)" for
// another, ownerUnknown if it cannot be found.
func socketOwner(client, server *net.TCPAddr) string {
	inode, ok := socketInode(client, server)
	if !ok {
		return ownerUnknown
	}
	link := fmt.Sprintf("socket:[%d]", inode)
	self := os.Getpid()
	if holdsSocket(self, link) {
		return ownerSelf
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return ownerUnknown
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || !holdsSocket(pid, link) {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		name := strings.TrimSpace(string(comm))
		if name == "sshd" || strings.HasPrefix(name, "sshd-") {
			return ownerSSHD
		}
		return fmt.Sprintf("pid %d (%s)", pid, name)
	}
	return ownerUnknown
}

// peerClosed reports whether the other end of c has already closed it.
func peerClosed(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	for {
		_, err := c.Read(make([]byte, 512))
		if err != nil {
			return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)
		}
	}
}

// socketInode finds the inode of the TCP socket local→remote in
// /proc/net/tcp (or tcp6, as a v4-mapped address).
func socketInode(local, remote *net.TCPAddr) (uint64, bool) {
	hex4 := func(a *net.TCPAddr) string {
		ip := a.IP.To4()
		if ip == nil {
			return ""
		}
		// The kernel prints the address as a native-endian integer.
		return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(ip), a.Port)
	}
	l, r := hex4(local), hex4(remote)
	if l == "" || r == "" {
		return 0, false
	}
	const mapped = "0000000000000000FFFF0000"
	for _, file := range []struct{ path, prefix string }{{"/proc/net/tcp", ""}, {"/proc/net/tcp6", mapped}} {
		fh, err := os.Open(file.path)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[1] != file.prefix+l || fields[2] != file.prefix+r {
				continue
			}
			inode, err := strconv.ParseUint(fields[9], 10, 64)
			if err == nil && inode != 0 {
				fh.Close()
				return inode, true
			}
		}
		fh.Close()
	}
	return 0, false
}

// holdsSocket reports whether process pid has an fd open on link
// ("socket:[inode]").
func holdsSocket(pid int, link string) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == link {
			return true
		}
	}
	return false
}
