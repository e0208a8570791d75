package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-runewidth"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// follower delivers the events published after it started.
type follower struct {
	events chan tenant.Event
	done   chan struct{}
	once   sync.Once
	cc     jetstream.ConsumeContext
}

// follow starts following the event stream right after its current last
// message. Starting from a stream sequence rather than a time means no event
// is missed or replayed whatever the clocks of this machine and the server.
func follow(ctx context.Context, b *bus.Bus) (*follower, error) {
	js := b.JetStream()
	stream, err := js.Stream(ctx, bus.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.EventSubjects},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	f := &follower{events: make(chan tenant.Event, 256), done: make(chan struct{})}
	f.cc, err = cons.Consume(func(msg jetstream.Msg) {
		var ev tenant.Event
		if json.Unmarshal(msg.Data(), &ev) != nil || ev.TenantID == "" {
			return
		}
		select {
		case f.events <- ev:
		case <-f.done:
		}
	})
	if err != nil {
		return nil, fmt.Errorf("follow events: %w", err)
	}
	return f, nil
}

func (f *follower) stop() {
	f.once.Do(func() {
		close(f.done)
		f.cc.Stop()
	})
}

// finalForWait are the outcomes that end a tenant's wait; marked, draining,
// capped and paused are progress.
var finalForWait = map[tenant.Outcome]bool{
	tenant.OutcomeCleaned: true,
	tenant.OutcomeRefused: true,
	tenant.OutcomeStuck:   true,
	tenant.OutcomeHeld:    true,
	tenant.OutcomeDead:    true,
}

// progress tracks the requested tenants through their events.
type progress struct {
	ids      []tenant.ID
	index    map[tenant.ID]int
	last     []tenant.Event // the latest event of each tenant (zero: none yet)
	final    []bool
	finished int
}

func newProgress(ids []tenant.ID) *progress {
	p := &progress{ids: ids, index: map[tenant.ID]int{}, last: make([]tenant.Event, len(ids)), final: make([]bool, len(ids))}
	for i, id := range ids {
		p.index[id] = i
	}
	return p
}

// apply records ev; it returns the tenant's index and whether this event
// finished it.
func (p *progress) apply(ev tenant.Event) (int, bool) {
	i, ok := p.index[ev.TenantID]
	if !ok || p.final[i] {
		return -1, false
	}
	p.last[i] = ev
	if finalForWait[ev.Outcome] {
		p.final[i] = true
		p.finished++
		return i, true
	}
	return i, false
}

func (p *progress) done() bool { return p.finished == len(p.ids) }

// tally counts the tenants per outcome, finished ones and the rest apart,
// in pipeline order.
func (p *progress) tally(final bool) string {
	order := []tenant.Outcome{tenant.OutcomeCleaned, tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeHeld,
		tenant.OutcomeDead, tenant.OutcomeDraining, tenant.OutcomeCapped, tenant.OutcomePaused, tenant.OutcomeMarked,
		tenant.OutcomeRequested, ""}
	n := map[tenant.Outcome]int{}
	for i, ev := range p.last {
		if p.final[i] == final {
			n[ev.Outcome]++
		}
	}
	var parts []string
	for _, o := range order {
		if n[o] > 0 {
			name := string(o)
			if o == "" {
				name = "published"
			}
			parts = append(parts, fmt.Sprintf("%d %s", n[o], name))
		}
	}
	return strings.Join(parts, ", ")
}

// lineFor is the progress line,
// [#####-----] 3/10 finished (2 cleaned, 1 refused) | 7 in progress (…) | 12s,
// or the most detailed form of it that fits in width cells (0:
// no limit): with the bar and each outcome counted, then without the bar,
// then fewer counts; the shortest may still need cutting.
func (p *progress) lineFor(elapsed time.Duration, width int) string {
	const barWidth = 24
	filled := 0
	if len(p.ids) > 0 {
		filled = p.finished * barWidth / len(p.ids)
	}
	bar := "[" + strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled) + "] "
	finished := fmt.Sprintf("%d/%d finished", p.finished, len(p.ids))
	finishedTally := finished
	if t := p.tally(true); t != "" {
		finishedTally += " (" + t + ")"
	}
	rest, restTally := "", ""
	if n := len(p.ids) - p.finished; n > 0 {
		rest = fmt.Sprintf(" | %d in progress", n)
		restTally = rest + " (" + p.tally(false) + ")"
	}
	took := " | " + short(elapsed)
	candidates := []string{
		bar + finishedTally + restTally + took,
		finishedTally + restTally + took,
		finishedTally + rest + took,
		finished + rest + took,
	}
	for _, c := range candidates {
		if width <= 0 || runewidth.StringWidth(c) <= width {
			return c
		}
	}
	return candidates[len(candidates)-1]
}

// waitFor shows the progress of the tenants of p until each one finished,
// the timeout passed or ctx was cancelled, then the summary.
func (c *CLI) waitFor(ctx context.Context, f *follower, p *progress, timeout time.Duration) int {
	terminal := isTerminal(c.Stdout)
	if c.terminal != nil {
		terminal = *c.terminal
	}
	scr := &screen{w: c.Stdout, terminal: terminal, width: c.width}
	start := time.Now()
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	var tick <-chan time.Time
	if terminal {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tick = t.C
	}
	if !terminal {
		fmt.Fprintf(c.Stdout, "waiting for %s (marked and draining are progress; Ctrl-C stops waiting, not the cleanup)\n",
			plural(len(p.ids)-p.finished, "tenant"))
	}
	scr.redraw(p, 0)
	for !p.done() {
		select {
		case ev := <-f.events:
			if i, fin := p.apply(ev); fin {
				scr.finished(p, i, time.Since(start))
			} else if i >= 0 {
				scr.redraw(p, time.Since(start))
			}
		case <-tick:
			scr.redraw(p, time.Since(start))
		case <-deadline:
			scr.end()
			c.summary(p)
			c.errorf("timed out after %s: %s unfinished (follow them with tenantctl watch, or tenantctl status TENANT_ID):\n  %s",
				timeout, plural(len(p.ids)-p.finished, "tenant"), strings.Join(p.unfinished(), "\n  "))
			return exitFailed
		case <-ctx.Done():
			scr.end()
			c.summary(p)
			c.errorf("interrupted: %d of %d finished; the requests stay published and the pipeline goes on (tenantctl watch re-attaches)",
				p.finished, len(p.ids))
			return exitInterrupted
		}
	}
	scr.end()
	return c.summary(p)
}

// warnIfNotConsuming says at once when no marker or no cleaner is consuming:
// the requests then wait in NATS and --wait would wait for nothing. A
// service between two pulls looks idle for an instant, so a consumer is
// looked at a few times over notConsumingAfter before it is called dead.
func (c *CLI) warnIfNotConsuming(ctx context.Context, b *bus.Bus) {
	deadline := time.Now().Add(notConsumingAfter)
	seen := map[string]bool{}
	for {
		consumers, err := b.Consumers(ctx)
		if err != nil {
			c.errorf("warning: cannot tell whether the marker and the cleaner run: %v", err)
			return
		}
		var dead []bus.ConsumerLiveness
		for _, cl := range consumers {
			if cl.Alive() {
				seen[cl.Name] = true
			}
			if !seen[cl.Name] {
				dead = append(dead, cl)
			}
		}
		if len(dead) == 0 {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			for _, cl := range dead {
				why := fmt.Sprintf("%d messages waiting for it", cl.Pending)
				if !cl.Exists {
					why = "none ever ran against this NATS"
				}
				c.errorf("warning: no %s is consuming (%s): the requests wait in NATS until one runs; "+
					"tenantctl status shows the pipeline's liveness", cl.Name, why)
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(notConsumingPoll):
		}
	}
}

// How long and how often warnIfNotConsuming looks.
const (
	notConsumingAfter = 1500 * time.Millisecond
	notConsumingPoll  = 100 * time.Millisecond
)

func (p *progress) unfinished() []string {
	var out []string
	for i, id := range p.ids {
		if !p.final[i] {
			out = append(out, string(id))
		}
	}
	return out
}

// summary prints each tenant's outcome and reason and returns exitOK if all
// were cleaned.
func (c *CLI) summary(p *progress) int {
	fmt.Fprintln(c.Stdout)
	tw := table(c.Stdout)
	row(tw, "TENANT", "OUTCOME", "REASON")
	cleaned := 0
	for i, id := range p.ids {
		ev := p.last[i]
		outcome := string(ev.Outcome)
		switch {
		case !p.final[i] && ev.Outcome == "":
			outcome = "unfinished (no event yet)"
		case !p.final[i]:
			outcome = "unfinished (" + outcome + ")"
		case ev.Outcome == tenant.OutcomeCleaned:
			cleaned++
		}
		row(tw, id, outcome, orDash(ev.Reason))
	}
	tw.Flush()
	fmt.Fprintf(c.Stdout, "\n%d of %d cleaned", cleaned, len(p.ids))
	if t := p.tally(true); t != "" && cleaned != p.finished {
		fmt.Fprintf(c.Stdout, " (%s)", t)
	}
	if rest := len(p.ids) - p.finished; rest > 0 {
		fmt.Fprintf(c.Stdout, "; %d unfinished", rest)
	}
	fmt.Fprintln(c.Stdout)
	if cleaned == len(p.ids) {
		return exitOK
	}
	return exitFailed
}
