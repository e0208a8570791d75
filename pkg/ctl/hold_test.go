package ctl

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

func TestHoldKeepsATenantUntilUnhold(t *testing.T) {
	w := newWorld(t)
	w.gated(idA, 1, 5)
	w.gated(idB, 1, 5)
	w.drain(idA, idB)
	w.startServices()

	// Flags after the id; the hold names who placed it.
	t.Setenv("TENANTCTL_AS", "ops@vm")
	stdout, _ := mustRun(t, 0, "hold", idA, "--reason", "legal review")
	contains(t, "hold", stdout, "held "+idA+" until tenantctl unhold "+idA+": legal review (by tenantctl:ops@")
	h, found, err := controlplane.New(w.dbs.Control).Hold(context.Background(), idA)
	if err != nil || !found || h.Reason != "legal review" || h.Until != nil || h.By[:14] != "tenantctl:ops@" {
		t.Fatalf("hold = %+v, %v, %v", h, found, err)
	}

	// A cleanup request is refused as held, and nothing is touched.
	before := w.dbs.Fingerprint(t, idA)
	stdout, _ = mustRun(t, 1, "cleanup", "--wait", idA)
	if lineWith(stdout, idA, "held", "held by tenantctl:ops@", "legal review") == "" {
		t.Errorf("cleanup of a held tenant:\n%s", stdout)
	}
	if w.dbs.Fingerprint(t, idA) != before {
		t.Errorf("the held tenant was changed")
	}
	stdout, _ = mustRun(t, 0, "status", idA)
	contains(t, "status of a held tenant", stdout, "phase         held by tenantctl:ops@", "active until tenantctl unhold")

	// Unhold, then the same request cleans it.
	stdout, _ = mustRun(t, 0, "unhold", idA)
	contains(t, "unhold", stdout, "lifted the hold on "+idA+" (active, held by tenantctl:ops@")
	_, stderr := mustRun(t, 1, "unhold", idA)
	contains(t, "second unhold", stderr, idA+" has no hold")
	mustRun(t, 0, "cleanup", "--wait", idA)
	if !w.inLedger(idA) {
		t.Errorf("%s not cleaned after unhold", idA)
	}

	// A hold with --until expires by itself.
	stdout, _ = mustRun(t, 0, "hold", "--until", "2s", idB, "--reason", "brief")
	contains(t, "hold --until", stdout, "held "+idB+" until 20", "(in 2s): brief")
	h, _, _ = controlplane.New(w.dbs.Control).Hold(context.Background(), idB)
	testenv.Eventually(t, 10*time.Second, func() bool { return time.Now().After(*h.Until) }, "the hold expires")
	stdout, _ = mustRun(t, 0, "status", "--json")
	var v fleetView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || len(v.Holds) != 1 || v.Holds[0].ID != idB || v.Holds[0].Active {
		t.Fatalf("holds after expiry = %+v, %v", v.Holds, err)
	}
	mustRun(t, 0, "cleanup", "--wait", idB)
	stdout, _ = mustRun(t, 0, "status", idB)
	contains(t, "status after an expired hold", stdout, "cleaned at", "; expired ")

	// Usage errors: no reason, a past or malformed --until, an invalid id.
	_, stderr = mustRun(t, 2, "hold", idB)
	contains(t, "hold without --reason", stderr, "--reason is required")
	_, stderr = mustRun(t, 2, "hold", idB, "--reason", "x", "--until", "2020-01-01")
	contains(t, "hold until the past", stderr, "2020-01-02T00:00:00Z is not in the future")
	_, stderr = mustRun(t, 2, "hold", idB, "--reason", "x", "--until", "soon")
	contains(t, "hold until soon", stderr, `"soon" is not an RFC 3339 time`)
	_, stderr = mustRun(t, 2, "hold", "public", "--reason", "x")
	contains(t, "hold public", stderr, `invalid tenant id "public"`)
	mustRun(t, 2, "unhold", "pg_catalog")
}

func TestParseUntil(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"2026-12-01T09:00:00Z":      "2026-12-01T09:00:00Z",
		"2026-12-01T10:00:00+01:00": "2026-12-01T09:00:00Z",
		"2026-12-01":                "2026-12-02T00:00:00Z", // through that day, UTC
		"2026-11-26":                "2026-11-27T00:00:00Z", // today: until midnight
		"72h":                       "2026-11-29T12:00:00Z",
		"90m":                       "2026-11-26T13:30:00Z",
	} {
		got, err := parseUntil(in, now)
		if err != nil || got.Format(time.RFC3339) != want {
			t.Errorf("parseUntil(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"2026-11-25", "-1h", "0s", "2026-11-26T11:59:59Z", "tomorrow", "12/01/2026"} {
		if got, err := parseUntil(in, now); err == nil {
			t.Errorf("parseUntil(%q) = %v; want an error", in, got)
		}
	}
}
