package bus

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// PublishRequest publishes a cleanup request on SubjectCandidate and records
// the tenant as requested (state and event). The message id is a random
// nonce: a retry of this publish is stored once, and nobody can forge an id
// that would make the server drop it.
func (b *Bus) PublishRequest(ctx context.Context, req tenant.Request) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	at := time.Now().UTC() // before publishing: the request precedes whatever the marker reports
	id := newNonce()
	var ack *jetstream.PubAck
	err = b.healed(ctx, func() (err error) {
		ack, err = b.js.Publish(ctx, SubjectCandidate, body, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("publish request for %s: %w", req.ID, unavailable(err))
	}
	if !ack.Duplicate {
		b.record(ctx, tenant.Event{TenantID: req.ID, Outcome: tenant.OutcomeRequested, RequestedBy: req.RequestedBy, Time: at})
	}
	return nil
}

// newNonce is a random message id nobody can guess (128 bits).
func newNonce() string { return rand.Text() }

// ScheduleDrainCheck has the server deliver dc on the tenant's drain subject
// at the given time. The tenant has one schedule subject, so a new schedule
// replaces a pending one instead of adding a second. A time not in the future
// is delivered right away.
func (b *Bus) ScheduleDrainCheck(ctx context.Context, dc tenant.DrainCheck, at time.Time) error {
	body, err := json.Marshal(dc)
	if err != nil {
		return err
	}
	err = b.healed(ctx, func() (err error) {
		if !at.After(time.Now()) {
			_, err = b.js.Publish(ctx, DrainSubject(dc.ID), body)
		} else {
			_, err = b.js.Publish(ctx, ScheduleSubject(dc.ID), body,
				jetstream.WithScheduleAt(at), jetstream.WithScheduleTarget(DrainSubject(dc.ID)))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("schedule drain check of %s: %w", dc.ID, unavailable(err))
	}
	return nil
}

// Report logs an outcome (with the tenant id), records it in the tenant's
// state and publishes it as an event. Failures to record or publish are
// logged, not returned: the outcome already happened.
func (b *Bus) Report(ctx context.Context, ev tenant.Event) {
	ev.Service = b.name
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	attrs := []any{"tenant_id", ev.TenantID, "outcome", ev.Outcome}
	if ev.Input != "" {
		attrs = append(attrs, "input", ev.Input)
	}
	if ev.Reason != "" {
		attrs = append(attrs, "reason", ev.Reason)
	}
	if ev.DocumentsLeft != nil {
		attrs = append(attrs, "documents_left", *ev.DocumentsLeft)
	}
	if ev.PairsLeft != nil {
		attrs = append(attrs, "pairs_left", *ev.PairsLeft)
	}
	if ev.NextCheckAt != nil {
		attrs = append(attrs, "next_check_at", ev.NextCheckAt.UTC().Format(time.RFC3339))
	}
	if ev.RequestedBy != "" {
		attrs = append(attrs, "requested_by", ev.RequestedBy)
	}
	switch ev.Outcome {
	case tenant.OutcomeRefused, tenant.OutcomeStuck, tenant.OutcomeDead, tenant.OutcomePaused:
		b.log.Warn("tenant "+string(ev.Outcome), attrs...)
	default:
		b.log.Info("tenant "+string(ev.Outcome), attrs...)
	}
	if b.OnReport != nil {
		b.OnReport(ev)
	}
	b.record(ctx, ev)
}

// record stores ev in the tenant's state and publishes it as an event,
// logging (not returning) failures.
func (b *Bus) record(ctx context.Context, ev tenant.Event) {
	ev.Service = b.name
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := b.healed(pubCtx, func() error { return b.recordState(pubCtx, ev) }); err != nil {
		b.log.Error("record tenant state", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
	}
	body, err := json.Marshal(ev)
	if err == nil {
		err = b.healed(pubCtx, func() error { _, err := b.js.Publish(pubCtx, EventSubject(ev.Outcome), body); return err })
	}
	if err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
	}
}

// WatchEvents calls fn for every event published since the given time (all
// retained events when since is zero), in order, until stop is called.
func (b *Bus) WatchEvents(ctx context.Context, since time.Time, fn func(tenant.Event)) (stop func(), err error) {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{EventSubjects}}
	if !since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	var cons jetstream.Consumer
	err = b.healed(ctx, func() (err error) { cons, err = b.js.OrderedConsumer(ctx, StreamEvents, cfg); return err })
	if err != nil {
		return nil, fmt.Errorf("watch events: %w", err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		var ev tenant.Event
		if json.Unmarshal(msg.Data(), &ev) == nil {
			fn(ev)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watch events: %w", err)
	}
	return cc.Stop, nil
}
