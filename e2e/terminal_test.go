package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/mattn/go-runewidth"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// These tests drive bin/tenantctl as an operator does, in a real terminal:
// tmux (Debian's package; .ci/run installs it) runs it in a detached session
// of a given size, send-keys types, capture-pane reads the screen.

// pane is a tmux session of its own server (its own socket), running one
// shell command.
type pane struct {
	t      *testing.T
	socket string
	width  int
	env    []string
}

// requireTmux skips the test when tmux is absent, except in CI, where
// .ci/run installs it and its absence is a failure.
func requireTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tmux is not installed (.ci/run installs it): %v", err)
		}
		t.Skip("tmux is not installed (apt-get install -y tmux): the terminal tests need it")
	}
}

// newPane starts command (a shell command line) in a detached tmux session
// of width×height cells, with env added to this process's environment. When the command ends the pane shows
// "[exit STATUS]" and stays open until the test ends.
func newPane(t *testing.T, width, height int, env []string, command string) *pane {
	t.Helper()
	requireTmux(t)
	dir, err := os.MkdirTemp("", "tmux-") // short: a socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	p := &pane{t: t, socket: filepath.Join(dir, "s"), width: width}
	t.Cleanup(func() {
		_ = exec.Command("tmux", "-S", p.socket, "kill-server").Run()
		os.RemoveAll(dir)
	})
	script := command + `; echo "[exit $?]"; exec cat >/dev/null`
	// The first command starts the server, whose environment the session's
	// command inherits.
	p.env = env
	p.tmux("-f", "/dev/null", "new-session", "-d", "-s", "op", "-x", fmt.Sprint(width), "-y", fmt.Sprint(height), "sh", "-c", script)
	return p
}

func (p *pane) tmux(args ...string) string {
	p.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", p.socket}, args...)...)
	cmd.Env = append(append(os.Environ(), p.env...), "TMUX=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// screen is what the pane shows, scroll-back included, with the lines that
// the terminal wrapped joined again (-J): a line longer than the width here
// is one that wrapped on the screen.
func (p *pane) screen() string {
	p.t.Helper()
	out := p.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "op")
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}

// waitFor polls the screen until cond holds, failing the test at the
// deadline with the screen; it returns the screen that satisfied cond.
func (p *pane) waitFor(timeout time.Duration, what string, cond func(screen string) bool) string {
	p.t.Helper()
	var s string
	deadline := time.Now().Add(timeout)
	for {
		s = p.screen()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("not within %s: %s; the screen (%d columns):\n%s", timeout, what, p.width, s)
		}
		time.Sleep(50 * time.Millisecond) // the polling interval, not a synchronisation
	}
}

// waitExit waits for the command's exit status.
func (p *pane) waitExit(timeout time.Duration) (int, string) {
	p.t.Helper()
	re := regexp.MustCompile(`\[exit (\d+)\]`)
	s := p.waitFor(timeout, "the command exits", re.MatchString)
	var code int
	fmt.Sscan(re.FindStringSubmatch(s)[1], &code)
	return code, s
}

func (p *pane) send(keys ...string) {
	p.t.Helper()
	p.tmux(append([]string{"send-keys", "-t", "op"}, keys...)...)
}

// checkFits fails the test for every line of screen wider than the pane.
func (p *pane) checkFits(screen string) {
	p.t.Helper()
	for _, l := range strings.Split(screen, "\n") {
		if w := runewidth.StringWidth(l); w > p.width {
			p.t.Errorf("a line of %d cells on a %d-column terminal wrapped:\n%s", w, p.width, l)
		}
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// On a terminal, cleanup --csv lists what it will request and asks; "n"
// publishes nothing and exits 1, "y" publishes.
func TestTerminalCleanupCSVAsks(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	bin := binaries(t)
	w := newWorld(t)
	csvFile := filepath.Join(t.TempDir(), "candidates.csv")
	if err := os.WriteFile(csvFile, []byte("tenant_id,note\n"+eligibleOld+",a\n"+eligibleNever+",b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	command := shellQuote(filepath.Join(bin, "tenantctl")) + " cleanup --csv " + shellQuote(csvFile)
	seq := w.StreamLastSeq()

	// No.
	p := newPane(t, 60, 20, w.Environ(), command)
	s := p.waitFor(20*time.Second, "the question", func(s string) bool { return strings.Contains(s, "[y/N]") })
	for _, want := range []string{"requests the cleanup of 2 tenants", eligibleOld, eligibleNever, "Publish 2 cleanup requests? [y/N]"} {
		if !strings.Contains(s, want) {
			t.Errorf("before asking, the screen lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "published") {
		t.Errorf("published before the answer:\n%s", s)
	}
	p.send("n", "Enter")
	code, s := p.waitExit(20 * time.Second)
	if code != 1 || !strings.Contains(s, "not confirmed; nothing was published") {
		t.Errorf("answered n: exit %d; want 1 and \"not confirmed; nothing was published\":\n%s", code, s)
	}
	if got := w.StreamLastSeq(); got != seq {
		t.Errorf("answered n, yet %d messages were published", got-seq)
	}
	for _, id := range []tenant.ID{eligibleOld, eligibleNever} {
		if _, found, _ := w.Bus.TenantState(context.Background(), id); found {
			t.Errorf("answered n, yet %s has a state", id)
		}
	}

	// Yes.
	p = newPane(t, 60, 20, w.Environ(), command)
	p.waitFor(20*time.Second, "the question", func(s string) bool { return strings.Contains(s, "[y/N]") })
	p.send("y", "Enter")
	code, s = p.waitExit(20 * time.Second)
	if code != 0 || !strings.Contains(s, "published 2 cleanup request(s)") {
		t.Errorf("answered y: exit %d; want 0 and 2 requests published:\n%s", code, s)
	}
	if got := w.StreamLastSeq(); got != seq+2 {
		t.Errorf("answered y: %d messages published, want 2", got-seq)
	}
	for _, id := range []tenant.ID{eligibleOld, eligibleNever} {
		if st, found, _ := w.Bus.TenantState(context.Background(), id); !found || st.Phase != tenant.PhaseRequested {
			t.Errorf("answered y: state of %s = %+v (found %v); want requested", id, st, found)
		}
	}
}

// progressLine matches the progress display's status line.
// (the bar is left out when the terminal is narrow).
var progressLine = regexp.MustCompile(`^(\[[#-]+\] )?\d+/\d+ finished`)

// cleanup --wait at 60 and 200 columns: the progress stays on one line that
// fits (it is redrawn in place, never wrapped), and a tenant refused is named
// as it happens, while the others are still in progress.
func TestTerminalCleanupWaitProgress(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	bin := binaries(t)
	for _, width := range []int{60, 200} {
		t.Run(fmt.Sprintf("%d columns", width), func(t *testing.T) {
			w := newWorld(t)
			w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 4})
			w.DBs.CreateTenant(t, testenv.Tenant{ID: active, Status: "ACTIVE", LastQuery: testenv.DaysAgo(200), Pairs: 1, DocsPerPair: 2})
			w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleNever, Status: tenant.StatusGatedAccess, Pairs: 1, DocsPerPair: 3})
			w.DrainTenants(true, eligibleOld) // eligibleNever drains only when told
			w.startServices()

			p := newPane(t, width, 20, w.Environ(), shellQuote(filepath.Join(bin, "tenantctl"))+
				" cleanup --wait --timeout 2m "+eligibleOld+" "+active+" "+eligibleNever)
			// The refusal is named while the third tenant still drains.
			refused := regexp.MustCompile(`\[\d/3\] ` + regexp.QuoteMeta(active) + ` refused`)
			s := p.waitFor(60*time.Second, "the refusal named, one tenant cleaned, one still in progress", func(s string) bool {
				return refused.MatchString(s) && strings.Contains(s, "2/3 finished")
			})
			checkProgressScreen(t, p, s)
			if strings.Contains(s, "[exit") {
				t.Fatalf("the command ended before the last tenant drained:\n%s", s)
			}
			// The progress line is redrawn in place (elapsed time) and
			// still one line.
			before := lineMatching(s, progressLine)
			s = p.waitFor(10*time.Second, "the progress line redrawn", func(s string) bool {
				l := lineMatching(s, progressLine)
				return l != "" && l != before
			})
			checkProgressScreen(t, p, s)

			w.DrainTenants(true, eligibleNever)
			code, s := p.waitExit(90 * time.Second)
			if code != 1 {
				t.Errorf("exit %d; want 1 (one tenant refused)", code)
			}
			progress, summary, _ := strings.Cut(s, "\nTENANT")
			checkProgressScreen(t, p, progress)
			if !strings.Contains(lineMatching(progress, progressLine), "3/3 finished") {
				t.Errorf("the last progress line is not 3/3 finished:\n%s", progress)
			}
			for _, want := range []string{eligibleOld, active, eligibleNever, "2 of 3 cleaned"} {
				if !strings.Contains(summary, want) {
					t.Errorf("the summary lacks %q:\n%s", want, summary)
				}
			}
			if !strings.Contains(summary, `not GATED_ACCESS`) {
				t.Errorf("the summary lacks the refusal's whole reason:\n%s", summary)
			}
		})
	}
}

// checkProgressScreen asserts that every line fits the terminal, that the
// progress is on exactly one line, and that cleaned tenants are not listed
// above it (only failures are).
func checkProgressScreen(t *testing.T, p *pane, s string) {
	t.Helper()
	p.checkFits(s)
	var n int
	for _, l := range strings.Split(s, "\n") {
		if progressAnywhere.MatchString(l) {
			n++
			if !progressLine.MatchString(l) {
				t.Errorf("a progress line is broken (wrapped or redrawn off its start): %q", l)
			}
		}
		if strings.Contains(l, " cleaned: ") {
			t.Errorf("a cleaned tenant is printed above the progress on a terminal: %q", l)
		}
	}
	if n != 1 {
		t.Errorf("%d progress lines on the screen; want exactly one:\n%s", n, s)
	}
	if !utf8.ValidString(s) {
		t.Errorf("the screen is not valid UTF-8:\n%q", s)
	}
}

var progressAnywhere = regexp.MustCompile(`\d+/\d+ finished`)

func lineMatching(s string, re *regexp.Regexp) string {
	for _, l := range strings.Split(s, "\n") {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

// On a terminal, completing a tenant whose schema is gone without evidence
// says what it deletes and asks; "n" leaves its rows and publishes nothing.
func TestTerminalCompletionAsks(t *testing.T) {
	t.Parallel()
	requireTmux(t)
	bin := binaries(t)
	w := newWorld(t)
	w.DBs.CreateTenant(t, testenv.Tenant{ID: eligibleOld, Status: tenant.StatusGatedAccess, LastQuery: testenv.DaysAgo(200), NoSchema: true})
	seq := w.StreamLastSeq()
	rows := w.DBs.PublicRows(t, eligibleOld)
	p := newPane(t, 80, 24, w.Environ(), shellQuote(filepath.Join(bin, "tenantctl"))+" cleanup "+eligibleOld)
	s := p.waitFor(20*time.Second, "the question", func(s string) bool { return strings.Contains(s, "[y/N]") })
	for _, want := range []string{eligibleOld + ": its schema is not on the data plane", fmt.Sprintf("deletes its %d public rows", rows),
		"Complete the cleanup of 1 tenant(s) whose schema is gone? [y/N]"} {
		if !strings.Contains(s, want) {
			t.Errorf("before asking, the screen lacks %q:\n%s", want, s)
		}
	}
	p.send("n", "Enter")
	code, s := p.waitExit(20 * time.Second)
	if code != 1 || !strings.Contains(s, "not confirmed; nothing was published") {
		t.Errorf("answered n: exit %d; want 1:\n%s", code, s)
	}
	if w.StreamLastSeq() != seq || w.DBs.PublicRows(t, eligibleOld) != rows {
		t.Error("answered n, yet something was published or deleted")
	}
}
