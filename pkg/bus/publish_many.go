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
const publishWindow = 256

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
// state never overwrites a later outcome. A request whose state changed
// meanwhile is recorded with the compare-and-set loop of PublishRequest.
//
// The first failed (or unacknowledged) publish stops it: nothing more is
// published, the requests already sent are waited for (and those acknowledged
// passed to done and recorded), and the error is returned; when it failed
// because the requests stream is gone, the stream is recreated and the
// requests not acknowledged are published once more first. It returns once
// every acknowledged request is recorded. Failures to record are logged, not
// returned, as for PublishRequest.
func (b *Bus) PublishRequests(ctx context.Context, reqs []tenant.Request, done func(Published)) error {
	nonce := newNonce()
	left, err := b.publishRequests(ctx, reqs, nonce, done)
	if err != nil && missing(err) && ctx.Err() == nil {
		if rerr := b.restore(ctx); rerr != nil {
			b.log.Warn("recreate the missing streams and buckets", "error", rerr, "cause", err)
			return err
		}
		_, err = b.publishRequests(ctx, left, nonce, done)
	}
	return err
}

// publishRequests is one attempt of PublishRequests; it returns the requests
// it did not see acknowledged.
func (b *Bus) publishRequests(ctx context.Context, reqs []tenant.Request, nonce string, done func(Published)) (
	left []tenant.Request, firstErr error) {
	type pending struct {
		req tenant.Request
		at  time.Time // when it was sent
		ack jetstream.PubAckFuture
	}
	rec := newRecorder(b, context.WithoutCancel(ctx))
	var (
		inflight []pending        // requests sent, oldest first
		unsent   []tenant.Request // requests not sent, after a failure
	)
	// settle waits for the oldest request's acknowledgement.
	settle := func() {
		p := inflight[0]
		inflight = inflight[1:]
		ack, err := waitAck(ctx, p.ack, p.at)
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
			rec.add(tenant.Event{TenantID: p.req.ID, Outcome: tenant.OutcomeRequested, RequestedBy: p.req.RequestedBy, Time: p.at})
		}
	}
	for i, req := range reqs {
		for len(inflight) > 0 && (len(inflight)+rec.inflight() >= publishWindow || firstErr != nil) {
			settle()
		}
		if firstErr == nil {
			firstErr = ctx.Err()
		}
		if firstErr != nil {
			unsent = reqs[i:]
			break
		}
		body, err := json.Marshal(req)
		if err != nil {
			firstErr = err
			unsent = reqs[i:]
			break
		}
		at := time.Now().UTC() // before publishing: the request precedes whatever the marker reports
		ack, err := b.js.PublishAsync(SubjectCandidate, body, jetstream.WithMsgID(nonce+"."+string(req.ID)))
		if err != nil {
			firstErr = fmt.Errorf("publish request for %s: %w", req.ID, unavailable(err))
			unsent = reqs[i:]
			break
		}
		inflight = append(inflight, pending{req: req, at: at, ack: ack})
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
// the event messages with asynchronous publishes, the states through the
// key-value API (recordState's compare-and-set) by a few workers, so that a
// pass of thousands of requests does not wait for each round trip.
type recorder struct {
	b   *Bus
	ctx context.Context // not cancelled with the caller's: the requests are out
	// sent: event publishes not settled yet, oldest first.
	sent   []sentEvent
	states chan tenant.Event
	wg     sync.WaitGroup
}

// stateWorkers record the states of PublishRequests' requests.
const stateWorkers = 8

type sentEvent struct {
	ev   tenant.Event
	sent time.Time
	ack  jetstream.PubAckFuture
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

// add records ev: its state by a worker, its event asynchronously.
func (r *recorder) add(ev tenant.Event) {
	b := r.b
	ev.Service = b.name
	r.states <- ev
	body, err := json.Marshal(ev)
	if err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
		return
	}
	ack, err := b.js.PublishAsync(EventSubject(ev.Outcome), body)
	if err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", unavailable(err))
		return
	}
	r.sent = append(r.sent, sentEvent{ev: ev, sent: time.Now(), ack: ack})
}

// trim settles the oldest event publishes until at most room are in flight.
func (r *recorder) trim(room int) {
	for len(r.sent) > 0 && r.inflight() > max(room, 0) {
		r.settle()
	}
}

// finish settles every event publish and waits for the states.
func (r *recorder) finish() {
	for len(r.sent) > 0 {
		r.settle()
	}
	close(r.states)
	r.wg.Wait()
}

func (r *recorder) settle() {
	s := r.sent[0]
	r.sent = r.sent[1:]
	if _, err := waitAck(r.ctx, s.ack, s.sent); err != nil {
		r.b.log.Error("publish event", "tenant_id", s.ev.TenantID, "outcome", s.ev.Outcome, "error", unavailable(err))
	}
}
