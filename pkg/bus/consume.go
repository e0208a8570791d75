package bus

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Delivery is one message handed to a Handler.
type Delivery struct {
	Subject      string
	Data         []byte
	NumDelivered uint64
	// Tenant and RequestedBy are set by the handler as soon as it knows them,
	// so that the loop's log lines and events about the message carry them.
	Tenant      tenant.ID
	RequestedBy string
}

// Handler processes one delivery. Its error decides what happens to the
// message: nil acknowledges it; a tenant.RefusedError or tenant.ErrInvalidID
// terminates it (never retried) and reports it refused (or held); a
// tenant.LaterError redelivers it after the delay it names; a
// tenant.ErrUnavailable error redelivers it with a short backoff; any other
// error redelivers it with backoff until it has failed MaxFailures times,
// then moves it to the dead-letter stream. A handler never acknowledges by
// itself and never sleeps.
type Handler func(ctx context.Context, d *Delivery) error

// ConsumeOptions configure a consume loop.
type ConsumeOptions struct {
	// Consumer is the durable consumer name, shared by all replicas.
	Consumer string
	// FilterSubject selects the messages of the work stream it consumes.
	FilterSubject string
	// Concurrency is the number of messages processed at once by this replica.
	Concurrency int
	// AckWait is how long the server waits for an acknowledgement before
	// redelivering; the loop reports progress while a handler runs, so a long
	// cleanup is not redelivered. Default 60s.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight work may continue after ctx is
	// cancelled before it is itself cancelled and handed back. Default 20s.
	ShutdownGrace time.Duration
	// MaxFailures is how many times a message may fail (errors other than
	// refusals, "later" and unavailable dependencies) before it is moved to
	// the dead-letter stream with the reason. Default 5.
	MaxFailures int
}

// Consume runs the consume loop until ctx is cancelled, then stops fetching,
// lets in-flight handlers finish (or hands their messages back after the
// grace period) and returns nil, also when ctx ends while the consumer is
// being set up. It returns an error only if the consumer cannot be set up.
func (b *Bus) Consume(ctx context.Context, opts ConsumeOptions, h Handler) error {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	if opts.AckWait <= 0 {
		opts.AckWait = 60 * time.Second
	}
	if opts.ShutdownGrace <= 0 {
		opts.ShutdownGrace = 20 * time.Second
	}
	if opts.MaxFailures <= 0 {
		opts.MaxFailures = 5
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, StreamWork, jetstream.ConsumerConfig{
		Durable:       opts.Consumer,
		FilterSubject: opts.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it began: nothing is in flight
		}
		return fmt.Errorf("create consumer %s: %w", opts.Consumer, err)
	}

	// In-flight work outlives ctx by the grace period.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(opts.ShutdownGrace, cancelWork) })
	defer stopGrace()

	var wg sync.WaitGroup
	for range opts.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.worker(ctx, workCtx, cons, opts, h)
		}()
	}
	wg.Wait()
	return nil
}

func (b *Bus) worker(ctx, workCtx context.Context, cons jetstream.Consumer, opts ConsumeOptions, h Handler) {
	failures := 0
	for ctx.Err() == nil {
		fetchCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fetchCtx))
		if err != nil {
			cancel()
			failures++
			if failures == 1 || failures%30 == 0 {
				b.log.Warn("fetch from JetStream failed; retrying", "consumer", opts.Consumer, "error", err)
			}
			wait(ctx, min(time.Duration(failures)*200*time.Millisecond, 2*time.Second))
			continue
		}
		for msg := range batch.Messages() {
			if ctx.Err() != nil { // arrived as we stopped: hand it straight back
				_ = msg.Nak()
				continue
			}
			b.process(workCtx, msg, opts, h)
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) &&
			!errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoMessages) {
			failures++
			if failures == 1 || failures%30 == 0 {
				b.log.Warn("fetch from JetStream failed; retrying", "consumer", opts.Consumer, "error", err)
			}
			wait(ctx, min(time.Duration(failures)*200*time.Millisecond, 2*time.Second))
			continue
		}
		failures = 0
	}
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// process runs the handler on one message with progress reports, recovers a
// panic, and acknowledges according to the error.
func (b *Bus) process(ctx context.Context, msg jetstream.Msg, opts ConsumeOptions, h Handler) {
	d := &Delivery{Subject: msg.Subject(), Data: msg.Data()}
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered = md.NumDelivered
	}
	var streamSeq uint64
	if md, err := msg.Metadata(); err == nil {
		streamSeq = md.Sequence.Stream
	}
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(opts.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	err := safeCall(ctx, d, h)
	close(stopProgress)
	b.settle(ctx, msg, d, err, opts, streamSeq)
}

func safeCall(ctx context.Context, d *Delivery, h Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
		}
	}()
	return h(ctx, d)
}

// settle maps the handler's error to an acknowledgement verb, and logs and
// reports what the handler did not.
func (b *Bus) settle(ctx context.Context, msg jetstream.Msg, d *Delivery, err error, opts ConsumeOptions, seq uint64) {
	var (
		refused *tenant.RefusedError
		later   *tenant.LaterError
	)
	switch {
	case err == nil:
		_ = msg.Ack()
	case errors.As(err, &refused):
		outcome := refused.Outcome
		if outcome == "" {
			outcome = tenant.OutcomeRefused
		}
		b.Report(ctx, tenant.Event{TenantID: refused.ID, Outcome: outcome, Reason: refused.Reason, RequestedBy: d.RequestedBy})
		_ = msg.TermWithReason(string(outcome) + ": " + refused.Reason)
	case errors.Is(err, tenant.ErrInvalidID):
		b.Report(ctx, tenant.Event{Input: tenant.QuoteInput(string(d.Data)), Outcome: tenant.OutcomeRefused,
			Reason: err.Error()})
		_ = msg.TermWithReason("invalid tenant id")
	case errors.As(err, &later):
		b.log.Info("retry later", "tenant_id", d.Tenant, "reason", later.Reason, "delay", later.Delay.String(), "error", later.Err)
		_ = msg.NakWithDelay(later.Delay)
	case ctx.Err() != nil:
		b.log.Info("shutting down: handing message back", "tenant_id", d.Tenant, "subject", d.Subject)
		_ = msg.Nak()
	case errors.Is(err, tenant.ErrUnavailable):
		delay := unavailableDelay(d.NumDelivered)
		b.log.Warn("a dependency is unavailable; will retry", "tenant_id", d.Tenant, "subject", d.Subject,
			"deliveries", d.NumDelivered, "retry_in", delay.String(), "error", err)
		_ = msg.NakWithDelay(delay)
	default:
		failures := b.countFailure(ctx, opts.Consumer, seq)
		if failures >= opts.MaxFailures {
			if derr := b.deadLetter(ctx, opts.Consumer, d, err, failures); derr != nil {
				b.log.Error("move message to the dead-letter stream failed; will retry", "tenant_id", d.Tenant,
					"subject", d.Subject, "error", derr)
				_ = msg.NakWithDelay(retryDelay(uint64(failures)))
				return
			}
			_ = msg.TermWithReason("dead-lettered after " + fmt.Sprint(failures) + " failures")
			return
		}
		delay := retryDelay(uint64(failures))
		b.log.Error("processing failed; will retry", "tenant_id", d.Tenant, "subject", d.Subject,
			"failures", failures, "max_failures", opts.MaxFailures, "retry_in", delay.String(), "error", err)
		_ = msg.NakWithDelay(delay)
	}
}

// retryDelay backs off failed deliveries: 2s, 4s, 8s … up to 5 minutes.
func retryDelay(failures uint64) time.Duration {
	d := 2 * time.Second
	for i := uint64(1); i < failures && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

// unavailableDelay backs off while a dependency is down: 1s, 2s, 4s … up to
// 15s, so that work resumes soon after it comes back.
func unavailableDelay(delivered uint64) time.Duration {
	d := time.Second
	for i := uint64(1); i < delivered && d < 15*time.Second; i++ {
		d *= 2
	}
	return min(d, 15*time.Second)
}

// countFailure adds one to the message's failure count (shared by all
// replicas, keyed by consumer and stream sequence) and returns the new count.
// If the count cannot be kept, it errs on the side of retrying.
func (b *Bus) countFailure(ctx context.Context, consumer string, seq uint64) int {
	key := fmt.Sprintf("%s.%d", consumer, seq)
	for attempt := 0; attempt < 5; attempt++ {
		entry, err := b.failures.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := b.failures.Create(ctx, key, []byte("1")); err == nil {
				return 1
			}
			continue
		}
		if err != nil {
			return 1
		}
		n, _ := strconv.Atoi(string(entry.Value()))
		n++
		if _, err := b.failures.Update(ctx, key, []byte(strconv.Itoa(n)), entry.Revision()); err == nil {
			return n
		}
	}
	return 1
}
