package analyzer

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// CSVName is the report's file name, as the original script named it:
// gated_tenants_no_query_3mo_<YYYYMMDD_HHMMSS>.csv for the default 90 days,
// <n>mo for other whole months, <n>d otherwise.
func CSVName(inactiveDays int, at time.Time) string {
	span := fmt.Sprintf("%dd", inactiveDays)
	if inactiveDays%30 == 0 {
		span = fmt.Sprintf("%dmo", inactiveDays/30)
	}
	return fmt.Sprintf("gated_tenants_no_query_%s_%s.csv", span, at.UTC().Format("20060102_150405"))
}

// CSVHeader is the report's header row.
var CSVHeader = []string{"tenant_id", "num_documents", "num_users", "last_query_time", "days_since_last_query"}

// CSVShardColumn is the column a sharded fleet's report adds last: the
// shard(s) the candidate's schema is on, separated by ";" (a tenant being
// moved has two). A one-shard report has no such column.
const CSVShardColumn = "shard"

// WriteCSV writes the candidates, most documents first, to a new file at
// path. last_query_time is the tenant's last activity (USER chat message or
// Craft session), empty if it never had any. The file is created with mode
// 0600 and only if nothing exists at path: never over an existing file and
// never through a symbolic link planted there. A report that could not be
// written whole is removed: a truncated CSV is never left under its name.
func WriteCSV(path string, r *Report) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write report: %w (it is never overwritten: remove it or choose another name)", err)
	}
	if err != nil {
		return fmt.Errorf("write report: %w (check that directory %s exists and is writable)", err, filepath.Dir(path))
	}
	err = writeCSV(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("write report %s: %w (and the partial file could not be removed: %v; do not use it)", path, err, rerr)
		}
		return fmt.Errorf("write report %s: %w (nothing left there)", path, err)
	}
	return nil
}

// WriteCSVIn writes the report to a new file in dir named after CSVName,
// adding -2, -3, … to the name if a file (or anything else) is there
// already, and returns its path.
func WriteCSVIn(dir string, inactiveDays int, r *Report) (string, error) {
	name := CSVName(inactiveDays, r.At)
	base := strings.TrimSuffix(name, ".csv")
	for i := 1; i <= 100; i++ {
		path := filepath.Join(dir, name)
		err := WriteCSV(path, r)
		if !errors.Is(err, fs.ErrExist) {
			return path, err
		}
		name = fmt.Sprintf("%s-%d.csv", base, i+1)
	}
	return "", fmt.Errorf("write report: 100 files named %s* exist in %s already", base, dir)
}

func writeCSV(w io.Writer, r *Report) error {
	cw := csv.NewWriter(w)
	sharded := r.Shards != nil
	header := CSVHeader
	if sharded {
		header = append(slices.Clone(CSVHeader), CSVShardColumn)
	}
	if err := cw.Write(header); err != nil {
		return err
	}
	var werr error
	write := func(t csvRow) bool {
		last, days := "", ""
		if !t.last.IsZero() {
			last = t.last.UTC().Format(time.RFC3339)
			days = strconv.Itoa(int(r.At.Sub(t.last).Hours() / 24))
		}
		row := []string{string(t.id), strconv.FormatInt(t.documents, 10), strconv.FormatInt(t.users, 10), last, days}
		if sharded {
			row = append(row, t.shards)
		}
		werr = cw.Write(row)
		return werr == nil
	}
	if r.keepCandidates {
		for _, t := range r.Candidates() {
			if !write(rowOf(t)) {
				break
			}
		}
	} else if err := r.spool.each(write); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	cw.Flush()
	return cw.Error()
}

// GroupLabel names a summary group for the configured window.
func GroupLabel(g Group, inactiveDays int) string {
	switch g {
	case GroupInactive:
		return fmt.Sprintf("gated, no activity in %d days (candidates)", inactiveDays)
	case GroupActiveEarly:
		return fmt.Sprintf("gated, last active %d-%d days ago", recentDays, inactiveDays)
	case GroupActiveRecent:
		return fmt.Sprintf("gated, active in the last %d days", recentDays)
	default:
		return "everyone else"
	}
}

// Totals counts tenants and documents per group.
func (r *Report) Totals() map[Group][2]int64 {
	out := map[Group][2]int64{}
	for g, c := range r.totals {
		out[Group(g)] = c
	}
	return out
}

// PrintSummary prints the grouped summary.
func PrintSummary(w io.Writer, r *Report) {
	fmt.Fprintf(w, "Analysis at %s: %d tenants, INACTIVE_DAYS=%d\n", r.At.UTC().Format(time.RFC3339), r.Seen, r.InactiveDays)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "group\ttenants\tdocuments\t")
	totals := r.Totals()
	for _, g := range []Group{GroupInactive, GroupActiveEarly, GroupActiveRecent, GroupOther} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t\n", GroupLabel(g, r.InactiveDays), totals[g][0], totals[g][1])
	}
	tw.Flush()
	printShards(w, r)
	if len(r.SkippedSchemas) > 0 {
		fmt.Fprintf(w, "skipped %d schemas named like tenants that are not valid tenant ids\n", len(r.SkippedSchemas))
	}
	if len(r.Unreadable) > 0 {
		fmt.Fprintf(w, "%d tenants skipped, they could not be read or judged (tried again next pass):\n", len(r.Unreadable))
		for i, u := range r.Unreadable {
			if i == 20 {
				fmt.Fprintf(w, "  … and %d more\n", len(r.Unreadable)-i)
				break
			}
			fmt.Fprintf(w, "  %s: %s\n", u.ID, u.Reason)
		}
	}
	if r.Withheld > 0 {
		fmt.Fprintf(w, "%d tenants not selected: a shard that could not be read may hold a copy of theirs in use "+
			"(tried again next pass; see the shard table)\n", r.Withheld)
	}
	if len(r.ForReview) > 0 {
		fmt.Fprintf(w, "%d tenants have no schema but rows left, and nothing shows that a cleanup of them began: "+
			"left for review (tenantctl verify lists them)\n", len(r.ForReview))
	}
	if r.inPipeline > 0 {
		fmt.Fprintf(w, "%d candidates are in the pipeline already (marked within %s): not published again\n",
			r.inPipeline, RepublishAfter)
	}
	if r.NotHere > 0 {
		fmt.Fprintf(w, "%d control-plane tenants have no schema or public rows on this data plane\n", r.NotHere)
	}
}

// WriteCSVTo writes the candidate CSV (CSVHeader, one row per candidate) to w.
func WriteCSVTo(w io.Writer, r *Report) error { return writeCSV(w, r) }

// printShards prints the per-shard counts and the stray copies of a
// sharded fleet.
func printShards(w io.Writer, r *Report) {
	if r.Shards == nil {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\ttenant schemas\tcandidates\tdocuments\t")
	for _, s := range r.Shards {
		if s.Unreachable != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tnot read: %s\n", s.Name, s.Unreachable)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t\n", s.Name, s.Schemas, s.Candidates, s.Documents)
	}
	tw.Flush()
	if len(r.StrayCopies) > 0 {
		fmt.Fprintf(w, "%d stray copies: tenant schemas on a shard other than their placement (cleaned with the tenant; "+
			"tenantctl verify lists them):\n", len(r.StrayCopies))
		for i, c := range r.StrayCopies {
			if i == 20 {
				fmt.Fprintf(w, "  … and %d more\n", len(r.StrayCopies)-i)
				break
			}
			fmt.Fprintf(w, "  %s on shard %s (placed on %s)\n", c.ID, c.Shard, c.Placement)
		}
	}
}
