package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// publishWindow bounds the messages PublishRequests has sent without their
// acknowledgement (requests, states and events together). It stays well
// below the client's own limit on pending asynchronous publishes.
const publishWindow = 1024

// ackTimeout bounds the wait for one acknowledgement of PublishRequests.
const ackTimeout = 10 * time.Second

// errAckTimeout is a publish that was sent but not acknowledged in time: the
// server may or may not have stored it.
var errAckTimeout = fmt.Errorf("no acknowledgement within %s: %w", ackTimeout, context.DeadlineExceeded)

// Published is the outcome of one request of PublishRequests.
type Published struct {
	Request tenant.Request
	// Duplicate: the server already had this request from this same call
	// (a retried publish) and dropped the copy; it is not recorded again.
	Duplicate bool
}

// PublishRequests does what PublishRequest does for each request, in order,
// without waiting for each round trip: the requests are published
// asynchronously with up to publishWindow unacknowledged at once. Their
// message ids are a random nonce of this call and the tenant id: a retry
// within the call is stored once, nobody can forge an id that would make the
// server drop one, and the next call publishes every request again. As each
// is acknowledged (in order), done is called with it, and a request that was
// not a duplicate is recorded as requested (state and event), also
// asynchronously, with the time taken before it was published, so that the
// state never overwrites a later outcome: a tenant without a state gets one
// by an asynchronous create that the server refuses if the key exists, and
// a tenant whose state exists (or changed meanwhile) is recorded with the
// compare-and-set loop of PublishRequest.
//
// The first failed (or unacknowledged) publish stops it: nothing more is
// published, the requests already sent are waited for (and those acknowledged
// passed to done and recorded), and the error is returned; when it failed
// because the requests stream is gone, the stream is recreated and the
// requests not acknowledged are published once more first. It returns once
// every acknowledged request is recorded. Failures to record are logged, not
// returned, as for PublishRequest.
func (b *Bus) PublishRequests(ctx context.Context, reqs []tenant.Request, done func(Published)) error {
	return b.publishFrom(ctx, &requestSource{list: reqs}, done)
}

// PublishRequestsFrom is PublishRequests for the requests received from
// reqs until it is closed, taken as they come while the window has room: a
// caller can publish requests as it finds them, and what it holds stays
// bounded by the window, whatever their number. While no request is waiting,
// it records those acknowledged meanwhile. It stops taking requests at the
// first failure (or when ctx ends): the caller must then stop sending.
func (b *Bus) PublishRequestsFrom(ctx context.Context, reqs <-chan tenant.Request, done func(Published)) error {
	return b.publishFrom(ctx, &requestSource{ch: reqs}, done)
}

// requestSource is where PublishRequests takes its requests: again first
// (those not acknowledged by an attempt that failed), then list, then ch
// until it is closed.
type requestSource struct {
	again []tenant.Request
	list  []tenant.Request
	ch    <-chan tenant.Request
}

// take returns the next request: ok false at the end, or, without wait,
// when none is waiting (ready false).
func (s *requestSource) take(ctx context.Context, wait bool) (req tenant.Request, ready, ok bool) {
	for _, q := range []*[]tenant.Request{&s.again, &s.list} {
		if len(*q) > 0 {
			req, *q = (*q)[0], (*q)[1:]
			return req, true, true
		}
	}
	if s.ch == nil {
		return req, true, false
	}
	if !wait {
		select {
		case req, ok = <-s.ch:
			return req, true, ok
		default:
			return req, false, true
		}
	}
	select {
	case req, ok = <-s.ch:
		return req, true, ok
	case <-ctx.Done():
		return req, true, false
	}
}

func (b *Bus) publishFrom(ctx context.Context, src *requestSource, done func(Published)) error {
	nonce := newNonce()
	left, err := b.publishRequests(ctx, src, nonce, done)
	if err != nil && missing(err) && ctx.Err() == nil {
		if rerr := b.restore(ctx); rerr != nil {
			b.log.Warn("recreate the missing streams and buckets", "error", rerr, "cause", err)
			return err
		}
		src.again = left // the requests not acknowledged first, in order, then the rest
		_, err = b.publishRequests(ctx, src, nonce, done)
	}
	return err
}

// pubAck is an asynchronous publish not settled yet.
type pubAck struct {
	f    jetstream.PubAckFuture
	sent time.Time
	// got: the outcome was taken from f (ack or err).
	got bool
	ack *jetstream.PubAck
	err error
}

// ready takes the outcome if it came (without waiting).
func (p *pubAck) ready() bool {
	if !p.got {
		select {
		case p.ack = <-p.f.Ok():
			p.got = true
		case p.err = <-p.f.Err():
			p.got = true
		default:
		}
	}
	return p.got
}

// wait waits for the outcome, up to ackTimeout after it was sent.
func (p *pubAck) wait(ctx context.Context) (*jetstream.PubAck, error) {
	if !p.got {
		p.ack, p.err = waitAck(ctx, p.f, p.sent)
		p.got = true
	}
	return p.ack, p.err
}

// publishRequests is one attempt of PublishRequests, taking requests from
// src until it has none or a publish fails; it returns the requests it took
// and did not see acknowledged (at most the window).
func (b *Bus) publishRequests(ctx context.Context, src *requestSource, nonce string, done func(Published)) (
	left []tenant.Request, firstErr error) {
	type pending struct {
		req tenant.Request
		ack pubAck
	}
	rec := newRecorder(b, context.WithoutCancel(ctx))
	var (
		inflight []*pending       // requests sent, oldest first
		unsent   []tenant.Request // the request taken but not sent, after a failure
	)
	// settle waits for the oldest request's acknowledgement.
	settle := func() {
		p := inflight[0]
		inflight = inflight[1:]
		ack, err := p.ack.wait(ctx)
		if err != nil {
			left = append(left, p.req)
			if firstErr == nil {
				firstErr = fmt.Errorf("publish request for %s: %w", p.req.ID, unavailable(err))
			}
			return
		}
		if done != nil {
			done(Published{Request: p.req, Duplicate: ack.Duplicate})
		}
		if !ack.Duplicate {
			rec.add(tenant.Event{TenantID: p.req.ID, Outcome: tenant.OutcomeRequested, RequestedBy: p.req.RequestedBy, Time: p.ack.sent})
		}
	}
	for {
		if len(inflight)+rec.inflight() >= publishWindow {
			// Full: settle down to half the window, oldest first, so that
			// the next publishes go out in a burst, not one per
			// acknowledgement.
			for len(inflight) > 0 && len(inflight)+rec.inflight() > publishWindow/2 && firstErr == nil {
				settle()
				rec.trim(publishWindow/2 - len(inflight))
			}
			rec.trim(publishWindow/2 - len(inflight))
		}
		for len(inflight) > 0 && firstErr != nil {
			settle()
		}
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		if firstErr != nil {
			break
		}
		req, ready, ok := src.take(ctx, false)
		if !ready {
			// No request waiting: record those acknowledged meanwhile, then
			// wait for the next.
			for len(inflight) > 0 && inflight[0].ack.ready() {
				settle()
			}
			rec.settleReady()
			req, _, ok = src.take(ctx, true)
		}
		if !ok {
			if src.ch != nil && firstErr == nil {
				firstErr = ctx.Err() // stopped waiting for requests
			}
			break
		}
		body, err := json.Marshal(req)
		if err != nil {
			firstErr = err
			unsent = append(unsent, req)
			break
		}
		at := time.Now().UTC() // before publishing: the request precedes whatever the marker reports
		f, err := b.js.PublishAsync(SubjectCandidate, body, jetstream.WithMsgID(nonce+"."+string(req.ID)))
		if err != nil {
			firstErr = fmt.Errorf("publish request for %s: %w", req.ID, unavailable(err))
			unsent = append(unsent, req)
			break
		}
		inflight = append(inflight, &pending{req: req, ack: pubAck{f: f, sent: at}})
		rec.trim(publishWindow - len(inflight))
	}
	for len(inflight) > 0 {
		settle()
	}
	rec.finish()
	return append(left, unsent...), firstErr
}

// waitAck waits for the acknowledgement of an asynchronous publish sent at
// the given time, up to ackTimeout after that.
func waitAck(ctx context.Context, f jetstream.PubAckFuture, sent time.Time) (*jetstream.PubAck, error) {
	t := time.NewTimer(time.Until(sent.Add(ackTimeout)))
	defer t.Stop()
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-t.C:
		return nil, errAckTimeout
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// recorder records events (state and event message) for PublishRequests:
// the event messages with asynchronous publishes; the state of a tenant that
// has none with an asynchronous create (a publish on the key's subject that
// the server refuses unless the key never had a value), and any other state
// through the key-value API (recordState's compare-and-set) by a few
// workers, so that a pass of thousands of requests does not wait for each
// round trip.
type recorder struct {
	b   *Bus
	ctx context.Context // not cancelled with the caller's: the requests are out
	// sent: event publishes and state creates not settled yet, oldest first.
	sent   []sentEvent
	states chan tenant.Event
	wg     sync.WaitGroup
}

// stateWorkers record the states of PublishRequests' requests that could
// not be created.
const stateWorkers = 8

type sentEvent struct {
	ev  tenant.Event
	ack pubAck
	// create: the publish creates the tenant's state (else it is the event).
	create bool
}

func newRecorder(b *Bus, ctx context.Context) *recorder {
	r := &recorder{b: b, ctx: ctx, states: make(chan tenant.Event, publishWindow)}
	for range stateWorkers {
		r.wg.Go(func() {
			for ev := range r.states {
				ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
				if err := b.healed(ctx, func() error { return b.recordState(ctx, ev) }); err != nil {
					b.log.Error("record tenant state", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
				}
				cancel()
			}
		})
	}
	return r
}

func (r *recorder) inflight() int { return len(r.sent) }

// add records ev: its state by an asynchronous create (or a worker), its
// event asynchronously.
func (r *recorder) add(ev tenant.Event) {
	b := r.b
	ev.Service = b.name
	if !r.create(ev) {
		r.states <- ev
	}
	body, err := json.Marshal(ev)
	if err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
		return
	}
	f, err := b.js.PublishAsync(EventSubject(ev.Outcome), body)
	if err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", unavailable(err))
		return
	}
	r.sent = append(r.sent, sentEvent{ev: ev, ack: pubAck{f: f, sent: time.Now()}})
}

// create sends the state ev gives a tenant without one, as the key-value
// API's Create would, without waiting: the server stores it only if the
// tenant's key never had a value (last sequence 0 on its subject). False
// when it was not sent (a state that needs a TTL, which only the key-value
// API sets): the caller records it the other way.
func (r *recorder) create(ev tenant.Event) bool {
	b := r.b
	if ev.TenantID == "" {
		return true // recordState records nothing either
	}
	if _, err := tenant.ParseID(string(ev.TenantID)); err != nil {
		return false // not a key to build a subject from: the key-value API checks it
	}
	next := tenant.State{}.Apply(ev)
	if next.Phase == tenant.PhaseRefused {
		return false
	}
	body, err := json.Marshal(next)
	if err != nil {
		return false
	}
	f, err := b.js.PublishAsync(stateSubject(keyTenant+string(ev.TenantID)), body, jetstream.WithExpectLastSequencePerSubject(0))
	if err != nil {
		return false
	}
	r.sent = append(r.sent, sentEvent{ev: ev, ack: pubAck{f: f, sent: time.Now()}, create: true})
	return true
}

// stateSubject is the subject the state bucket stores key on.
func stateSubject(key string) string { return "$KV." + BucketState + "." + key }

// trim settles the oldest publishes until at most room are in flight.
func (r *recorder) trim(room int) {
	for len(r.sent) > 0 && r.inflight() > max(room, 0) {
		r.settle()
	}
}

// finish settles every publish and waits for the states.
func (r *recorder) finish() {
	for len(r.sent) > 0 {
		r.settle()
	}
	close(r.states)
	r.wg.Wait()
}

// settleReady settles the oldest publishes whose outcome came.
func (r *recorder) settleReady() {
	for len(r.sent) > 0 && r.sent[0].ack.ready() {
		r.settle()
	}
}

func (r *recorder) settle() {
	s := &r.sent[0]
	r.sent = r.sent[1:]
	_, err := s.ack.wait(r.ctx)
	switch {
	case err == nil:
	case s.create:
		// The key has a value already (or had one: a deleted state), the
		// bucket is gone, or no answer came: the compare-and-set loop reads
		// what is there and records it, healing the bucket if need be.
		r.states <- s.ev
	default:
		r.b.log.Error("publish event", "tenant_id", s.ev.TenantID, "outcome", s.ev.Outcome, "error", unavailable(err))
	}
}
