package ctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/pipeline"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const statusHelp = `
Reads the pipeline's own state: the tenant phases, holds and pauses in the
JetStream KV bucket ` + bus.BucketState + `, the dead-letter stream ` + bus.StreamDead + `, and the
ledger (tenant_cleanup.ledger in the control plane) when CONTROL_PLANE_DATABASE_URL
or CONTROL_PLANE_RDS_HOST is set; otherwise it says the ledger was not consulted.

With TENANT_ID: the tenant's phase (requested, marked, draining with the
documents left and the next check, cleaned and when, refused and why, stuck and
since when, held and why, dead), since when, the reason, who requested it, when
it was marked, its hold (active or expired) and its ledger row.

Without: a table of every phase with the number of tenants in it and the one
that has been in it longest, then the holds (active and expired), the pauses in
force (cleanup caps reached, circuit breakers open), the number of dead
letters, and the ledger's size.

-o json prints the same as one JSON document (--json is the same), -o csv the
phase table (or the tenant's row), -o wide adds every tenant's phase.

The pipeline's liveness comes first: for the marker's and the cleaner's
consumers, the messages waiting (pending), those delivered and not yet
acknowledged (ack pending) and whether a service is consuming now; the cleaner
replicas reporting their pace; the analyzer's last pass and whether it is
overdue (no pass for two ANALYZER_INTERVALs).

Exit status: 0 shown; 1 the pipeline, the holds and the ledger know nothing of
TENANT_ID, or NATS or the control plane could not be read; 2 TENANT_ID is not a
valid tenant id, or bad arguments or configuration.`

func (c *CLI) statusCmd() *cobra.Command {
	var (
		out    output
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:               "status [TENANT_ID]",
		Short:             "where tenants are in the pipeline, and whether the pipeline is alive",
		Long:              helpText("Where tenants are in the pipeline: one tenant, or every phase, hold, pause and dead letter, and whether the pipeline is alive.", statusHelp),
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeTenants,
		Example:           "  tenantctl status\n  tenantctl status -o json\n  tenantctl status " + exampleID,
	}
	outputFlags(cmd, &out)
	cmd.Flags().BoolVar(&asJSON, "json", false, "the same as -o json")
	cmd.RunE = runner(func(ctx context.Context, cmd *cobra.Command, args []string) int {
		if asJSON {
			out.format = formatJSON
		}
		return c.runStatus(ctx, cmd, out, args)
	})
	return cmd
}

func (c *CLI) runStatus(ctx context.Context, cmd *cobra.Command, out output, pos []string) int {
	var spec lookupSpec
	if msg := out.check(); msg != "" {
		return c.usageError(cmd, "%s", msg)
	}
	var id tenant.ID
	if len(pos) == 1 {
		var err error
		if id, err = tenant.ParseID(pos[0]); err != nil {
			c.errorf("%v", err)
			return exitUsage
		}
	}
	b, code := c.connect(ctx, cmd, &spec, &spec.NATS)
	if b == nil {
		return code
	}
	defer b.Close()
	var control *controlplane.Store
	if spec.ControlPlane.Configured() {
		store, closeControl, err := openControl(ctx, spec.ControlPlane, spec.Bastion)
		if err != nil {
			return c.fail(ctx, err)
		}
		defer closeControl()
		control = store
	}
	if id != "" {
		var shards *service.Env
		if strings.TrimSpace(spec.ShardsJSON) != "" && spec.OptionalDataPlane.Configured() {
			env, err := openShards(ctx, spec.OptionalDataPlane.DataPlane(), 1)
			if err != nil {
				return c.fail(ctx, err)
			}
			defer env.Close()
			shards = env
		}
		return c.tenantStatus(ctx, b, control, shards, id, out)
	}
	return c.fleetStatus(ctx, b, control, out)
}

// holdView is a hold with whether it is in force.
type holdView struct {
	tenant.Hold
	Active bool `json:"active"`
}

// tenantView is the status of one tenant (--json).
type tenantView struct {
	TenantID tenant.ID `json:"tenant_id"`
	// Known is false when neither the pipeline, the holds nor the ledger know it.
	Known bool `json:"known"`
	// State is null when the pipeline never saw the tenant.
	State           *tenant.State `json:"state"`
	Hold            *holdView     `json:"hold"`
	LedgerConsulted bool          `json:"ledger_consulted"`
	Ledger          *ledgerRow    `json:"ledger"`
	// Shards is where the tenant lives, in a sharded fleet only.
	Shards *shardsView `json:"shards,omitempty"`
}

func (c *CLI) tenantStatus(ctx context.Context, b *bus.Bus, control *controlplane.Store, shards *service.Env, id tenant.ID, out output) int {
	now := c.clock()
	v := tenantView{TenantID: id, LedgerConsulted: control != nil}
	state, found, err := b.TenantState(ctx, id)
	if err != nil {
		return c.fail(ctx, err)
	}
	if found {
		v.State = &state
	}
	if control != nil {
		h, held, err := control.Hold(ctx, id)
		if err != nil && !controlplane.NoLedger(err) {
			return c.fail(ctx, err)
		}
		if held {
			v.Hold = &holdView{Hold: h, Active: h.Active(now)}
		}
		e, inLedger, err := control.LedgerEntry(ctx, id)
		if err != nil && !controlplane.NoLedger(err) { // no ledger table: nothing cleaned yet
			return c.fail(ctx, err)
		}
		if inLedger {
			r := newLedgerRow(e)
			v.Ledger = &r
		}
	}
	if shards != nil {
		if v.Shards, err = tenantShards(ctx, shards, id); err != nil {
			return c.fail(ctx, err)
		}
	}
	v.Known = v.State != nil || v.Hold != nil || v.Ledger != nil
	code := exitOK
	if !v.Known {
		code = exitFailed
	}
	err = out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatJSON:
			return writeJSON(w, v)
		case formatCSV:
			return writeCSV(w, tenantCSVHeader, [][]string{v.csv()})
		}
		printTenant(w, now, v, control != nil)
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	return code
}

// printTenant prints one tenant's status as a table.
func printTenant(w io.Writer, now time.Time, v tenantView, consulted bool) {
	id := v.TenantID
	tw := table(w)
	row(tw, "tenant", id)
	if v.Shards != nil {
		row(tw, "shard", v.Shards.describe())
	}
	switch {
	case v.State == nil && v.Ledger != nil:
		row(tw, "phase", "cleaned at "+when(now, v.Ledger.CleanedAt)+", per the ledger (the pipeline has no state for it)")
	case v.State == nil:
		row(tw, "phase", "unknown: the pipeline has no state for it (never requested, or requested before state was kept)")
	default:
		s := v.State
		row(tw, "phase", describePhase(now, s))
		row(tw, "since", when(now, s.Since))
		if s.Reason != "" && s.Phase != tenant.PhaseRefused && s.Phase != tenant.PhaseHeld { // those say it already
			row(tw, "reason", s.Reason)
		}
		row(tw, "requested by", orDash(s.RequestedBy))
		marked := s.MarkedAt
		if marked == nil && s.Phase == tenant.PhaseMarked {
			marked = &s.Since
		}
		if marked != nil {
			row(tw, "marked at", when(now, *marked))
		}
		if s.NextCheckAt != nil && s.Phase != tenant.PhaseCleaned {
			row(tw, "next check", when(now, *s.NextCheckAt))
		}
		if s.DocumentsLeft != nil || s.PairsLeft != nil {
			row(tw, "left", docsLeft(s))
		}
		row(tw, "updated", when(now, s.Updated))
	}
	if v.Hold == nil {
		row(tw, "hold", "none")
	} else {
		row(tw, "hold", describeHold(now, *v.Hold))
	}
	switch {
	case !consulted:
		row(tw, "ledger", "not consulted (set CONTROL_PLANE_DATABASE_URL or CONTROL_PLANE_RDS_HOST to read it)")
	case v.Ledger == nil:
		row(tw, "ledger", "no row")
	default:
		row(tw, "ledger", describeLedger(now, *v.Ledger))
	}
	tw.Flush()
	if !v.Known {
		fmt.Fprintf(w, "\n%s is unknown: no pipeline state, no hold, no ledger row.\n", id)
	}
}

// describePhase says what the tenant's phase means, with the phase's details.
func describePhase(now time.Time, s *tenant.State) string {
	switch s.Phase {
	case tenant.PhaseRequested:
		return "requested: waiting for the marker"
	case tenant.PhaseMarked:
		out := "marked: waiting for Onyx to delete its documents"
		if s.NextCheckAt != nil {
			out += "; first drain check " + when(now, *s.NextCheckAt)
		}
		return out
	case tenant.PhaseDraining:
		out := "draining"
		if s.DocumentsLeft != nil || s.PairsLeft != nil {
			out += ": " + docsLeft(s) + " left"
		}
		if s.NextCheckAt != nil {
			out += "; next check " + when(now, *s.NextCheckAt)
		}
		return out
	case tenant.PhaseCleaned:
		at := s.Since
		if s.CleanedAt != nil {
			at = *s.CleanedAt
		}
		return "cleaned at " + when(now, at)
	case tenant.PhaseRefused:
		return "refused: " + s.Reason
	case tenant.PhaseStuck:
		out := "stuck since " + when(now, s.Since)
		if s.DocumentsLeft != nil || s.PairsLeft != nil {
			out += ": " + docsLeft(s) + " left"
		}
		return out
	case tenant.PhaseHeld:
		if strings.HasPrefix(s.Reason, "held by ") {
			return s.Reason
		}
		return "held: " + s.Reason
	case tenant.PhaseDead:
		return "dead: its message failed too often (tenantctl dead list, then tenantctl dead replay SEQ)"
	}
	return string(s.Phase)
}

func docsLeft(s *tenant.State) string {
	var parts []string
	if s.DocumentsLeft != nil {
		parts = append(parts, plural(int(*s.DocumentsLeft), "document"))
	}
	if s.PairsLeft != nil {
		parts = append(parts, plural(int(*s.PairsLeft), "connector-credential pair"))
	}
	return strings.Join(parts, " and ")
}

func describeHold(now time.Time, h holdView) string {
	out := h.Describe() + ", placed " + when(now, h.At)
	switch {
	case !h.Active:
		out += "; expired " + relative(now, *h.Until)
	case h.Until != nil:
		out += "; active, ends " + relative(now, *h.Until)
	default:
		out += "; active until tenantctl unhold"
	}
	return out
}

func describeLedger(now time.Time, r ledgerRow) string {
	out := fmt.Sprintf("cleaned %s by %s, requested by %s; at marking %s, %s",
		when(now, r.CleanedAt), orDash(r.CleanedBy), orDash(r.RequestedBy),
		plural(int(r.DocumentsAtMarking), "document"), plural(int(r.UsersAtMarking), "user"))
	if r.SchemaExisted {
		out += fmt.Sprintf("; %d relations dropped", r.RelationsDropped)
	} else {
		out += "; schema was already gone"
	}
	out += fmt.Sprintf("; %d public rows deleted; control plane: %s", r.PublicRowsDeleted,
		counts(controlplane.ControlTables, r.ControlRowsDeleted))
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// phaseView is one line of the phase table (--json).
type phaseView struct {
	Phase   tenant.Phase `json:"phase"`
	Tenants int          `json:"tenants"`
	// Oldest is the tenant longest in the phase (by since), with its age.
	Oldest           tenant.ID  `json:"oldest_tenant,omitempty"`
	OldestSince      *time.Time `json:"oldest_since,omitempty"`
	OldestAgeSeconds *int64     `json:"oldest_age_seconds,omitempty"`
}

// fleetView is the status of the whole pipeline (--json).
type fleetView struct {
	At      time.Time      `json:"at"`
	Tenants int            `json:"tenants"`
	Phases  []phaseView    `json:"phases"`
	Holds   []holdView     `json:"holds"`
	Pauses  []tenant.Pause `json:"pauses"`
	// Pace is what each running cleaner replica's pacer does.
	Pace        []bus.PaceReport `json:"pace"`
	DeadLetters int              `json:"dead_letters"`
	// Ledger is null when the control plane was not consulted.
	LedgerConsulted bool        `json:"ledger_consulted"`
	Ledger          *ledgerInfo `json:"ledger"`
	// Liveness says whether the services are running and keeping up.
	Liveness liveness `json:"liveness"`
	// States is every tenant's state (-o wide only).
	States []tenant.State `json:"states,omitempty"`
}

type ledgerInfo struct {
	Tenants       int64      `json:"tenants"`
	LastCleanedAt *time.Time `json:"last_cleaned_at"`
}

func (c *CLI) fleetStatus(ctx context.Context, b *bus.Bus, control *controlplane.Store, out output) int {
	now := c.clock()
	states, err := b.States(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	var holds []tenant.Hold
	if control != nil {
		if holds, err = control.Holds(ctx); err != nil {
			return c.fail(ctx, err)
		}
	}
	pauses, err := b.Pauses(ctx, now)
	if err != nil {
		return c.fail(ctx, err)
	}
	dead, err := b.DeadLetters(ctx)
	if err != nil {
		return c.fail(ctx, err)
	}
	paces, err := b.Paces(ctx, now)
	if err != nil {
		return c.fail(ctx, err)
	}
	sort.Slice(paces, func(i, j int) bool { return paces[i].By < paces[j].By })
	v := fleetView{At: now.UTC(), Tenants: len(states), DeadLetters: len(dead), LedgerConsulted: control != nil,
		Holds: []holdView{}, Pauses: pauses, Pace: append([]bus.PaceReport{}, paces...)}
	if v.Pauses == nil {
		v.Pauses = []tenant.Pause{}
	}
	for _, p := range tenant.Phases {
		pv := phaseView{Phase: p}
		for _, s := range states {
			if s.Phase != p {
				continue
			}
			pv.Tenants++
			if pv.OldestSince == nil || s.Since.Before(*pv.OldestSince) ||
				(s.Since.Equal(*pv.OldestSince) && s.ID < pv.Oldest) {
				since := s.Since
				pv.Oldest, pv.OldestSince = s.ID, &since
			}
		}
		if pv.OldestSince != nil {
			age := int64(now.Sub(*pv.OldestSince) / time.Second)
			pv.OldestAgeSeconds = &age
		}
		v.Phases = append(v.Phases, pv)
	}
	sort.Slice(holds, func(i, j int) bool { return holds[i].ID < holds[j].ID })
	for _, h := range holds {
		v.Holds = append(v.Holds, holdView{Hold: h, Active: h.Active(now)})
	}
	sort.Slice(v.Pauses, func(i, j int) bool { return v.Pauses[i].Until.Before(v.Pauses[j].Until) })
	if control != nil {
		n, last, err := control.LedgerStats(ctx)
		if err != nil {
			return c.fail(ctx, err)
		}
		v.Ledger = &ledgerInfo{Tenants: n}
		if !last.IsZero() {
			v.Ledger.LastCleanedAt = &last
		}
	}
	if v.Liveness, err = readLiveness(ctx, b, paces); err != nil {
		return c.fail(ctx, err)
	}
	if out.format == formatWide {
		v.States = states
		sort.Slice(v.States, func(i, j int) bool { return v.States[i].ID < v.States[j].ID })
	}
	err = out.write(c, func(w io.Writer) error {
		switch out.format {
		case formatJSON:
			return writeJSON(w, v)
		case formatCSV:
			return writeCSV(w, phaseCSVHeader, v.phaseCSV())
		}
		printFleet(w, now, v)
		return nil
	})
	if err != nil {
		return c.fail(ctx, err)
	}
	return exitOK
}

func printFleet(w io.Writer, now time.Time, v fleetView) {
	fmt.Fprintf(w, "Pipeline status at %s: %s known to the pipeline\n\n", stamp(now), plural(v.Tenants, "tenant"))
	printLiveness(w, now, v.Liveness)
	tw := table(w)
	row(tw, "PHASE", "TENANTS", "LONGEST IN PHASE", "SINCE")
	for _, p := range v.Phases {
		if p.Tenants == 0 {
			row(tw, p.Phase, 0, "-", "-")
			continue
		}
		row(tw, p.Phase, p.Tenants, p.Oldest, when(now, *p.OldestSince))
	}
	tw.Flush()

	active := 0
	for _, h := range v.Holds {
		if h.Active {
			active++
		}
	}
	fmt.Fprintf(w, "\nHolds: %d active, %d expired\n", active, len(v.Holds)-active)
	if len(v.Holds) > 0 {
		tw = table(w)
		row(tw, "TENANT", "STATE", "UNTIL", "BY", "PLACED", "REASON")
		for _, h := range v.Holds {
			state, until := "active", "until unhold"
			if h.Until != nil {
				until = when(now, *h.Until)
			}
			if !h.Active {
				state = "expired"
			}
			row(tw, h.ID, state, until, h.By, when(now, h.At), h.Reason)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nPauses in force: %d\n", len(v.Pauses))
	if len(v.Pauses) > 0 {
		tw = table(w)
		row(tw, "KIND", "UNTIL", "BY", "WHY")
		for _, p := range v.Pauses {
			kind := p.Kind
			switch p.Kind {
			case string(tenant.OutcomeCapped):
				kind = "capped (cleanup cap reached)"
			case string(tenant.OutcomePaused):
				kind = "paused (circuit breaker open)"
			case pipeline.PacedKind:
				kind = "paced (data plane under load)"
			}
			row(tw, kind, when(now, p.Until), orDash(p.By), p.Reason)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nPace of the drops: %s reporting\n", plural(replicasIn(v.Pace), "cleaner replica"))
	if len(v.Pace) > 0 {
		tw = table(w)
		row(tw, "REPLICA", "STATE", "DROPS AT ONCE", "IN FLIGHT", "WAITING", "WHY")
		for _, p := range v.Pace {
			by := p.By
			if p.Shard != "" {
				by += " on shard " + p.Shard
			}
			row(tw, by, p.State, fmt.Sprintf("%d of %d", p.Limit, p.Max), p.InFlight, p.Waiting, p.Reason)
		}
		tw.Flush()
	}

	fmt.Fprintf(w, "\nDead letters: %d", v.DeadLetters)
	if v.DeadLetters > 0 {
		fmt.Fprint(w, " (tenantctl dead list shows them, tenantctl dead replay re-publishes them)")
	}
	fmt.Fprintln(w)
	switch {
	case v.Ledger == nil:
		fmt.Fprintln(w, "Ledger: not consulted (set CONTROL_PLANE_DATABASE_URL or CONTROL_PLANE_RDS_HOST to read it)")
	case v.Ledger.LastCleanedAt == nil:
		fmt.Fprintln(w, "Ledger: no tenant cleaned yet")
	default:
		fmt.Fprintf(w, "Ledger: %s cleaned, the latest %s\n", plural(int(v.Ledger.Tenants), "tenant"), when(now, *v.Ledger.LastCleanedAt))
	}
}
