package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

func TestStatusOfOneTenantInEachPhase(t *testing.T) {
	w := newWorld(t)
	w.ensureLedger()
	now := time.Now().UTC()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	next := now.Add(20 * time.Minute)
	docs, pairs := int64(12), int64(1)
	marked := ago(5 * time.Hour)
	for _, ev := range []tenant.Event{
		{TenantID: idA, Outcome: tenant.OutcomeRequested, RequestedBy: "tenantctl:ops@host", Time: ago(3 * time.Hour)},
		{TenantID: idB, Outcome: tenant.OutcomeRequested, RequestedBy: "analyzer", Time: ago(6 * time.Hour)},
		{TenantID: idB, Outcome: tenant.OutcomeMarked, RequestedBy: "analyzer", Time: marked, NextCheckAt: &next, Reason: "1 attempts canceled"},
		{TenantID: idB, Outcome: tenant.OutcomeDraining, RequestedBy: "analyzer", Time: ago(3 * time.Hour), MarkedAt: &marked,
			DocumentsLeft: &docs, PairsLeft: &pairs, NextCheckAt: &next, Reason: "drain check 2: 1 pairs and more than 5 documents left"},
		{TenantID: idC, Outcome: tenant.OutcomeCleaned, RequestedBy: "analyzer", Time: ago(2 * time.Hour), MarkedAt: &marked, Reason: "schema dropped"},
		{TenantID: idD, Outcome: tenant.OutcomeRefused, RequestedBy: "analyzer", Time: ago(time.Hour),
			Reason: `control-plane status is "ACTIVE", not GATED_ACCESS`},
		{TenantID: idE, Outcome: tenant.OutcomeStuck, RequestedBy: "analyzer", Time: ago(48 * time.Hour), MarkedAt: &marked,
			DocumentsLeft: &docs, PairsLeft: &pairs, Reason: "not drained 168h0m0s after marking"},
		{TenantID: idF, Outcome: tenant.OutcomeHeld, RequestedBy: "analyzer", Time: ago(time.Hour), Reason: "held by ops: legal review"},
		{TenantID: idG, Outcome: tenant.OutcomeDead, RequestedBy: "analyzer", Time: ago(time.Hour), Reason: "failed 5 times"},
	} {
		w.report(ev)
	}
	w.placeHold(tenant.Hold{ID: idF, Reason: "legal review", By: "tenantctl:ops@host", At: ago(2 * time.Hour)})
	w.dbs.ExecControl(t, `INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at, requested_by, marked_at, documents_at_marking,
		users_at_marking, schema_existed, relations_dropped, public_rows_deleted, control_rows_deleted, cleaned_by)
		VALUES ($1, $2, 'analyzer', $3, 60, 2, true, 40, 6, '{"tenant": 1, "subscription": 1}', 'cleaner@host/7')`,
		idC, ago(2*time.Hour), marked)
	w.dbs.ExecControl(t, "INSERT INTO tenant_cleanup.ledger (tenant_id, cleaned_at) VALUES ($1, $2)", idH, ago(4*time.Hour))

	for _, tc := range []struct {
		id    string
		wants []string
	}{
		{idA, []string{"requested: waiting for the marker", "since         " + stamp(ago(3*time.Hour)) + " (3h ago)",
			"requested by  tenantctl:ops@host", "hold          none", "ledger        no row"}},
		{idB, []string{"draining: 12 documents and 1 connector-credential pair left; next check " + stamp(next) + " (in 20m)",
			"since         " + stamp(ago(3*time.Hour)) + " (3h ago)", "reason        drain check 2", "requested by  analyzer",
			"marked at     " + stamp(marked) + " (5h ago)", "next check    " + stamp(next)}},
		{idC, []string{"cleaned at " + stamp(ago(2*time.Hour)) + " (2h ago)",
			"ledger        cleaned " + stamp(ago(2*time.Hour)) + " (2h ago) by cleaner@host/7, requested by analyzer; at marking 60 documents, 2 users; 40 relations dropped; 6 public rows deleted; control plane: tenant 1, subscription 1"}},
		{idD, []string{`refused: control-plane status is "ACTIVE", not GATED_ACCESS`, "(1h ago)"}},
		{idH, []string{"cleaned at " + stamp(ago(4*time.Hour)) + " (4h ago), per the ledger", "ledger  cleaned " + stamp(ago(4*time.Hour))}},
		{idE, []string{"stuck since " + stamp(ago(48*time.Hour)) + " (2d ago): 12 documents and 1 connector-credential pair left"}},
		{idF, []string{"phase         held by ops: legal review", "hold          held by tenantctl:ops@host: legal review, placed " +
			stamp(ago(2*time.Hour)) + " (2h ago); active until tenantctl unhold"}},
		{idG, []string{"dead: its message failed too often (tenantctl dead list", "reason        failed 5 times"}},
	} {
		stdout, _ := mustRun(t, 0, "status", tc.id)
		contains(t, "status "+tc.id, stdout, tc.wants...)
		if !strings.HasPrefix(stdout, "tenant  ") || lineWith(stdout, "tenant ", tc.id) == "" {
			t.Errorf("status %s does not start with the tenant:\n%s", tc.id, stdout)
		}
	}

	// --json says the same, for scripts.
	stdout, _ := mustRun(t, 0, "status", idB, "--json")
	var v tenantView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	if !v.Known || v.State == nil || v.State.Phase != tenant.PhaseDraining || *v.State.DocumentsLeft != 12 ||
		!v.State.NextCheckAt.Equal(next) || v.Hold != nil || !v.LedgerConsulted || v.Ledger != nil {
		t.Fatalf("status --json of %s = %+v", idB, v)
	}
	stdout, _ = mustRun(t, 0, "status", "--json", idC)
	v = tenantView{}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Ledger == nil || v.Ledger.DocumentsAtMarking != 60 ||
		v.Ledger.ControlRowsDeleted["subscription"] != 1 || v.State.Phase != tenant.PhaseCleaned {
		t.Fatalf("status --json of %s = %+v, %v", idC, v, err)
	}

	// Unknown and invalid tenants.
	stdout, _ = mustRun(t, 1, "status", "tenant_dev")
	contains(t, "status of an unknown tenant", stdout, "unknown: the pipeline has no state for it", "tenant_dev is unknown")
	_, stderr := mustRun(t, 2, "status", "public")
	contains(t, "status public", stderr, `invalid tenant id "public"`)
	mustRun(t, 2, "status", idA, idB)

	// Without a control plane the ledger is not consulted.
	t.Setenv("CONTROL_PLANE_DATABASE_URL", "")
	stdout, _ = mustRun(t, 0, "status", idC)
	contains(t, "status without a control plane", stdout, "ledger        not consulted (set CONTROL_PLANE_DATABASE_URL")
}

func TestStatusTable(t *testing.T) {
	w := newWorld(t)
	now := time.Now().UTC()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	for _, ev := range []tenant.Event{
		{TenantID: idA, Outcome: tenant.OutcomeMarked, Time: ago(3 * time.Hour)},
		{TenantID: idB, Outcome: tenant.OutcomeMarked, Time: ago(30 * time.Minute)},
		{TenantID: idC, Outcome: tenant.OutcomeCleaned, Time: ago(26 * time.Hour)},
		{TenantID: idD, Outcome: tenant.OutcomeRefused, Time: ago(time.Hour), Reason: "no control-plane tenant row"},
	} {
		w.report(ev)
	}
	ctx := context.Background()
	until := now.Add(2 * time.Hour)
	expired := ago(time.Hour)
	for _, h := range []tenant.Hold{
		{ID: idE, Reason: "legal review", By: "tenantctl:ops@host", At: ago(time.Hour), Until: &until},
		{ID: idF, Reason: "migration", By: "tenantctl:ops@host", At: ago(48 * time.Hour), Until: &expired},
	} {
		w.placeHold(h)
	}
	if err := w.bus.SetPause(ctx, "cap", tenant.Pause{Kind: "capped", Reason: "the hourly cap of 5 cleanups is reached",
		Until: now.Add(40 * time.Minute), By: "cleaner@host/1"}); err != nil {
		t.Fatal(err)
	}
	w.deadLetter(idG) // reports idG dead too

	stdout, _ := mustRun(t, 0, "status")
	contains(t, "status", stdout,
		"known to the pipeline",
		"Holds: 1 active, 1 expired", "Pauses in force: 1", "capped (cleanup cap reached)", "the hourly cap of 5 cleanups",
		"Dead letters: 1 (tenantctl dead list",
		"Ledger: no tenant cleaned yet")
	for _, want := range [][]string{
		{"requested", " 0 ", " -"},
		{"marked", " 2 ", idA, stamp(ago(3*time.Hour)) + " (3h ago)"},
		{"draining", " 0 "},
		{"held", " 0 "},
		{"stuck", " 0 "},
		{"refused", " 1 ", idD, "(1h ago)"},
		{"dead", " 1 ", idG},
		{"cleaned", " 1 ", idC, "(1d2h ago)"},
		{idE, "active", stamp(until) + " (in 2h)", "legal review"},
		{idF, "expired", "(1h ago)", "migration"},
	} {
		if lineWith(stdout, want...) == "" {
			t.Errorf("status has no line with %q:\n%s", want, stdout)
		}
	}
	// The phases come in pipeline order, every one of them.
	var order []string
	for _, line := range strings.Split(stdout, "\n") {
		for _, p := range tenant.Phases {
			if strings.HasPrefix(line, string(p)+" ") {
				order = append(order, string(p))
			}
		}
	}
	if strings.Join(order, ",") != "requested,marked,draining,held,stuck,refused,dead,cleaned" {
		t.Errorf("phase rows %v", order)
	}

	// --json, parsed back.
	stdout, _ = mustRun(t, 0, "status", "--json")
	var v fleetView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("status --json: %v\n%s", err, stdout)
	}
	byPhase := map[tenant.Phase]phaseView{}
	for _, p := range v.Phases {
		byPhase[p.Phase] = p
	}
	if len(v.Phases) != len(tenant.Phases) || byPhase[tenant.PhaseMarked].Tenants != 2 || byPhase[tenant.PhaseMarked].Oldest != idA ||
		*byPhase[tenant.PhaseMarked].OldestAgeSeconds < 3*3600 || byPhase[tenant.PhaseDraining].Tenants != 0 ||
		byPhase[tenant.PhaseDead].Tenants != 1 || v.Tenants != 5 {
		t.Errorf("status --json phases = %+v", v.Phases)
	}
	if len(v.Holds) != 2 || !v.Holds[0].Active || v.Holds[1].Active || len(v.Pauses) != 1 || v.Pauses[0].Kind != "capped" ||
		v.DeadLetters != 1 || !v.LedgerConsulted || v.Ledger == nil || v.Ledger.Tenants != 0 {
		t.Errorf("status --json = %+v", v)
	}

	t.Setenv("CONTROL_PLANE_DATABASE_URL", "")
	stdout, _ = mustRun(t, 0, "status")
	contains(t, "status without a control plane", stdout, "Ledger: not consulted")
	stdout, _ = mustRun(t, 0, "status", "--json")
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.LedgerConsulted || v.Ledger != nil {
		t.Errorf("status --json without a control plane: %+v, %v", v, err)
	}
}

// Text the pipeline stored may have come from outside: status never prints
// an escape sequence or another control character.
func TestStatusPrintsNoControlCharacters(t *testing.T) {
	w := newWorld(t)
	w.report(tenant.Event{TenantID: idA, Outcome: tenant.OutcomeRefused, RequestedBy: "ops\x1b[2J\x1b[31m",
		Reason: "bad\x07 reason\x00 \u202eevil", Time: time.Now()})
	stdout, _ := mustRun(t, 0, "status", idA)
	for _, c := range stdout {
		if c != '\n' && (c < 0x20 || c == 0x7f || c == '\u202e') {
			t.Fatalf("status printed control character %U:\n%q", c, stdout)
		}
	}
	contains(t, "status", stdout, "ops[2J[31m", "bad reason evil")
}
