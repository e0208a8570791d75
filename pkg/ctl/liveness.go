package ctl

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
)

// liveness is whether the pipeline's services run and keep up (status).
type liveness struct {
	Consumers []bus.ConsumerLiveness `json:"consumers"`
	// Replicas is how many cleaner replicas report their pace now.
	Replicas int `json:"cleaner_replicas"`
	// Analyzer is its last pass (null when none was recorded).
	Analyzer *bus.AnalyzerPass `json:"analyzer_last_pass"`
}

// readLiveness reads the consumers and the analyzer's last pass; paces are
// the cleaner replicas' pace reports already read.
func readLiveness(ctx context.Context, b *bus.Bus, paces []bus.PaceReport) (liveness, error) {
	var l liveness
	var err error
	if l.Consumers, err = b.Consumers(ctx); err != nil {
		return l, err
	}
	l.Replicas = replicasIn(paces)
	p, found, err := b.LastAnalyzerPass(ctx)
	if err != nil {
		return l, err
	}
	if found {
		l.Analyzer = &p
	}
	return l, nil
}

// analyzerOverdue reports whether no analysis pass succeeded for two
// intervals.
func analyzerOverdue(now time.Time, p *bus.AnalyzerPass) bool {
	if p == nil || p.Interval <= 0 {
		return false
	}
	last := p.Started
	if p.LastSuccess != nil {
		last = *p.LastSuccess
	}
	return now.Sub(last) > 2*p.Interval
}

// consumerState says whether a service consumes and how far behind it is.
func consumerState(cl bus.ConsumerLiveness) string {
	switch {
	case !cl.Exists:
		return "never started (no " + cl.Name + " ever ran against this NATS)"
	case !cl.Alive():
		return "NOT CONSUMING: no " + cl.Name + " is running"
	default:
		return "consuming"
	}
}

func printLiveness(w io.Writer, now time.Time, l liveness) {
	fmt.Fprintln(w, "Liveness:")
	tw := table(w)
	row(tw, "CONSUMER", "STATE", "PENDING", "ACK PENDING", "REDELIVERED", "LAST DELIVERY")
	for _, cl := range l.Consumers {
		last := "-"
		if cl.LastDelivered != nil {
			last = when(now, *cl.LastDelivered)
		}
		row(tw, cl.Name, consumerState(cl), cl.Pending, cl.AckPending, cl.Redelivered, last)
	}
	tw.Flush()
	fmt.Fprintf(w, "Cleaner replicas reporting: %d\n", l.Replicas)
	switch p := l.Analyzer; {
	case p == nil:
		fmt.Fprintln(w, "Analyzer: no pass recorded (not run yet against this NATS)")
	default:
		fmt.Fprintf(w, "Analyzer: last pass %s by %s, took %s: %d tenants seen, %d candidates", when(now, p.Finished), safe(p.By),
			p.Finished.Sub(p.Started).Round(time.Millisecond), p.Seen, p.Candidates)
		if p.Error != "" {
			fmt.Fprintf(w, "; FAILED: %s", safe(p.Error))
		}
		if analyzerOverdue(now, p) {
			fmt.Fprintf(w, "; OVERDUE: no successful pass for more than two intervals (%s)", p.Interval)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
}

// replicasIn counts the cleaner replicas of pace reports (a replica reports
// once per shard in a sharded fleet).
func replicasIn(paces []bus.PaceReport) int {
	replicas := map[string]bool{}
	for _, p := range paces {
		replicas[p.By] = true
	}
	return len(replicas)
}
