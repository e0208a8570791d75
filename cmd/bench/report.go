package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// report is what the run measured, as text sections and targets.
type report struct {
	facts, setup []string
	sections     []*section
	targets      []string
}

type section struct {
	title string
	lines []string
}

func (s *section) add(format string, args ...any) {
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

func (r *report) setupLine(format string, args ...any) {
	r.setup = append(r.setup, fmt.Sprintf(format, args...))
	info("%s", r.setup[len(r.setup)-1])
}

func (r *report) section(title string, header ...string) *section {
	s := &section{title: title, lines: header}
	r.sections = append(r.sections, s)
	return s
}

func (r *report) target(what string, pass bool, format string, args ...any) {
	verdict := "FAIL"
	if pass {
		verdict = "PASS"
	}
	r.targets = append(r.targets, fmt.Sprintf("  %s  %-88s %s", verdict, what, fmt.Sprintf(format, args...)))
}

// machine records what the figures depend on: the machine, its load, the
// server's settings and the commit measured.
func (r *report) machine(ctx context.Context) {
	load, _ := os.ReadFile("/proc/loadavg")
	commit, _ := exec.Command("git", "describe", "--always", "--dirty").Output()
	r.facts = append(r.facts, fmt.Sprintf("%s, %d CPUs, %s; load average at start %s; commit %s",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), runtime.Version(),
		strings.Join(strings.Fields(string(load))[:3], " "), strings.TrimSpace(string(commit))))
	var version, settings string
	_ = queryRow(ctx, testenv.AdminURL(), `SELECT split_part(version(), ' on ', 1), string_agg(name || '=' || setting || coalesce(unit, ''), ' ' ORDER BY name)
		FROM pg_settings WHERE name IN ('max_connections', 'max_locks_per_transaction', 'shared_buffers', 'fsync',
		'synchronous_commit', 'max_wal_size', 'autovacuum', 'jit')`, nil, &version, &settings)
	r.facts = append(r.facts, version+": "+settings)
}

func (r *report) render(b *bench) string {
	var w strings.Builder
	for _, f := range r.facts {
		fmt.Fprintln(&w, f)
	}
	fmt.Fprintf(&w, "wall time %s\n\nSETUP (not measured)\n", time.Since(b.start).Round(time.Second))
	for _, s := range r.setup {
		fmt.Fprintln(&w, "  "+s)
	}
	for _, s := range r.sections {
		fmt.Fprintf(&w, "\n%s\n%s\n", s.title, strings.Join(s.lines, "\n"))
	}
	fmt.Fprintf(&w, "\nTARGETS\n%s\n", strings.Join(r.targets, "\n"))
	return w.String()
}
