package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keyAnalyzerPass is the state-bucket key of the analyzer's last pass.
const keyAnalyzerPass = "analyzer.last"

// AnalyzerPass is what the analyzer's last pass did, for tenantctl status.
type AnalyzerPass struct {
	// By is the analyzer process (analyzer@host/pid).
	By string `json:"by"`
	// Started and Finished bound the pass.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Seen is how many tenants it looked at, Candidates how many were
	// eligible.
	Seen       int `json:"seen"`
	Candidates int `json:"candidates"`
	// Error is why the pass failed ("" when it succeeded).
	Error string `json:"error,omitempty"`
	// LastSuccess is when a pass last succeeded (this one or an earlier).
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// Interval is ANALYZER_INTERVAL (0 for analyzer --once).
	Interval time.Duration `json:"interval"`
}

// SetAnalyzerPass records the analyzer's last pass; a failed pass keeps the
// time of the last success recorded before it.
func (b *Bus) SetAnalyzerPass(ctx context.Context, p AnalyzerPass) error {
	if p.Error != "" && p.LastSuccess == nil {
		if prev, found, err := b.LastAnalyzerPass(ctx); err == nil && found {
			p.LastSuccess = prev.LastSuccess
		}
	}
	if p.Error == "" {
		at := p.Finished
		p.LastSuccess = &at
	}
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.healed(ctx, func() error { _, err := b.state.Put(ctx, keyAnalyzerPass, body); return err })
}

// LastAnalyzerPass reads the analyzer's last pass; found is false when no
// analyzer recorded one.
func (b *Bus) LastAnalyzerPass(ctx context.Context) (AnalyzerPass, bool, error) {
	var p AnalyzerPass
	found, err := b.getJSON(ctx, keyAnalyzerPass, &p)
	return p, found, err
}

// ConsumerLiveness is one of the pipeline's durable consumers as the server
// sees it: its backlog and whether a service is pulling from it.
type ConsumerLiveness struct {
	Name   string `json:"name"`
	Stream string `json:"stream"`
	// Exists is false when no service ever created the consumer.
	Exists bool `json:"exists"`
	// Pending is how many messages wait to be delivered, AckPending how many
	// were delivered and not yet acknowledged (in work or lost with a
	// replica), Redelivered how many of those were delivered more than once.
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	// Pulling is the number of pull requests waiting: 0 means no service is
	// consuming now.
	Pulling int `json:"pulling"`
	// Working is true while messages delivered less than an ack wait ago
	// are unacknowledged: a service works on them.
	Working bool `json:"working"`
	// LastDelivered is when a message was last delivered to it.
	LastDelivered *time.Time `json:"last_delivered,omitempty"`
}

// Alive reports whether a service is consuming now: a pull request waits,
// or a message delivered less than an ack wait ago is still being worked on
// (a busy service has no pull request waiting: each pulls one message at a
// time; a dead one's messages are redelivered after the ack wait).
func (c ConsumerLiveness) Alive() bool {
	return c.Exists && (c.Pulling > 0 || c.Working)
}

// Consumers reads the marker's and the cleaner's consumers.
func (b *Bus) Consumers(ctx context.Context) ([]ConsumerLiveness, error) {
	var out []ConsumerLiveness
	for _, name := range []string{ConsumerMarker, ConsumerCleaner} {
		cl := ConsumerLiveness{Name: name, Stream: ConsumerStream(name)}
		// Not healed: a missing consumer is an answer here, not a loss.
		var info *jetstream.ConsumerInfo
		c, err := b.js.Consumer(ctx, cl.Stream, name)
		if err == nil {
			info, err = c.Info(ctx)
		}
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound):
		case err != nil:
			return nil, fmt.Errorf("read consumer %s: %w", name, unavailable(err))
		default:
			cl.Exists = true
			cl.Pending, cl.AckPending, cl.Redelivered, cl.Pulling = info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting
			if info.Delivered.Last != nil {
				t := info.Delivered.Last.UTC()
				cl.LastDelivered = &t
				cl.Working = info.NumAckPending > 0 && time.Since(t) < info.Config.AckWait
			}
		}
		out = append(out, cl)
	}
	return out, nil
}
