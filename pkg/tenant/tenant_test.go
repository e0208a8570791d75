package tenant

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseID(t *testing.T) {
	valid := []string{
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745",
		"tenant_i-0123456789abcdef",
		"tenant_dev",
	}
	for _, s := range valid {
		id, err := ParseID(s)
		if err != nil || id.String() != s {
			t.Errorf("ParseID(%q) = %q, %v; want it accepted", s, id, err)
		}
	}
	invalid := []string{
		"", "public", "pg_catalog", "information_schema", "fixture", "tenant_cleanup",
		"tenant_0AEF62E7-9FBF-4BB6-8894-F1441FCA6745",  // upper case
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745 ", // trailing space
		" tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745", // leading space
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745\n",
		`tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"; DROP SCHEMA public CASCADE; --`,
		"tenant_0aef62e7'; DROP SCHEMA public CASCADE; --",
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca674",   // short uuid
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca67455", // long uuid
		"tenant_0aef62e79fbf4bb68894f1441fca6745",      // uuid without dashes
		"tenant_i-", "tenant_i-XYZ", "tenant_i-0g", "tenant_DEV", "tenant_dev2", "tenant_",
		"tenant_i-" + strings.Repeat("a", 55), // longer than a Postgres identifier
		strings.Repeat("x", 10<<10),
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745.x",
		"tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745\x00",
	}
	for _, s := range invalid {
		id, err := ParseID(s)
		if err == nil || !errors.Is(err, ErrInvalidID) || id != "" {
			t.Errorf("ParseID(%s) = %q, %v; want ErrInvalidID", QuoteInput(s), id, err)
		}
		if len(err.Error()) > 300 {
			t.Errorf("error for %d-byte input is %d bytes; it must stay short", len(s), len(err.Error()))
		}
	}
}

func TestParseRequest(t *testing.T) {
	const id = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"
	tests := []struct {
		body    string
		want    ID
		by      string
		wantErr bool
	}{
		{body: id, want: id, by: "nats"},
		{body: `{"tenant_id":"` + id + `","requested_by":"ops"}`, want: id, by: "ops"},
		{body: `{"tenant_id":"public"}`, wantErr: true},
		{body: `{"tenant":"` + id + `"}`, wantErr: true},
		{body: `{not json`, wantErr: true},
		{body: id + " ", wantErr: true},
		{body: "", wantErr: true},
		{body: strings.Repeat("a", 10<<10), wantErr: true},
	}
	for _, tt := range tests {
		req, err := ParseRequest([]byte(tt.body))
		if tt.wantErr {
			if !errors.Is(err, ErrInvalidID) {
				t.Errorf("ParseRequest(%s) error = %v; want ErrInvalidID", QuoteInput(tt.body), err)
			}
			continue
		}
		if err != nil || req.ID != tt.want || req.RequestedBy != tt.by {
			t.Errorf("ParseRequest(%s) = %+v, %v; want %s by %s", QuoteInput(tt.body), req, err, tt.want, tt.by)
		}
	}
}

func TestEligibility(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	window := Window(90)
	old := now.Add(-400 * 24 * time.Hour)
	tests := []struct {
		name string
		f    Facts
		want bool
	}{
		{"gated, queried long ago", Facts{true, StatusGatedAccess, old, now.Add(-200 * 24 * time.Hour), ""}, true},
		{"gated, never active", Facts{true, StatusGatedAccess, old, time.Time{}, ""}, true},
		{"gated, active just outside the window", Facts{true, StatusGatedAccess, old, now.Add(-window - time.Second), ""}, true},
		{"gated, active exactly at the window edge", Facts{true, StatusGatedAccess, old, now.Add(-window), ""}, false},
		{"gated, active recently", Facts{true, StatusGatedAccess, old, now.Add(-24 * time.Hour), ""}, false},
		{"gated, created inside the window", Facts{true, StatusGatedAccess, now.Add(-10 * 24 * time.Hour), time.Time{}, ""}, false},
		{"active status", Facts{true, "ACTIVE", old, time.Time{}, ""}, false},
		{"grace period", Facts{true, "GRACE_PERIOD", old, time.Time{}, ""}, false},
		{"lower-case gated", Facts{true, "gated_access", old, time.Time{}, ""}, false},
		{"no control-plane row", Facts{false, "", time.Time{}, time.Time{}, ""}, false},
		{"a row that cannot be judged", Facts{true, StatusGatedAccess, old, time.Time{}, "created_at is NULL"}, false},
	}
	for _, tt := range tests {
		v := Eligibility(tt.f, now, window)
		if v.Eligible != tt.want {
			t.Errorf("%s: eligible = %v (%s); want %v", tt.name, v.Eligible, v.Reason, tt.want)
		}
		if !v.Eligible && v.Reason == "" {
			t.Errorf("%s: a refusal must carry a reason", tt.name)
		}
	}
}

func TestDrained(t *testing.T) {
	tests := []struct {
		d    Drain
		want bool
	}{
		{Drain{SchemaExists: true, Pairs: 0, Documents: 0}, true},
		{Drain{SchemaExists: true, Pairs: 0, Documents: 5}, true},
		{Drain{SchemaExists: true, Pairs: 0, Documents: 6}, false},
		{Drain{SchemaExists: true, Pairs: 1, Documents: 0}, false},
		{Drain{SchemaExists: false}, true},
	}
	for _, tt := range tests {
		if got := tt.d.Drained(5); got != tt.want {
			t.Errorf("%+v.Drained(5) = %v; want %v", tt.d, got, tt.want)
		}
	}
}

func TestCheckDelay(t *testing.T) {
	base, max := 10*time.Minute, 6*time.Hour
	want := []time.Duration{10 * time.Minute, 20 * time.Minute, 40 * time.Minute, 80 * time.Minute,
		160 * time.Minute, 320 * time.Minute, 6 * time.Hour, 6 * time.Hour}
	for attempt, w := range want {
		if got := CheckDelay(attempt, base, max); got != w {
			t.Errorf("CheckDelay(%d) = %s; want %s", attempt, got, w)
		}
	}
	if got := CheckDelay(0, 0, max); got != 0 {
		t.Errorf("CheckDelay(0, 0) = %s; want 0", got)
	}
	if got := CheckDelay(1, 0, max); got != 2*time.Second {
		t.Errorf("CheckDelay(1, 0) = %s; want 2s", got)
	}
	if got := CheckDelay(1000, base, max); got != max {
		t.Errorf("CheckDelay(1000) = %s; want the cap", got)
	}
}

func TestErrorsClassify(t *testing.T) {
	r := Refuse("tenant_dev", "status is %s", "ACTIVE")
	if !errors.Is(r, ErrRefused) || errors.Is(r, ErrLater) {
		t.Fatalf("Refuse: %v is not classified as refused", r)
	}
	cause := errors.New("lock timeout")
	l := Later(time.Second, "locked", cause)
	if !errors.Is(l, ErrLater) || !errors.Is(l, cause) || errors.Is(l, ErrRefused) {
		t.Fatalf("Later: %v is not classified as later", l)
	}
}

func TestStateApply(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	var s State
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeRequested, RequestedBy: "ops", Time: at(0)})
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeRefused, Reason: "active", Time: at(2)})
	// The request's own record arriving after the marker's answer changes nothing.
	if got := s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeRequested, Time: at(1)}); got.Phase != PhaseRefused {
		t.Fatalf("a request older than the refusal moved the tenant to %s", got.Phase)
	}
	// A new request after the refusal does.
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeRequested, Time: at(3)})
	if s.Phase != PhaseRequested || !s.Since.Equal(at(3)) {
		t.Fatalf("a new request: %+v", s)
	}
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeMarked, Time: at(4)})
	if got := s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeRequested, Time: at(5)}); got.Phase != PhaseMarked {
		t.Fatalf("a request moved a marked tenant back to %s", got.Phase)
	}
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeCapped, Time: at(6)})
	if s.Phase != PhaseDraining {
		t.Fatalf("capped: phase %s; want draining", s.Phase)
	}
	s = s.Apply(Event{TenantID: "tenant_dev", Outcome: OutcomeCleaned, Time: at(7)})
	for _, o := range []Outcome{OutcomeRefused, OutcomeRequested, OutcomeMarked} {
		if got := s.Apply(Event{TenantID: "tenant_dev", Outcome: o, Time: at(8)}); got.Phase != PhaseCleaned {
			t.Fatalf("%s after cleaned: phase %s", o, got.Phase)
		}
	}
	if s.CleanedAt == nil || !s.CleanedAt.Equal(at(7)) {
		t.Fatalf("cleaned at %v", s.CleanedAt)
	}
}

func TestCleanText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"ops@vm", "ops@vm"},
		{"a\x00b", "ab"},
		{"red \x1b[31mALERT\x1b[0m", "red [31mALERT[0m"},
		{"  two\t\nlines  ", "two lines"},
		{"bidi \u202egnp.exe", "bidi gnp.exe"},
		{"bad \xff utf8", "bad \uFFFD utf8"},
		{strings.Repeat("é", 150), strings.Repeat("é", 100)}, // 200 bytes, never half a character
	}
	for _, tt := range tests {
		if got := CleanText(tt.in, 200); got != tt.want {
			t.Errorf("CleanText(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
	req, err := ParseRequest([]byte(`{"tenant_id":"tenant_dev","requested_by":"x\u0000y\u001b[2J"}`))
	if err != nil || req.RequestedBy != "xy[2J" {
		t.Fatalf("ParseRequest kept control characters: %q, %v", req.RequestedBy, err)
	}
}

// TestWindowNeverOverflows: no number of days, however large or nonsensical,
// makes the window wrap around; a bigger number never gives a smaller window;
// and under the window of a huge INACTIVE_DAYS (someone "disabling"
// cleanup) a tenant created ten days ago and active yesterday is not
// eligible. INACTIVE_DAYS=1000000 used to overflow into a negative window
// that made every gated tenant eligible.
func TestWindowNeverOverflows(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	recent := Facts{true, StatusGatedAccess, now.Add(-10 * 24 * time.Hour), now.Add(-24 * time.Hour), ""}
	ancient := Facts{true, StatusGatedAccess, time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, ""}
	longest := time.Duration(MaxWindowDays) * 24 * time.Hour
	if longest <= 0 || time.Duration(math.MaxInt64)-longest >= 24*time.Hour {
		t.Fatalf("MaxWindowDays = %d gives %s", MaxWindowDays, longest)
	}
	tests := []struct {
		days int
		want time.Duration
	}{
		{1, 24 * time.Hour},
		{90, 90 * 24 * time.Hour},
		{3650, 3650 * 24 * time.Hour},
		{MaxWindowDays, longest},
		{MaxWindowDays + 1, longest},
		{1000000, longest},
		{math.MaxInt32, longest},
		{math.MaxInt, longest},
		{0, longest},
		{-1, longest},
		{-1000000, longest},
		{math.MinInt, longest},
	}
	prev := time.Duration(0)
	for _, tt := range tests {
		w := Window(tt.days)
		if w != tt.want {
			t.Errorf("Window(%d) = %s; want %s", tt.days, w, tt.want)
		}
		if w <= 0 {
			t.Errorf("Window(%d) = %s: not positive", tt.days, w)
		}
		if tt.days > 0 && w < prev {
			t.Errorf("Window(%d) = %s is shorter than the window of fewer days (%s)", tt.days, w, prev)
		}
		if tt.days > 0 {
			prev = w
		}
		if tt.days < 1 || tt.days > 3650 {
			if v := Eligibility(recent, now, w); v.Eligible {
				t.Errorf("Window(%d): a tenant created ten days ago and active yesterday is eligible", tt.days)
			}
			if v := Eligibility(ancient, now, w); v.Eligible {
				t.Errorf("Window(%d) = %s: a tenant created in 1990 is eligible under a window that cannot be meant", tt.days, w)
			}
		}
	}
}

func TestSpreadsheetSafe(t *testing.T) {
	for in, want := range map[string]string{
		"=HYPERLINK(\"x\")": "'=HYPERLINK(\"x\")", "+1": "'+1", "-1": "'-1", "@SUM(A1)": "'@SUM(A1)", "\tx": "'\tx",
		"tenantctl:ops@vm": "tenantctl:ops@vm", "": "", "GATED_ACCESS": "GATED_ACCESS",
	} {
		if got := SpreadsheetSafe(in); got != want {
			t.Errorf("SpreadsheetSafe(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestCleanRequester(t *testing.T) {
	got := CleanRequester("tenantctl:\x1b]8;;http://evil\x07ops\x1b[31m@" + strings.Repeat("h", 5000))
	if strings.ContainsAny(got, "\x1b\x07") || len(got) > 200 || !strings.HasPrefix(got, "tenantctl:]8;;http://evilops[31m@hhh") {
		t.Fatalf("CleanRequester = %q (%d bytes); want no control characters, at most 200 bytes", got, len(got))
	}
}
