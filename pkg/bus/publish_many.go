package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	rec := &recorder{b: b, ctx: context.WithoutCancel(ctx)}
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

// recorder records events (state and event message) with asynchronous
// publishes. A tenant's state is created with "no message on its key yet" as
// the condition; when that fails (the tenant has a state already, or the
// server could not be asked), the state is recorded with recordState's
// compare-and-set loop instead.
type recorder struct {
	b   *Bus
	ctx context.Context // not cancelled with the caller's: the requests are out
	// sent: records whose publishes are not settled yet, oldest first.
	sent []sentRecord
}

type sentRecord struct {
	ev           tenant.Event
	sent         time.Time
	state, event jetstream.PubAckFuture // either may be nil when it could not be sent
	stateErr     error
}

func (r *recorder) inflight() int { return 2 * len(r.sent) }

// add sends ev's state and event.
func (r *recorder) add(ev tenant.Event) {
	b := r.b
	ev.Service = b.name
	s := sentRecord{ev: ev, sent: time.Now()}
	key := keyTenant + string(ev.TenantID)
	state, err := json.Marshal(tenant.State{}.Apply(ev))
	if err == nil {
		s.state, err = b.js.PublishAsync(kvSubjectPrefix+BucketState+"."+key, state, jetstream.WithExpectLastSequencePerSubject(0))
	}
	s.stateErr = err
	if body, err := json.Marshal(ev); err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", err)
	} else if s.event, err = b.js.PublishAsync(EventSubject(ev.Outcome), body); err != nil {
		b.log.Error("publish event", "tenant_id", ev.TenantID, "outcome", ev.Outcome, "error", unavailable(err))
	}
	r.sent = append(r.sent, s)
}

// trim settles the oldest records until at most room publishes are in flight.
func (r *recorder) trim(room int) {
	for len(r.sent) > 0 && r.inflight() > max(room, 0) {
		r.settle()
	}
}

// finish settles every record.
func (r *recorder) finish() {
	for len(r.sent) > 0 {
		r.settle()
	}
}

func (r *recorder) settle() {
	s := r.sent[0]
	r.sent = r.sent[1:]
	b := r.b
	if s.event != nil {
		if _, err := waitAck(r.ctx, s.event, s.sent); err != nil {
			b.log.Error("publish event", "tenant_id", s.ev.TenantID, "outcome", s.ev.Outcome, "error", unavailable(err))
		}
	}
	if s.state != nil && s.stateErr == nil {
		_, s.stateErr = waitAck(r.ctx, s.state, s.sent)
	}
	if s.stateErr == nil {
		return
	}
	// Usually the tenant has a state already (wrong last sequence). After a
	// timeout the create may have been stored; the compare-and-set loop
	// copes with both.
	var apiErr *jetstream.APIError
	if !errors.As(s.stateErr, &apiErr) || (apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequence &&
		apiErr.ErrorCode != jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		b.log.Debug("create tenant state failed; retrying with compare-and-set", "tenant_id", s.ev.TenantID, "error", s.stateErr)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
	defer cancel()
	if err := b.healed(ctx, func() error { return b.recordState(ctx, s.ev) }); err != nil {
		b.log.Error("record tenant state", "tenant_id", s.ev.TenantID, "outcome", s.ev.Outcome, "error", err)
	}
}

// kvSubjectPrefix is where a KV bucket's keys are stored: $KV.<bucket>.<key>.
const kvSubjectPrefix = "$KV."
