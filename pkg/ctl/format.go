package ctl

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// table writes aligned columns; end it with Flush.
func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

// row writes one tab-separated row. Every cell is made safe for a terminal
// first: what the pipeline stored (reasons, who requested, hold reasons) may
// have come from outside, and an escape sequence or a tab in it must not
// reach the screen.
func row(tw *tabwriter.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, safe(fmt.Sprint(c)))
	}
	fmt.Fprintln(tw)
}

// safe is s without control or formatting characters, for a terminal.
func safe(s string) string { return tenant.CleanText(s, 4096) }

// stamp is a time in RFC 3339, UTC; "-" for the zero time.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// stampPtr is stamp for an optional time.
func stampPtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return stamp(*t)
}

// when is a time with how long ago (or how soon) it is: "2026-11-26T15:00:00Z (3h ago)".
func when(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return stamp(t) + " (" + relative(now, t) + ")"
}

// relative says "3h ago", "in 20m" or "now".
func relative(now, t time.Time) string {
	d := now.Sub(t).Round(time.Second)
	switch {
	case d >= time.Second:
		return short(d) + " ago"
	case d <= -time.Second:
		return "in " + short(-d)
	default:
		return "now"
	}
}

// short renders a duration the way people say it: 45s, 12m, 3h, 3h20m, 5d, 5d4h.
func short(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 || h >= 10 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	default:
		days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
		if h == 0 || days >= 10 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h)
	}
}

// counts renders per-table row counts in the given table order, skipping
// tables without rows: "user_tenant_mapping 2, tenant_shard 1"; "-" if none.
func counts(order []string, rows map[string]int64) string {
	var parts []string
	seen := map[string]bool{}
	for _, t := range order {
		seen[t] = true
		if n := rows[t]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", t, n))
		}
	}
	var other []string
	for t, n := range rows {
		if !seen[t] && n > 0 {
			other = append(other, fmt.Sprintf("%s %d", t, n))
		}
	}
	sort.Strings(other)
	parts = append(parts, other...)
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// total adds up per-table row counts.
func total(rows map[string]int64) int64 {
	var n int64
	for _, v := range rows {
		n += v
	}
	return n
}

// plural is "1 tenant", "2 tenants".
func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// listCapped prints up to limit items, one per line with the given indent
// (tab-separated columns aligned), then "… and N more".
func listCapped(w io.Writer, indent string, items []string, limit int) {
	tw := table(w)
	defer tw.Flush()
	for i, s := range items {
		if i == limit {
			fmt.Fprintf(tw, "%s… and %d more\n", indent, len(items)-limit)
			return
		}
		fmt.Fprintf(tw, "%s%s\n", indent, s)
	}
}
