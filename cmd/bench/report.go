package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"
)

// report is what the run measured, as text sections and targets.
type report struct {
	facts, setup []string
	sections     []*section
	targets      []string
}

// section is a title and lines; a table's rows are all in one format.
type section struct {
	title, format string
	lines         []string
}

func (s *section) add(format string, args ...any) {
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

func (s *section) row(args ...any) { s.add(s.format, args...) }

func (r *report) section(title string) *section {
	s := &section{title: title}
	r.sections = append(r.sections, s)
	return s
}

var reVerb = regexp.MustCompile(`%(-?\d*)(\.\d+)?[a-z]`)

// table is a section whose rows are in format; its header is columns in
// format with every verb a string of the same width.
func (r *report) table(title, format string, columns ...any) *section {
	s := r.section(title)
	s.format = format
	s.add(reVerb.ReplaceAllString(format, "%${1}s"), columns...)
	return s
}

func (r *report) setupLine(format string, args ...any) {
	r.setup = append(r.setup, fmt.Sprintf(format, args...))
	info("%s", r.setup[len(r.setup)-1])
}

func (r *report) target(what string, pass bool, format string, args ...any) {
	verdict := map[bool]string{true: "PASS", false: "FAIL"}[pass]
	r.targets = append(r.targets, fmt.Sprintf("  %s  %-88s %s", verdict, what, fmt.Sprintf(format, args...)))
}

// machine records what the figures depend on: the machine, its load, the
// server's settings and the commit measured.
func (b *bench) machine(ctx context.Context) {
	load, _ := os.ReadFile("/proc/loadavg")
	commit, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	b.res.facts = append(b.res.facts, fmt.Sprintf("%s, %d CPUs, %s; load average at start %s; commit %s",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(),
		strings.Join(strings.Fields(string(load))[:3], " "), strings.TrimSpace(string(commit))))
	var version, settings string
	_ = b.admin.QueryRow(ctx, `SELECT split_part(version(), ' on ', 1), string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name)
		FROM pg_settings WHERE name IN ('max_connections', 'max_locks_per_transaction', 'shared_buffers', 'fsync',
		'synchronous_commit', 'max_wal_size', 'autovacuum', 'jit')`).Scan(&version, &settings)
	b.res.facts = append(b.res.facts, version+": "+settings)
}

func (r *report) render(start time.Time) string {
	var w strings.Builder
	fmt.Fprintf(&w, "%s\nwall time %s\n\nSETUP (not measured)\n", strings.Join(r.facts, "\n"), time.Since(start).Round(time.Second))
	for _, s := range r.setup {
		fmt.Fprintln(&w, "  "+s)
	}
	for _, s := range r.sections {
		fmt.Fprintf(&w, "\n%s\n%s\n", s.title, strings.Join(s.lines, "\n"))
	}
	fmt.Fprintf(&w, "\nTARGETS\n%s\n", strings.Join(r.targets, "\n"))
	return w.String()
}

func perMin(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(max(b, 1)) }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms1(d)) }

func ms1(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
