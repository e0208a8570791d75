package ctl

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-runewidth"
	"golang.org/x/term"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// isTerminal reports whether w is a terminal (not /dev/null, a file or a
// pipe).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalWidth is the width of the terminal w is, or 0 when unknown.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return width
}

// eraseLine returns the cursor to the start of the line and clears it
// (carriage return, then ANSI "erase in line").
const eraseLine = "\r\x1b[K"

// screen shows the progress. On a terminal: one status line, cut to the
// terminal's width (measured in cells by go-runewidth, asked again at every
// redraw so that a resized terminal is followed) so that it never wraps, and
// redrawn in place; a tenant that ends otherwise than cleaned is printed
// above it as it happens. Otherwise: one plain line per finished tenant.
type screen struct {
	w        io.Writer
	terminal bool
	// width is fixed for tests; 0 asks the terminal, 80 when it cannot say.
	width int
	drawn bool
}

func (s *screen) columns() int {
	if s.width > 0 {
		return s.width
	}
	if w := terminalWidth(s.w); w > 0 {
		return w
	}
	return 80
}

// fit cuts line to the terminal's width, one cell short: some terminals
// wrap at the last column.
func (s *screen) fit(line string) string {
	return runewidth.Truncate(line, s.columns()-1, "…")
}

func (s *screen) redraw(p *progress, elapsed time.Duration) {
	if !s.terminal {
		return
	}
	fmt.Fprint(s.w, eraseLine+s.fit(p.lineFor(elapsed, s.columns()-1)))
	s.drawn = true
}

func (s *screen) finished(p *progress, i int, elapsed time.Duration) {
	ev := p.last[i]
	line := fmt.Sprintf("[%d/%d] %s %s", p.finished, len(p.ids), p.ids[i], ev.Outcome)
	if ev.Reason != "" {
		line += ": " + safe(ev.Reason)
	}
	if !s.terminal {
		fmt.Fprintln(s.w, line)
		return
	}
	if ev.Outcome != tenant.OutcomeCleaned {
		// A failure, named now, above the status line, cut to the width
		// like it (the summary at the end has the whole reason).
		fmt.Fprint(s.w, eraseLine+s.fit(line)+"\n")
	}
	s.redraw(p, elapsed)
}

// end leaves the progress line.
func (s *screen) end() {
	if s.terminal && s.drawn {
		fmt.Fprintln(s.w)
	}
}
