package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

type params struct {
	Tenants              int    `json:"throughput_tenants"`
	TablesPerTenant      int    `json:"throughput_tables_per_tenant"`
	FillerTables         int    `json:"throughput_filler_tables"`
	AnalyzerSizes        []int  `json:"analyzer_sizes"`
	SmallTablesPerTenant int    `json:"analyzer_rss_tables_per_tenant"`
	RSSTenants           int    `json:"rss_tenants"`
	Parts                string `json:"parts"`
}

type setupResult struct {
	What    string  `json:"what"`
	Tenants int     `json:"tenants,omitempty"`
	Seconds float64 `json:"seconds"`
	Bytes   int64   `json:"data_plane_bytes,omitempty"`
}

type target struct {
	Name   string `json:"target"`
	Value  string `json:"value"`
	Result string `json:"result"` // PASS, FAIL or n/a
}

type results struct {
	Started     time.Time         `json:"started"`
	WallSeconds float64           `json:"wall_seconds"`
	Machine     machine           `json:"machine"`
	Params      params            `json:"params"`
	Setup       []setupResult     `json:"setup"`
	Floor       *floorResult      `json:"floor,omitempty"`
	Pipeline    []*pipelineResult `json:"pipeline,omitempty"`
	Analyzer    []*analyzerResult `json:"analyzer,omitempty"`
	RSS         *rssResult        `json:"rss,omitempty"`
	Profile     *profileResult    `json:"profile,omitempty"`
	// AnalyzerProfile is the in-process analyzer pass of (d).
	AnalyzerProfile *profileResult   `json:"analyzer_profile,omitempty"`
	Catalog         []*catalogTiming `json:"catalog_queries_vs_fleet_size,omitempty"`
	Targets         []target         `json:"targets"`
}

func (r *results) addSetup(what string, tenants int, took time.Duration, bytes int64) {
	r.Setup = append(r.Setup, setupResult{What: what, Tenants: tenants, Seconds: took.Seconds(), Bytes: bytes})
}

// Targets of issue 5.
const (
	targetPipelineRatio = 0.8
	targetSpeedup       = 2.0
	targetSpeedupSize   = 2000
	// linearity: the analyzer's time per tenant on the largest fleet may be at
	// most this much above its time per tenant on the smallest.
	targetLinearity = 1.25
	targetRSSMiB    = 64.0
)

// roundsText lists every round's tenants per minute when there were several.
func roundsText(rounds []float64) string {
	if len(rounds) < 2 {
		return ""
	}
	parts := make([]string, len(rounds))
	for i, v := range rounds {
		parts[i] = fmt.Sprintf("%.0f", v)
	}
	return "best of rounds " + strings.Join(parts, ", ") + "; "
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func (r *results) evaluate() {
	r.Targets = nil
	if r.Floor != nil { // best rounds against best round
		for _, p := range r.Pipeline {
			p.RatioToFloor = p.PerMinute / r.Floor.PerMinute
		}
	}
	add := func(name, value, result string) { r.Targets = append(r.Targets, target{name, value, result}) }
	var b *pipelineResult
	for _, p := range r.Pipeline {
		if p.Cleaners == 1 {
			b = p
		}
	}
	name := fmt.Sprintf("pipeline (b), 1 marker + 1 cleaner, default settings ≥ %.1f × floor (a)", targetPipelineRatio)
	switch {
	case b != nil && r.Floor != nil:
		add(name, fmt.Sprintf("%.2f × (%.0f vs %.0f tenants/min)", b.RatioToFloor, b.PerMinute, r.Floor.PerMinute),
			passFail(b.RatioToFloor >= targetPipelineRatio))
	default:
		add(name, "not measured (needs parts a and b)", "n/a")
	}
	var at2k, smallest, largest *analyzerResult
	for _, a := range r.Analyzer {
		if a.Tenants == targetSpeedupSize {
			at2k = a
		}
		if smallest == nil || a.Tenants < smallest.Tenants {
			smallest = a
		}
		if largest == nil || a.Tenants > largest.Tenants {
			largest = a
		}
	}
	name = fmt.Sprintf("analyzer ≥ %.0f× faster than the per-schema loop on %d tenants", targetSpeedup, targetSpeedupSize)
	switch {
	case at2k != nil:
		add(name, fmt.Sprintf("%.1f× (%.2f s vs %.2f s)", at2k.Speedup, at2k.BestAnalyzer, at2k.BestLoop), passFail(at2k.Speedup >= targetSpeedup))
	case smallest != nil:
		add(name, fmt.Sprintf("%.1f× on %d tenants (no 2,000-tenant run)", smallest.Speedup, smallest.Tenants), "n/a")
	default:
		add(name, "not measured (part d)", "n/a")
	}
	name = fmt.Sprintf("analyzer time linear in tenants (ms/tenant at the largest ≤ %.2f × at the smallest size)", targetLinearity)
	if smallest != nil && largest != nil && largest != smallest {
		g := largest.AnalyzerPerTenant / smallest.AnalyzerPerTenant
		add(name, fmt.Sprintf("%.2f × (%.3f ms at %d, %.3f ms at %d)", g, largest.AnalyzerPerTenant, largest.Tenants,
			smallest.AnalyzerPerTenant, smallest.Tenants), passFail(g <= targetLinearity))
	} else {
		add(name, "not measured (needs two analyzer sizes)", "n/a")
	}
	for _, svc := range []string{"analyzer", "marker", "cleaner"} {
		name := fmt.Sprintf("%s peak RSS ≤ %.0f MiB with %d tenants in flight", svc, targetRSSMiB, r.Params.RSSTenants)
		if r.RSS == nil {
			add(name, "not measured (part e)", "n/a")
			continue
		}
		v := r.RSS.PeakRSSMiB[svc]
		note := ""
		if ph := r.RSS.Phases[svc]; ph != nil && !ph.Complete {
			note = fmt.Sprintf(" (measured over %d of the %d tenants in flight)", ph.Processed, r.RSS.Tenants)
		}
		add(name, fmt.Sprintf("%.1f MiB%s", v, note), passFail(v <= targetRSSMiB))
	}
}

func (r *results) render() string {
	var sb strings.Builder
	m := r.Machine
	fmt.Fprintf(&sb, "tenant-cleanup bench (issue 5), started %s, wall time %s, parts %s\n", r.Started.Format(time.RFC3339),
		(time.Duration(r.WallSeconds) * time.Second).String(), r.Params.Parts)
	fmt.Fprintf(&sb, "machine: %d cores (%s), %.0f GiB RAM, %s; %s\n", m.Cores, m.CPUModel, m.MemoryGiB, m.Postgres, m.NATS)
	var settings []string
	for _, k := range sortedKeys(m.Settings) {
		settings = append(settings, k+"="+m.Settings[k])
	}
	fmt.Fprintf(&sb, "postgres settings: %s\n", strings.Join(settings, " "))
	fmt.Fprintf(&sb, "pg_stat_statements: %s\n", m.PgStatStmt)
	fmt.Fprintf(&sb, "product: %s\n", m.Product)
	fmt.Fprintf(&sb, "load average at start %s; %d other client sessions on the server at start\n\n", m.LoadAvg, m.OtherConns)

	fmt.Fprintln(&sb, "SETUP (not part of any measurement)")
	tw := tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	for _, s := range r.Setup {
		extra := ""
		if s.Bytes > 0 {
			extra = fmt.Sprintf("%.2f GiB data plane", float64(s.Bytes)/(1<<30))
		}
		tenants := ""
		if s.Tenants > 0 {
			tenants = fmt.Sprintf("%d tenants", s.Tenants)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%.1f s\t%s\n", s.What, tenants, s.Seconds, extra)
	}
	tw.Flush()

	if r.Floor != nil || len(r.Pipeline) > 0 {
		fmt.Fprintf(&sb, "\nTHROUGHPUT: %d drained, eligible tenants × %d tables, identical clones\n", r.Params.Tenants, r.Params.TablesPerTenant)
		tw = tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  run\tseconds\ttenants/min\tratio to (a)\tmachine CPU busy\tPostgreSQL CPU ms/tenant\tnotes")
		if f := r.Floor; f != nil {
			fmt.Fprintf(tw, "  (a) raw SQL floor, %d sessions\t%.1f\t%.0f\t1.00\t%.0f%%\t%.0f\t%s%.1f statements/tenant, %d DROP retries\n",
				f.Sessions, f.Seconds, f.PerMinute, f.CPU.BusyPercent, 1000*f.CPU.PostgresSeconds/float64(f.Tenants), roundsText(f.RoundsPerMinute),
				f.StatementsPer, f.DropRetries)
		}
		for _, p := range r.Pipeline {
			label := "(b) pipeline, 1 marker + 1 cleaner"
			if p.Cleaners > 1 {
				label = fmt.Sprintf("(c) pipeline, 1 marker + %d cleaners", p.Cleaners)
			}
			fmt.Fprintf(tw, "  %s\t%.1f\t%.0f\t%s\t%.0f%%\t%.0f\t%sall marked after %.0f s; drop transactions/tenant %v\n", label, p.Seconds, p.PerMinute,
				ratioText(p.RatioToFloor), p.CPU.BusyPercent, 1000*p.CPU.PostgresSeconds/float64(p.Tenants), roundsText(p.RoundsPerMinute),
				p.MarkedSeconds, p.DropTx)
		}
		tw.Flush()
		fmt.Fprintln(&sb, "  CPU seconds during each run (PG: the run's own backends; PG other: background processes and other clients;")
		fmt.Fprintln(&sb, "  other: the kernel and anything else running on the machine meanwhile):")
		if f := r.Floor; f != nil {
			fmt.Fprintf(&sb, "    (a): PG %.1f, PG other %.1f, bench sessions %.1f, other %.1f\n", f.CPU.PostgresSeconds, f.CPU.PostgresOtherSeconds,
				f.CPU.BenchSeconds, f.CPU.OtherSeconds)
		}
		for _, p := range r.Pipeline {
			fmt.Fprintf(&sb, "    %d cleaner(s): PG %.1f, PG other %.1f, %s, bench incl. JetStream %.1f, other %.1f; peak RSS MiB %s\n",
				p.Cleaners, p.CPU.PostgresSeconds, p.CPU.PostgresOtherSeconds, fmtSeconds(p.CPU.ServiceSeconds), p.CPU.BenchSeconds,
				p.CPU.OtherSeconds, fmtMiB(p.PeakRSSMiB))
			for _, k := range sortedKeys(p.Notable) {
				fmt.Fprintf(&sb, "      log lines: %d × %s\n", p.Notable[k], k)
			}
		}
	}
	if len(r.Analyzer) > 0 {
		fmt.Fprintf(&sb, "\nANALYZER: bin/analyzer --once vs the original per-schema loop (best of %d alternating runs each)\n", analyzerRounds)
		fmt.Fprintf(&sb, "  fleets of tenants with the fixture's %d tables (not 143: see docs/performance.md; the queries read only\n", r.Params.SmallTablesPerTenant)
		fmt.Fprintln(&sb, "  chat_message, document, \"user\", build_session and the catalog, whose cost does not depend on the other tables)")
		tw = tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  tenants\tanalyzer s\tloop s\tspeedup\tanalyzer ms/tenant\tloop ms/tenant\tanalyzer peak RSS")
		for _, a := range r.Analyzer {
			fmt.Fprintf(tw, "  %d\t%.2f\t%.2f\t%.1f×\t%.3f\t%.3f\t%.1f MiB\n", a.Tenants, a.BestAnalyzer, a.BestLoop, a.Speedup,
				a.AnalyzerPerTenant, a.LoopPerTenant, a.PeakRSSMiB)
		}
		tw.Flush()
	}
	if r.RSS != nil {
		fmt.Fprintf(&sb, "\nPEAK RSS with %d tenants in flight (%d tables each): analyzer %.1f MiB, marker %.1f MiB, cleaner %.1f MiB\n",
			r.RSS.Tenants, r.RSS.TablesPerTenant, r.RSS.PeakRSSMiB["analyzer"], r.RSS.PeakRSSMiB["marker"], r.RSS.PeakRSSMiB["cleaner"])
		for _, svc := range []string{"marker", "cleaner"} {
			if ph := r.RSS.Phases[svc]; ph != nil {
				var series []string
				for _, s := range ph.Samples {
					series = append(series, fmt.Sprintf("%.0fs:%d:%.1f", s.Seconds, s.Processed, s.MiB))
				}
				fmt.Fprintf(&sb, "  %s: %d messages in flight at start, %d processed in %.0f s; VmHWM over time (s:processed:MiB) %s\n",
					svc, ph.InFlight, ph.Processed, ph.Seconds, strings.Join(series, " "))
			}
		}
	}
	if p := r.Profile; p != nil {
		renderProfile(&sb, fmt.Sprintf("PROFILE (p): marker + 1 cleaner in-process, %d tenants × %d tables, %.0f s with the proxies (not a result)",
			p.Tenants, r.Params.TablesPerTenant, p.Seconds), p, "marker", "cleaner")
	}
	if p := r.AnalyzerProfile; p != nil {
		renderProfile(&sb, fmt.Sprintf("PROFILE (d): one analyzer pass in-process, %d tenants, %.2f s with the proxies (not a result)",
			p.Tenants, p.Seconds), p, "analyzer")
	}
	if len(r.Catalog) > 0 {
		fmt.Fprintln(&sb, "\nCATALOG QUERIES vs FLEET SIZE: EXPLAIN ANALYZE (planning + execution, warm) for one tenant")
		tw = tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  fleet\ttenants\ttables/tenant\tpg_class rows\tpg_constraint rows\tdrop_plan ms\toutside_dependents ms\tcatalog ms")
		for _, c := range r.Catalog {
			fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", c.Fleet, c.Tenants, c.TablesPerTenant, c.ClassRows, c.ConstraintRows,
				msText(c.Ms, "drop_plan"), msText(c.Ms, "outside_dependents"), msText(c.Ms, "catalog"))
		}
		tw.Flush()
	}

	fmt.Fprintln(&sb, "\nTARGETS (issue 5)")
	tw = tabwriter.NewWriter(&sb, 0, 4, 2, ' ', 0)
	for _, t := range r.Targets {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", t.Result, t.Name, t.Value)
	}
	tw.Flush()
	return sb.String()
}

func fmtMiB(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (r *results) write(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(jsonPath(path), append(b, '\n'), 0o644)
}

func msText(m map[string]float64, k string) string {
	v, ok := m[k]
	if !ok {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func renderProfile(sb *strings.Builder, title string, p *profileResult, services ...string) {
	fmt.Fprintf(sb, "\n%s; files in %s\n", title, p.Dir)
	fmt.Fprintf(sb, "  Go CPU seconds sampled: %s\n", fmtSeconds(p.CPUSeconds))
	for _, view := range append(services, "all") {
		fmt.Fprintf(sb, "  Go CPU by component, %s: %s\n", view, fmtSeconds(p.Components[view]))
	}
	fmt.Fprintf(sb, "  database round trips per tenant: %s\n", fmtPerTenant(p.RoundTrips))
	fmt.Fprintf(sb, "  database time, s: %s\n", fmtSeconds(p.DBSeconds))
	fmt.Fprintln(sb, "  top statements by total time:")
	tw := tabwriter.NewWriter(sb, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "    source\ttotal s\tcalls/tenant\tmean ms\tms/tenant\tstatement")
	for _, s := range p.Statements[:min(15, len(p.Statements))] {
		fmt.Fprintf(tw, "    %s\t%.2f\t%.2f\t%.2f\t%.2f\t%s\n", s.Source, s.TotalSec, s.PerTenant, s.MeanMs, s.MsPerTen, shorten(s.Statement, 100))
	}
	tw.Flush()
}
