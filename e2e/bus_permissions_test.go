package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/internal/testworld"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/ctl"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// accountsServer is a JetStream server configured with docs/nats-accounts.conf
// (plus an unrestricted user "admin" in the pipeline's account, for the test
// harness), collecting the permission violations it logs.
type accountsServer struct {
	srv        *server.Server
	mu         sync.Mutex
	violations []string
}

func startAccountsServer(t *testing.T) *accountsServer {
	t.Helper()
	conf, err := os.ReadFile("../docs/nats-accounts.conf")
	if err != nil {
		t.Fatal(err)
	}
	const users = "    users: [\n"
	if !bytes.Contains(conf, []byte(users)) {
		t.Fatal("docs/nats-accounts.conf: no users list to add the harness's user to")
	}
	conf = bytes.Replace(conf, []byte(users), []byte(users+"      {user: admin, password: admin}\n"), 1)
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"ANALYZER", "MARKER", "CLEANER", "TENANTCTL", "OPS"} {
		t.Setenv(user+"_PASSWORD", strings.ToLower(user)+"-secret")
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("docs/nats-accounts.conf: %v", err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir = "127.0.0.1", -1, true, t.TempDir()
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	a := &accountsServer{srv: s}
	s.SetLoggerV2(a, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return a
}

// url is the server's address with user's credentials.
func (a *accountsServer) url(user string) string {
	password := "admin"
	if user != "admin" {
		password = user + "-secret"
	}
	return strings.Replace(a.srv.ClientURL(), "nats://", "nats://"+user+":"+password+"@", 1)
}

func (a *accountsServer) Noticef(string, ...any) {}
func (a *accountsServer) Warnf(string, ...any)   {}
func (a *accountsServer) Fatalf(string, ...any)  {}
func (a *accountsServer) Debugf(string, ...any)  {}
func (a *accountsServer) Tracef(string, ...any)  {}
func (a *accountsServer) Errorf(format string, v ...any) {
	line := fmt.Sprintf(format, v...)
	if strings.Contains(line, "Violation") {
		a.mu.Lock()
		a.violations = append(a.violations, line)
		a.mu.Unlock()
	}
}

func (a *accountsServer) violationsBy(user string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, v := range a.violations {
		if strings.Contains(v, fmt.Sprintf("/user:%s\"", user)) {
			out = append(out, v)
		}
	}
	return out
}

// TestBusPermissions runs the pipeline with docs/nats-accounts.conf: the
// analyzer, marker, cleaner and tenantctl do all their work within their
// permissions, and a requester (account REQUESTERS) can request a cleanup
// and nothing else: its reply subjects, trace destinations and direct
// publishes never reach a drain check, a schedule, the state, the
// events or the JetStream API of the pipeline's account; a hold placed
// with tenantctl stays.
func TestBusPermissions(t *testing.T) {
	a := startAccountsServer(t)
	w := newWorldWith(t, testworld.Options{NATSURL: a.url("admin")})
	w.SetCheckDelay(2 * time.Second)
	ids := w.fleet(3, 2, "9")
	held := ids[2]
	w.startServed(func(m *config.Marker, c *config.Cleaner) { m.NATSURL, c.NATSURL = a.url("marker"), a.url("cleaner") })

	// tenantctl holds one tenant; the analyzer publishes all three.
	w.setenv()
	t.Setenv("NATS_URL", a.url("tenantctl"))
	var stdout, stderr bytes.Buffer
	if code := ctl.Main([]string{"hold", held, "--reason", "legal"}, &stdout, &stderr); code != 0 {
		t.Fatalf("tenantctl hold: exit %d: %s", code, stderr.String())
	}
	control := controlplane.New(w.DBs.Control)
	holdBefore, found, err := control.Hold(context.Background(), tenant.ID(held))
	if err != nil || !found {
		t.Fatalf("hold of %s: %v, %v", held, found, err)
	}
	w.Analyzer.NATSURL = a.url("analyzer")
	if out := w.analyze(); !strings.Contains(out, "published 3 candidates") {
		t.Fatalf("analyzer pass:\n%s", out)
	}
	for _, id := range ids[:2] {
		w.WaitFor(id, tenant.OutcomeMarked, 30*time.Second)
	}
	w.WaitFor(held, tenant.OutcomeHeld, 30*time.Second)

	// The requester's hostile messages, while drain checks are pending.
	ops, err := nats.Connect(a.url("ops"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	internal := []string{bus.DrainSubject(tenant.ID(held)), bus.ScheduleSubject(tenant.ID(ids[0])),
		"$KV." + bus.BucketState + ".hold." + held, "$KV." + bus.BucketState + ".tenant." + ids[0],
		bus.EventSubject(tenant.OutcomeCleaned), "tenant.cleanup.dead.marker", bus.SubjectCandidate,
		"$JS.API.STREAM.PURGE." + bus.StreamWork, "$JS.API.STREAM.DELETE." + bus.StreamRequests,
		"$JS.API.CONSUMER.DELETE." + bus.StreamWork + "." + bus.ConsumerCleaner}
	forged, _ := json.Marshal(map[string]any{"tenant_id": held, "attempt": 1, "marked_at": time.Now().Add(-30 * 24 * time.Hour)})
	for _, subj := range internal {
		// The acknowledgement aimed at an internal subject.
		if err := ops.PublishMsg(&nats.Msg{Subject: bus.SubjectCandidate, Reply: subj, Data: []byte("tenant_dev")}); err != nil {
			t.Fatal(err)
		}
		// A trace of the request aimed at it.
		m := &nats.Msg{Subject: bus.SubjectCandidate, Data: []byte("tenant_dev"), Header: nats.Header{}}
		m.Header.Set("Nats-Trace-Dest", subj)
		if err := ops.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		// Straight to it.
		if err := ops.Publish(subj, forged); err != nil {
			t.Fatal(err)
		}
	}
	m := &nats.Msg{Subject: bus.SubjectCandidate, Data: []byte("tenant_dev"), Header: nats.Header{"Nats-Rollup": {"all"}}}
	if err := ops.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	// A JetStream publish through the import: acknowledged to the requester.
	opsJS, err := jetstream.New(ops)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := opsJS.Publish(context.Background(), bus.SubjectCandidate, []byte("tenant_dev")); err != nil {
		t.Fatalf("the requester's JetStream publish: %v", err)
	}
	if err := ops.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() bool { return len(a.violationsBy("ops")) >= len(internal)-1 },
		"the requester's direct publishes refused (%d violations)", len(a.violationsBy("ops")))

	// Nothing of the pipeline's changed but the requests.
	testenv.Eventually(t, 20*time.Second, w.WorkDone, "requests handled")
	holdAfter, found, err := control.Hold(context.Background(), tenant.ID(held))
	if err != nil || !found || holdAfter != holdBefore {
		t.Fatalf("hold of %s after the hostile messages: %+v, %v, %v; was %+v", held, holdAfter, found, err, holdBefore)
	}
	states, err := w.Bus.States(context.Background())
	if err != nil || len(states) == 0 {
		t.Fatalf("states: %v, %v", states, err)
	}
	for _, s := range states {
		if s.ID == "" || s.Phase == "" {
			t.Errorf("a tenant state was overwritten: %+v", s)
		}
	}
	work, err := w.Bus.JetStream().Stream(context.Background(), bus.StreamWork)
	if err != nil {
		t.Fatal(err)
	}
	info, err := work.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		if !strings.HasSuffix(subj, ids[0]) && !strings.HasSuffix(subj, ids[1]) {
			t.Errorf("work stream holds %s", subj)
		}
	}
	if len(info.State.Subjects) == 0 {
		t.Error("the pending drain checks are gone")
	}
	for _, ev := range w.EventsWith(tenant.OutcomeCleaned) {
		t.Errorf("cleaned event before any tenant drained: %+v", ev)
	}
	if dead, err := w.Bus.DeadLetters(context.Background()); err != nil || len(dead) != 0 {
		t.Errorf("dead letters: %+v, %v", dead, err)
	}

	// The requester's plain request works, so does tenantctl's, and the
	// pipeline finishes.
	extra := w.fleet(2, 2, "8")
	all := append(extra, ids[:2]...)
	w.DrainTenants(true, all...)
	if err := ops.Publish(bus.SubjectCandidate, []byte(extra[0])); err != nil {
		t.Fatal(err)
	}
	t.Setenv("NATS_URL", a.url("tenantctl"))
	stdout.Reset()
	stderr.Reset()
	if code := ctl.Main([]string{"cleanup", "--wait", extra[1]}, &stdout, &stderr); code != 0 {
		t.Errorf("tenantctl cleanup --wait: exit %d: %s%s", code, stdout.String(), stderr.String())
	}
	for _, id := range all {
		w.WaitFor(id, tenant.OutcomeCleaned, 60*time.Second)
		w.AssertCleaned(id)
	}
	if w.DBs.SchemaExists(t, held) != true {
		t.Errorf("the held tenant %s was cleaned", held)
	}

	// tenantctl reads what it shows within its permissions.
	for _, args := range [][]string{{"status"}, {"status", ids[0]}, {"dead", "list"}, {"unhold", held}} {
		stdout.Reset()
		stderr.Reset()
		if code := ctl.Main(args, &stdout, &stderr); code != 0 {
			t.Errorf("tenantctl %s: exit %d: %s", strings.Join(args, " "), code, stderr.String())
		}
	}
	for _, user := range []string{"analyzer", "marker", "cleaner", "tenantctl"} {
		for _, v := range a.violationsBy(user) {
			t.Errorf("%s lacks a permission: %s", user, v)
		}
	}
	t.Logf("the requester's refused publishes: %d", len(a.violationsBy("ops")))
}
