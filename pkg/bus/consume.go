package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// ConsumeOptions configure a consume loop.
type ConsumeOptions struct {
	// Consumer is the durable consumer name, shared by all replicas.
	Consumer string
	// FilterSubject selects the messages it consumes; the stream is the one
	// that stores them (StreamOf).
	FilterSubject string
	// Concurrency is the number of messages processed at once by this replica.
	Concurrency int
	// AckWait is how long the server waits for an acknowledgement before
	// redelivering; the loop reports progress while a handler runs (and while
	// a message waits for a free worker), so a long cleanup is not
	// redelivered. Default 60s.
	AckWait time.Duration
	// ShutdownGrace is how long in-flight work may continue after ctx is
	// cancelled before it is itself cancelled and handed back. Default 20s.
	ShutdownGrace time.Duration
	// MaxFailures is how many times a message may fail (errors other than
	// refusals, "later" and unavailable dependencies) before it is moved to
	// the dead-letter stream with the reason. Default 5.
	MaxFailures int
}

// checkEvery is how often a consume loop checks that its consumer and the
// pipeline's streams and buckets still exist, besides the server's own
// signals (a deleted consumer, missing heartbeats, no responders).
const checkEvery = 2 * time.Second

// Consume runs the consume loop until ctx is cancelled, then stops taking
// messages, lets in-flight handlers finish (or hands their messages back
// after the grace period) and returns nil, also when ctx ends while the
// consumer is being set up.
//
// Messages come from jetstream's Consume, one at a time, to Concurrency
// workers. The loop heals itself: when its consumer or stream vanishes (an
// operator deleted it, JetStream restarted on an empty store), it recreates
// what is missing and resumes; meanwhile Ready reports that it cannot
// consume. It returns an error only if the consumer cannot be created at
// the start for a reason other than an unavailable or incomplete JetStream
// (a permission, an invalid configuration).
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
	stream := StreamOf(opts.FilterSubject)
	if stream == "" {
		return fmt.Errorf("consumer %s: no stream stores %q", opts.Consumer, opts.FilterSubject)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       opts.Consumer,
		FilterSubject: opts.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       opts.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
	}
	state := b.loops.add(opts.Consumer)
	defer b.loops.remove(state)

	// In-flight work outlives ctx by the grace period.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(opts.ShutdownGrace, cancelWork) })
	defer stopGrace()
	w := &workers{slots: make(chan struct{}, opts.Concurrency)}
	defer w.wait()

	started := false         // a consumer was created once: from then on, every failure is retried
	var streamBorn time.Time // when the stream the consumer was made on was created
	for failures := 0; ctx.Err() == nil; {
		var cons jetstream.Consumer
		err := b.healed(ctx, func() (err error) { cons, err = b.js.CreateOrUpdateConsumer(ctx, stream, cfg); return err })
		if err != nil {
			if ctx.Err() != nil {
				break // stopped before it began: nothing is in flight
			}
			if !started && !missing(err) && !errors.Is(unavailable(err), tenant.ErrUnavailable) {
				return fmt.Errorf("create consumer %s: %w", opts.Consumer, err)
			}
			failures++
			state.set(fmt.Errorf("cannot create consumer: %w", err))
			if failures == 1 || failures%30 == 0 {
				b.log.Warn("create consumer failed; retrying", "consumer", opts.Consumer, "error", err)
			}
			wait(ctx, min(time.Duration(failures)*200*time.Millisecond, 2*time.Second))
			continue
		}
		// The consumer is back on a stream created since it was last made
		// (recreated by this process or another after a loss): pending work
		// went with the old one.
		if born, err := b.streamCreated(ctx, stream); err == nil {
			if !streamBorn.IsZero() && !born.Equal(streamBorn) {
				b.signalRecreated()
			}
			streamBorn = born
		}
		started, failures = true, 0
		lost := b.consumeFrom(ctx, workCtx, cons, opts, h, w, state)
		if lost == nil {
			break
		}
		state.set(fmt.Errorf("not consuming: %w", lost))
		b.log.Warn("consumer lost; recreating it", "consumer", opts.Consumer, "stream", stream, "error", lost)
		wait(ctx, recreateAfter) // until the server has removed it for good
	}
	return nil
}

// streamCreated is when the stream was created (the server's record).
func (b *Bus) streamCreated(ctx context.Context, name string) (time.Time, error) {
	s, err := b.js.Stream(ctx, name)
	if err != nil {
		return time.Time{}, err
	}
	return s.CachedInfo().Created, nil
}

// errConsumeStopped: jetstream stopped consuming by itself (the consumer was
// deleted under it).
var errConsumeStopped = errors.New("consuming stopped")

// consumeFrom hands cons's messages to the workers until ctx ends (nil) or
// the consumer is lost (the reason).
func (b *Bus) consumeFrom(ctx, workCtx context.Context, cons jetstream.Consumer, opts ConsumeOptions, h Handler,
	w *workers, state *loopState) error {
	signals := make(chan error, 1)
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		// One message at a time: it waits here for a free worker, kept ours
		// with progress reports, and the next is fetched once it is taken.
		if !w.acquire(ctx, msg, opts.AckWait/3) {
			_ = msg.Nak() // arrived as we stopped: hand it straight back
			return
		}
		if !w.start(func() { b.process(workCtx, msg, opts, h) }) {
			_ = msg.Nak()
		}
	}, jetstream.PullMaxMessages(1), jetstream.PullExpiry(10*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			select {
			case signals <- err:
			default:
			}
		}))
	if err != nil {
		return err
	}
	state.set(nil)
	tick := time.NewTicker(checkEvery)
	defer tick.Stop()
	for {
		var signal error
		select {
		case <-ctx.Done():
			cc.Drain() // a message already on its way is handed back
			waitClosed(cc)
			return nil
		case <-cc.Closed():
			state.set(errConsumeStopped)
			return errConsumeStopped
		case signal = <-signals:
		case <-tick.C:
			// Whatever else vanished is recreated too, used or not, so that
			// Recreated fires soon after a loss.
			if err := b.restore(ctx); err != nil && ctx.Err() == nil {
				b.log.Debug("recreate the missing streams and buckets", "error", err)
			}
		}
		if errors.Is(signal, jetstream.ErrConsumerDeleted) || errors.Is(signal, jetstream.ErrBadRequest) {
			state.set(signal)
			cc.Stop()
			waitClosed(cc)
			return signal
		}
		checkCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cons.Info(checkCtx)
		cancel()
		switch {
		case ctx.Err() != nil:
		case err == nil:
			state.set(nil)
		case missing(err):
			state.set(err)
			cc.Stop()
			waitClosed(cc)
			return err
		default: // JetStream cannot say (restarting, no leader): not ready meanwhile
			state.set(fmt.Errorf("consumer cannot be reached: %w", err))
		}
	}
}

// waitClosed waits a little for jetstream to finish stopping (it cannot when
// the connection is down).
func waitClosed(cc jetstream.ConsumeContext) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-cc.Closed():
	case <-t.C:
	}
}

// workers runs handlers, at most cap(slots) at once.
type workers struct {
	slots  chan struct{}
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// acquire waits for a free worker, reporting progress on msg meanwhile; it
// is false when ctx ends first.
func (w *workers) acquire(ctx context.Context, msg jetstream.Msg, every time.Duration) bool {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case w.slots <- struct{}{}:
			if ctx.Err() != nil {
				<-w.slots
				return false
			}
			return true
		case <-ctx.Done():
			return false
		case <-t.C:
			_ = msg.InProgress()
		}
	}
}

// start runs f on the acquired worker; false (the worker released) once wait
// has begun.
func (w *workers) start(f func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		<-w.slots
		return false
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer func() { <-w.slots }()
		f()
	}()
	return true
}

// wait lets no new work start and waits for the work in flight.
func (w *workers) wait() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.wg.Wait()
}

func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// loops are the consume loops running on a bus, for Ready.
type loops struct {
	mu  sync.Mutex
	all map[*loopState]struct{}
}

// loopState is whether one consume loop can consume.
type loopState struct {
	consumer string
	mu       sync.Mutex
	err      error // nil: consuming
}

func (l *loops) add(consumer string) *loopState {
	s := &loopState{consumer: consumer, err: errors.New("starting")}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.all == nil {
		l.all = map[*loopState]struct{}{}
	}
	l.all[s] = struct{}{}
	return s
}

func (l *loops) remove(s *loopState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.all, s)
}

func (l *loops) ready() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for s := range l.all {
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("consumer %s: %w", s.consumer, err)
		}
	}
	return nil
}

func (s *loopState) set(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// process runs the handler on one message with progress reports, recovers a
// panic, and acknowledges according to the error.
func (b *Bus) process(ctx context.Context, msg jetstream.Msg, opts ConsumeOptions, h Handler) {
	d := Delivery{Subject: msg.Subject(), Data: msg.Data()}
	var streamSeq uint64
	if md, err := msg.Metadata(); err == nil {
		d.NumDelivered, streamSeq = md.NumDelivered, md.Sequence.Stream
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
	out, err := Recover(h)(ctx, d)
	close(stopProgress)
	b.settle(ctx, msg, d, out, err, opts, streamSeq)
}

// settle carries out the handler's outcome (Perform) and maps its error to
// an acknowledgement verb, logging what it does.
func (b *Bus) settle(ctx context.Context, msg jetstream.Msg, d Delivery, out Outcome, err error, opts ConsumeOptions, seq uint64) {
	var (
		refused *tenant.RefusedError
		later   *tenant.LaterError
	)
	if perr := b.Perform(ctx, d, out, err); perr != nil {
		delay := unavailableDelay(d.NumDelivered)
		b.log.Warn("could not carry out the outcome; will retry", "tenant_id", out.Tenant, "subject", d.Subject,
			"retry_in", delay.String(), "error", perr)
		_ = msg.NakWithDelay(delay)
		return
	}
	switch {
	case err == nil:
		_ = msg.Ack()
	case errors.As(err, &refused):
		_ = msg.TermWithReason(string(refused.Outcome) + ": " + refused.Reason)
	case errors.Is(err, tenant.ErrInvalidID):
		_ = msg.TermWithReason("invalid tenant id")
	case errors.As(err, &later):
		b.log.Info("retry later", "tenant_id", out.Tenant, "reason", later.Reason, "delay", later.Delay.String(), "error", later.Err)
		_ = msg.NakWithDelay(later.Delay)
	case ctx.Err() != nil:
		b.log.Info("shutting down: handing message back", "tenant_id", out.Tenant, "subject", d.Subject)
		_ = msg.Nak()
	case errors.Is(err, tenant.ErrUnavailable):
		delay := unavailableDelay(d.NumDelivered)
		b.log.Warn("a dependency is unavailable; will retry", "tenant_id", out.Tenant, "subject", d.Subject,
			"deliveries", d.NumDelivered, "retry_in", delay.String(), "error", err)
		_ = msg.NakWithDelay(delay)
	default:
		failures := b.countFailure(ctx, opts.Consumer, seq)
		if failures >= opts.MaxFailures {
			if derr := b.deadLetter(ctx, opts.Consumer, d, out, err, failures); derr != nil {
				b.log.Error("move message to the dead-letter stream failed; will retry", "tenant_id", out.Tenant,
					"subject", d.Subject, "error", derr)
				_ = msg.NakWithDelay(retryDelay(uint64(failures)))
				return
			}
			_ = msg.TermWithReason("dead-lettered after " + fmt.Sprint(failures) + " failures")
			return
		}
		delay := retryDelay(uint64(failures))
		b.log.Error("processing failed; will retry", "tenant_id", out.Tenant, "subject", d.Subject,
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
		var entry jetstream.KeyValueEntry
		err := b.healed(ctx, func() (err error) { entry, err = b.failures.Get(ctx, key); return err })
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
