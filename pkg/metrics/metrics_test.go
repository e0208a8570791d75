package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tenantcleanup/tenant-cleanup/pkg/metrics"
)

// server runs ServeListener on 127.0.0.1:0 until the test ends and returns
// its base URL and a function that stops it and returns Serve's result.
func server(t *testing.T, m *metrics.Metrics, ready func(context.Context) error) (string, func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- metrics.ServeListener(ctx, ln, m, ready, slog.New(slog.DiscardHandler)) }()
	var once sync.Once
	var result error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				result = errors.New("Serve did not return within 10s of cancel")
			}
		})
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return "http://" + ln.Addr().String(), stop
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches /metrics and parses the text exposition.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, base+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the metric of family name whose labels include want.
func find(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("metric family %s missing", name)
	}
	for _, m := range f.GetMetric() {
		got := labels(m)
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
			}
		}
		if match {
			return m
		}
	}
	t.Fatalf("%s has no series with labels %v", name, want)
	return nil
}

func TestExposition(t *testing.T) {
	m := metrics.New("cleaner")
	m.Outcome("cleaned")
	m.Outcome("cleaned")
	m.Outcome("refused")
	m.DrainCheck("drained")
	m.DrainCheck("not_drained")
	m.DrainCheck("not_drained")
	m.ObserveStep("drop", 1500*time.Millisecond)
	m.ObserveStep("drop", 3*time.Millisecond)
	m.SetShards([]string{"default", "b"}) // a sharded cleaner: every name of Names is exposed
	m.ObserveShardStep("drop_schema", "b", time.Second)
	m.SetPhases(map[string]int{"draining": 4}, map[string]time.Duration{"draining": 90 * time.Minute})
	m.SetPace("default", 0, 1, "probe", []string{"none", "probe", "commit"})
	m.StoreRemoved("s3", "objects", 1000)
	m.StoreRemoved("s3", "bytes", 4096)
	m.StoreRemoved("redis", "keys", 0) // nothing removed: no series
	m.StoreFailed("redis")
	base, _ := server(t, m, nil)
	fams := scrape(t, base)

	types := map[string]dto.MetricType{
		metrics.TenantsTotal:             dto.MetricType_COUNTER,
		metrics.DrainChecksTotal:         dto.MetricType_COUNTER,
		metrics.StepDurationSeconds:      dto.MetricType_HISTOGRAM,
		metrics.ShardStepDurationSeconds: dto.MetricType_HISTOGRAM,
		metrics.TenantsInPhase:           dto.MetricType_GAUGE,
		metrics.OldestTenantAgeSeconds:   dto.MetricType_GAUGE,
		metrics.Ready:                    dto.MetricType_GAUGE,
		metrics.PaceLimit:                dto.MetricType_GAUGE,
		metrics.PaceInFlight:             dto.MetricType_GAUGE,
		metrics.PaceThrottled:            dto.MetricType_GAUGE,
		metrics.StoreRemovedTotal:        dto.MetricType_COUNTER,
		metrics.StoreFailuresTotal:       dto.MetricType_COUNTER,
		metrics.EventsTotal:              dto.MetricType_COUNTER,
		metrics.BuildInfo:                dto.MetricType_GAUGE,
		// The analyzer's only (TestAnalyzerPassMetrics).
		metrics.AnalyzerPassDurationSeconds:  dto.MetricType_HISTOGRAM,
		metrics.AnalyzerTenantsSeen:          dto.MetricType_GAUGE,
		metrics.AnalyzerCandidates:           dto.MetricType_GAUGE,
		metrics.AnalyzerLastSuccessTimestamp: dto.MetricType_GAUGE,
		metrics.AnalyzerPassFailuresTotal:    dto.MetricType_COUNTER,
	}
	if len(types) != len(metrics.Names()) {
		t.Fatalf("Names() = %v: update this test", metrics.Names())
	}
	for _, name := range metrics.Names() {
		if !strings.HasPrefix(name, "tenant_cleanup_") {
			t.Errorf("%s: not prefixed tenant_cleanup_", name)
		}
		f, ok := fams[name]
		if !ok && strings.HasPrefix(name, "tenant_cleanup_analyzer_") {
			continue // the analyzer's only
		}
		if !ok {
			t.Errorf("%s missing from /metrics", name)
			continue
		}
		if f.GetType() != types[name] {
			t.Errorf("%s: type %v, want %v", name, f.GetType(), types[name])
		}
		if f.GetHelp() == "" {
			t.Errorf("%s: no help text", name)
		}
		for _, s := range f.GetMetric() {
			if got := labels(s)["component"]; got != "cleaner" {
				t.Errorf("%s%v: service label %q, want cleaner", name, labels(s), got)
			}
		}
	}
	// Every tenant_cleanup_ family exposed is one Names lists.
	for name := range fams {
		if strings.HasPrefix(name, "tenant_cleanup_") && !slices.Contains(metrics.Names(), name) {
			t.Errorf("%s exposed but not in Names()", name)
		}
	}
	// The Go and process collectors are there, with the service label too.
	if g := find(t, fams, "go_goroutines", map[string]string{"component": "cleaner"}); g.GetGauge().GetValue() < 1 {
		t.Errorf("go_goroutines = %v", g.GetGauge().GetValue())
	}

	if v := find(t, fams, metrics.PaceThrottled, map[string]string{"shard": "default", "reason": "probe"}).GetGauge().GetValue(); v != 1 {
		t.Errorf("pace throttled by probe = %v, want 1", v)
	}
	if v := find(t, fams, metrics.PaceThrottled, map[string]string{"shard": "default", "reason": "none"}).GetGauge().GetValue(); v != 0 {
		t.Errorf("pace throttled, none = %v, want 0", v)
	}
	if v := find(t, fams, metrics.PaceInFlight, map[string]string{"shard": "default"}).GetGauge().GetValue(); v != 1 {
		t.Errorf("pace in flight = %v, want 1", v)
	}
	if v := find(t, fams, metrics.StoreRemovedTotal, map[string]string{"store": "s3", "unit": "objects"}).GetCounter().GetValue(); v != 1000 {
		t.Errorf("s3 objects removed = %v, want 1000", v)
	}
	if v := find(t, fams, metrics.StoreFailuresTotal, map[string]string{"store": "redis"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("redis failures = %v, want 1", v)
	}
	for _, s := range fams[metrics.StoreRemovedTotal].GetMetric() {
		if labels(s)["store"] == "redis" {
			t.Errorf("a removal of nothing made a series: %v", labels(s))
		}
	}
	if v := find(t, fams, metrics.TenantsTotal, map[string]string{"outcome": "cleaned"}).GetCounter().GetValue(); v != 2 {
		t.Errorf("cleaned = %v, want 2", v)
	}
	if v := find(t, fams, metrics.TenantsTotal, map[string]string{"outcome": "refused"}).GetCounter().GetValue(); v != 1 {
		t.Errorf("refused = %v, want 1", v)
	}
	want := map[string]float64{"drained": 1, "not_drained": 2, "stuck": 0, "refused": 0, "error": 0}
	for res, n := range want {
		if v := find(t, fams, metrics.DrainChecksTotal, map[string]string{"result": res}).GetCounter().GetValue(); v != n {
			t.Errorf("drain checks %s = %v, want %v", res, v, n)
		}
	}

	h := find(t, fams, metrics.StepDurationSeconds, map[string]string{"step": "drop"}).GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 1.502 || h.GetSampleSum() > 1.504 {
		t.Errorf("drop histogram: count %d sum %v, want 2 and 1.503", h.GetSampleCount(), h.GetSampleSum())
	}
	b := h.GetBucket()
	if n := len(b); n > 0 && math.IsInf(b[n-1].GetUpperBound(), +1) {
		b = b[:n-1] // the text format lists +Inf explicitly
	}
	if len(b) == 0 || b[0].GetUpperBound() != 0.001 || b[len(b)-1].GetUpperBound() != 600 {
		t.Fatalf("buckets %v: want 1ms to 10min", b)
	}
	for _, bk := range b {
		var wantN uint64
		switch {
		case bk.GetUpperBound() >= 2.5:
			wantN = 2
		case bk.GetUpperBound() >= 0.005:
			wantN = 1
		}
		if bk.GetCumulativeCount() != wantN {
			t.Errorf("bucket le=%v: %d, want %d", bk.GetUpperBound(), bk.GetCumulativeCount(), wantN)
		}
	}

	if v := find(t, fams, metrics.TenantsInPhase, map[string]string{"phase": "draining"}).GetGauge().GetValue(); v != 4 {
		t.Errorf("in phase draining = %v, want 4", v)
	}
	if v := find(t, fams, metrics.OldestTenantAgeSeconds, map[string]string{"phase": "draining"}).GetGauge().GetValue(); v != 5400 {
		t.Errorf("oldest draining = %v, want 5400", v)
	}
}

// gauge reads one gauge series straight from the registry.
func gauge(t *testing.T, m *metrics.Metrics, name, phase string) (float64, bool) {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, s := range f.GetMetric() {
			if phase == "" || labels(s)["phase"] == phase {
				return s.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestSetPhasesResetsMissingPhases(t *testing.T) {
	m := metrics.New("marker")
	m.SetPhases(
		map[string]int{"marked": 3, "draining": 2, "stuck": 1},
		map[string]time.Duration{"marked": time.Hour, "draining": 2 * time.Minute, "stuck": 200 * time.Hour},
	)
	m.SetPhases(map[string]int{"draining": 5}, map[string]time.Duration{"draining": 30 * time.Second})
	for _, c := range []struct {
		phase      string
		count, age float64
		present    bool
	}{
		{"marked", 0, 0, true},
		{"stuck", 0, 0, true},
		{"draining", 5, 30, true},
		{"cleaned", 0, 0, false},
	} {
		n, ok := gauge(t, m, metrics.TenantsInPhase, c.phase)
		if ok != c.present || n != c.count {
			t.Errorf("in phase %s = %v (present %v), want %v (present %v)", c.phase, n, ok, c.count, c.present)
		}
		a, ok := gauge(t, m, metrics.OldestTenantAgeSeconds, c.phase)
		if ok != c.present || a != c.age {
			t.Errorf("oldest %s = %v (present %v), want %v (present %v)", c.phase, a, ok, c.age, c.present)
		}
	}
	// Both maps empty: everything seen so far is 0.
	m.SetPhases(nil, nil)
	if n, _ := gauge(t, m, metrics.TenantsInPhase, "draining"); n != 0 {
		t.Errorf("after SetPhases(nil, nil), draining = %v, want 0", n)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	m := metrics.New("analyzer")
	var failure atomic.Pointer[error]
	ready := func(ctx context.Context) error {
		if e := failure.Load(); e != nil {
			return *e
		}
		return nil
	}
	base, _ := server(t, m, ready)

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while ready: %d %q, want 200", code, body)
	}
	if v, _ := gauge(t, m, metrics.Ready, ""); v != 1 {
		t.Errorf("%s = %v after a passing check, want 1", metrics.Ready, v)
	}

	e := errors.New(`control plane: failed to connect to postgres://cleanup:s3cr3t-pw@db.internal:5432/control: ` +
		`connection refused (password=hunter2 sslmode=disable)`)
	failure.Store(&e)
	code, body := get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while not ready: %d, want 503", code)
	}
	if !strings.Contains(body, "connection refused") || !strings.Contains(body, "db.internal") {
		t.Errorf("/readyz body %q does not say why", body)
	}
	for _, secret := range []string{"s3cr3t-pw", "hunter2"} {
		if strings.Contains(body, secret) {
			t.Errorf("/readyz body %q leaks %q", body, secret)
		}
	}
	if v, _ := gauge(t, m, metrics.Ready, ""); v != 0 {
		t.Errorf("%s = %v after a failing check, want 0", metrics.Ready, v)
	}
	// /healthz does not depend on readiness.
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while not ready: %d, want 200", code)
	}

	failure.Store(nil)
	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after recovery: %d, want 200", code)
	}
}

func TestReadinessTimesOut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	// A ready func that ignores its context: /readyz still answers.
	base, _ := server(t, metrics.New("cleaner"), func(context.Context) error { <-release; return nil })
	start := time.Now()
	code, body := get(t, base+"/readyz")
	if took := time.Since(start); took > metrics.ReadyTimeout+time.Second {
		t.Errorf("/readyz took %s, want about %s", took, metrics.ReadyTimeout)
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "did not answer") {
		t.Errorf("/readyz with a hung check: %d %q, want 503", code, body)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	base, stop := server(t, metrics.New("marker"), nil)
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("Serve after cancel: %v, want nil", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Serve took %s to stop", took)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("server still answers after Serve returned")
	}
}

func TestServeAddr(t *testing.T) {
	// An empty address is "HTTP off": nil at once.
	if err := metrics.Serve(context.Background(), "", nil, nil, nil); err != nil {
		t.Errorf(`Serve(""): %v, want nil`, err)
	}
	// A port already taken is an error at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() { errc <- metrics.Serve(context.Background(), ln.Addr().String(), metrics.New("x"), nil, nil) }()
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) {
			t.Errorf("Serve on a taken port: %v, want an error naming the address", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve on a taken port did not return")
	}
	// Serve itself (not only ServeListener) stops on cancel.
	ctx, cancel := context.WithCancel(context.Background())
	go func() { errc <- metrics.Serve(ctx, "127.0.0.1:0", metrics.New("x"), nil, nil) }()
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop on cancel")
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *metrics.Metrics
	m.Outcome("cleaned")
	m.DrainCheck("drained")
	m.ObserveStep("drop", time.Second)
	m.SetPhases(map[string]int{"marked": 1}, nil)
	base, _ := server(t, m, nil)
	if code, _ := get(t, base+"/metrics"); code != http.StatusOK {
		t.Errorf("/metrics of nil Metrics: %d", code)
	}
}

func TestSeparateRegistries(t *testing.T) {
	// Two services in one process (tests, the demo) do not collide.
	a, b := metrics.New("marker"), metrics.New("cleaner")
	a.Outcome("marked")
	fams, err := b.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != metrics.TenantsTotal {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetCounter().GetValue() != 0 {
				t.Errorf("cleaner's registry has marker's %s", f.GetName())
			}
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"dial postgres://u:p%40ss@h:5432/db: refused": "dial postgres://REDACTED@h:5432/db: refused",
		"nats: nats://tok@nats:4222 unreachable":      "nats: nats://REDACTED@nats:4222 unreachable",
		"host=h user=u password=abc dbname=x":         "host=h user=u password=REDACTED dbname=x",
		`passphrase: "two words" wrong`:               "passphrase: REDACTED wrong",
		"plain error":                                 "plain error",
	} {
		if got := metrics.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := metrics.Redact(strings.Repeat("é", 1000)); len(got) > 520 || !strings.HasSuffix(got, "…") {
		t.Errorf("Redact of a long text: %d bytes", len(got))
	}
}

// tenants_total counts tenants (final outcomes and marking), not the
// progress reports; the analyzer's passes and the build are exported.
func TestTenantsNotEvents(t *testing.T) {
	m := metrics.New("analyzer")
	for range 5 {
		m.Outcome("draining")
	}
	m.Outcome("marked")
	m.Outcome("cleaned")
	m.AnalyzerPass(2*time.Second, true, 40, 7, time.Unix(1700000000, 0))
	m.AnalyzerPass(time.Second, false, 0, 0, time.Time{})
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			key := f.GetName()
			for _, l := range s.GetLabel() {
				if l.GetName() == "outcome" {
					key += "/" + l.GetValue()
				}
				if l.GetName() == "service" {
					t.Errorf("%s has a label named service", f.GetName())
				}
			}
			got[key] = s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
		}
	}
	for key, want := range map[string]float64{
		metrics.TenantsTotal + "/draining": 0, metrics.TenantsTotal + "/marked": 1, metrics.TenantsTotal + "/cleaned": 1,
		metrics.EventsTotal + "/draining": 5, metrics.AnalyzerTenantsSeen: 40, metrics.AnalyzerCandidates: 7,
		metrics.AnalyzerLastSuccessTimestamp: 1700000000, metrics.AnalyzerPassFailuresTotal: 1,
		metrics.AnalyzerPassDurationSeconds: 2, metrics.BuildInfo: 1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
