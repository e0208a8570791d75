package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Limits of the streams. The requests stream is the only one anybody outside
// the pipeline may publish to, so it is the one a flood fills: its limits
// refuse new requests rather than drop pending ones (DiscardNew).
const (
	// MaxRequestSize bounds a message on SubjectCandidate, headers
	// included; a valid request is at most 4096 bytes (tenant.ParseRequest).
	MaxRequestSize = 8 << 10
	// maxPendingRequests and maxRequestBytes bound the requests waiting for
	// the marker.
	maxPendingRequests = 1_000_000
	maxRequestBytes    = 256 << 20
	// maxEvents and maxEventBytes bound the events stream besides
	// EventRetention; the oldest events go first.
	maxEvents     = 1_000_000
	maxEventBytes = 256 << 20
	// dedupWindow is how long a stream remembers a Nats-Msg-Id: the retries
	// of one publish are stored once. Short, because the server keeps every
	// id it saw for that long, whoever sent it.
	dedupWindow = time.Minute
	// stateMarkerTTL is how long the state bucket keeps the marker left
	// where a key expired.
	stateMarkerTTL = time.Minute
)

// streamConfigs is every stream of the pipeline, the one place subjects are
// bound to streams. The work stream comes first: an older version has
// SubjectCandidate in it, and updating it frees the subject for the requests
// stream.
func streamConfigs(replicas int) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{{
		Name:              StreamWork,
		Description:       "tenant cleanup: drain-check schedules and due drain checks (consumed by cleaner)",
		Subjects:          []string{subjectSchedulePrefix + "*", DrainSubjects},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		Duplicates:        dedupWindow,
		AllowMsgSchedules: true,
		AllowRollup:       true, // a schedule replaces the tenant's pending one
	}, {
		// The public subject, alone in a stream that can do nothing but
		// queue requests: no rollup, purge, delete, per-message TTL,
		// schedules, counters or batches, so no header on a request can reach
		// any other message.
		Name:        StreamRequests,
		Description: "tenant cleanup: cleanup requests, the public subject (consumed by marker)",
		Subjects:    []string{SubjectCandidate},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  dedupWindow,
		MaxMsgSize:  MaxRequestSize,
		MaxMsgs:     maxPendingRequests,
		MaxBytes:    maxRequestBytes,
		Discard:     jetstream.DiscardNew,
		DenyDelete:  true,
		DenyPurge:   true,
	}, {
		Name:        StreamEvents,
		Description: "tenant cleanup: outcome events",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      EventRetention,
		MaxMsgs:     maxEvents,
		MaxBytes:    maxEventBytes,
		Discard:     jetstream.DiscardOld,
	}, {
		Name:        StreamDead,
		Description: "tenant cleanup: messages that failed too often (tenantctl dead list|replay)",
		Subjects:    []string{subjectDeadPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}}
}

// bucketConfigs is every KV bucket of the pipeline.
func bucketConfigs(replicas int) []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{{
		Bucket:         BucketState,
		Description:    "tenant cleanup: tenant phases, holds, pauses",
		History:        1,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: stateMarkerTTL, // per-key TTLs: a refused tenant's state expires
	}, {
		Bucket:      bucketFailures,
		Description: "tenant cleanup: failures per message, for the dead-letter rule",
		History:     1,
		TTL:         7 * 24 * time.Hour,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}}
}

// consumerFilters is what each durable consumer reads.
var consumerFilters = map[string]string{ConsumerMarker: SubjectCandidate, ConsumerCleaner: DrainSubjects}

// StreamOf names the stream that stores the messages of subject, a subject
// or a subject filter of the pipeline; "" when no stream does.
func StreamOf(subject string) string {
	for _, cfg := range streamConfigs(1) {
		for _, s := range cfg.Subjects {
			if subjectWithin(subject, s) {
				return cfg.Name
			}
		}
	}
	return ""
}

// ConsumerStream names the stream a durable consumer of the pipeline
// (ConsumerMarker, ConsumerCleaner) reads.
func ConsumerStream(consumer string) string { return StreamOf(consumerFilters[consumer]) }

// subjectWithin reports whether every subject matching filter also matches
// pattern (NATS wildcards: * one token, > the rest).
func subjectWithin(filter, pattern string) bool {
	f, p := strings.Split(filter, "."), strings.Split(pattern, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(f) > i
		}
		if i >= len(f) || f[i] == ">" || (tok != "*" && tok != f[i]) {
			return false
		}
	}
	return len(f) == len(p)
}

// ensure creates the streams and buckets, or updates them to the
// configuration above (with NoUpdate, only creates the missing ones), and
// moves what an older version left where it no longer belongs.
func (b *Bus) ensure(ctx context.Context) error {
	for _, cfg := range streamConfigs(b.replicas) {
		s, err := b.stream(ctx, cfg)
		if err != nil && b.noUpdate && cfg.Name == StreamRequests && isSubjectOverlap(err) {
			// The services have not moved the subject out of the work stream
			// yet; it still stores the requests.
			continue
		}
		if err != nil {
			return fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		switch cfg.Name {
		case StreamWork:
			// An old server ignores settings it does not know: believe only
			// what it reports back.
			if info := s.CachedInfo(); info == nil || !info.Config.AllowMsgSchedules {
				return fmt.Errorf("%w: stream %s: the server did not enable message scheduling; it needs nats-server %s or newer",
					ErrServerTooOld, StreamWork, MinServerVersion)
			}
			b.work = s
		case StreamDead:
			b.dead = s
		}
	}
	for _, cfg := range bucketConfigs(b.replicas) {
		kv, err := b.bucket(ctx, cfg)
		if err != nil {
			return fmt.Errorf("create KV bucket %s: %w", cfg.Bucket, err)
		}
		switch cfg.Bucket {
		case BucketState:
			b.state = kv
		case bucketFailures:
			b.failures = kv
		}
	}
	if b.noUpdate {
		return nil
	}
	return b.moveOldRequests(ctx)
}

// stream creates or updates a stream (or, with NoUpdate, creates it only
// when missing).
func (b *Bus) stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return upsert(ctx, b.noUpdate, cfg, cfg.Name, b.js.CreateOrUpdateStream, b.js.CreateStream, b.js.Stream,
		jetstream.ErrStreamNameAlreadyInUse)
}

// bucket creates or updates a KV bucket (or, with NoUpdate, creates it only
// when missing).
func (b *Bus) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return upsert(ctx, b.noUpdate, cfg, cfg.Bucket, b.js.CreateOrUpdateKeyValue, b.js.CreateKeyValue, b.js.KeyValue,
		jetstream.ErrBucketExists)
}

// upsert creates or updates what cfg configures (a stream, a bucket) with
// update; with noUpdate, it creates it only when missing: create, and when
// that fails with exists, opens the one named name as it is.
func upsert[C, T any](ctx context.Context, noUpdate bool, cfg C, name string,
	update, create func(context.Context, C) (T, error), open func(context.Context, string) (T, error), exists error) (T, error) {
	if !noUpdate {
		return update(ctx, cfg)
	}
	v, err := create(ctx, cfg)
	if errors.Is(err, exists) {
		return open(ctx, name)
	}
	return v, err
}

// errCodeSubjectOverlap is the server's "subjects overlap with an existing
// stream" (nats.go has no name for it).
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

func isSubjectOverlap(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap
}

// moveOldRequests moves the requests an older version left in the work
// stream (where SubjectCandidate used to be) to the requests stream: each is
// published there (its body only) before it is removed from the work stream,
// so that none is lost if this stops halfway; the next start finishes. The
// marker's consumer of the old layout is deleted.
func (b *Bus) moveOldRequests(ctx context.Context) error {
	info, err := b.work.Info(ctx, jetstream.WithSubjectFilter(SubjectCandidate))
	if err != nil {
		return fmt.Errorf("look for requests left in %s: %w", StreamWork, unavailable(err))
	}
	moved := 0
	if info.State.Subjects[SubjectCandidate] > 0 {
		// A nonce per run: a message id nobody can guess, so that no request
		// published meanwhile can make a moved one look like a duplicate.
		nonce := newNonce()
		for seq := info.State.FirstSeq; ; {
			m, err := b.work.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(SubjectCandidate))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				return fmt.Errorf("read request %d left in %s: %w", seq, StreamWork, unavailable(err))
			}
			msg := &nats.Msg{Subject: SubjectCandidate, Data: m.Data}
			if _, err := b.js.PublishMsg(ctx, msg, jetstream.WithMsgID(fmt.Sprintf("moved.%s.%d", nonce, m.Sequence))); err != nil {
				return fmt.Errorf("move request %d to %s: %w", m.Sequence, StreamRequests, unavailable(err))
			}
			if err := b.work.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("remove moved request %d from %s: %w", m.Sequence, StreamWork, unavailable(err))
			}
			moved++
			seq = m.Sequence + 1
		}
	}
	if moved > 0 {
		b.log.Info("moved pending requests to their own stream", "requests", moved, "from", StreamWork, "to", StreamRequests)
	}
	if _, err := b.js.Consumer(ctx, StreamWork, ConsumerMarker); err == nil {
		if err := b.js.DeleteConsumer(ctx, StreamWork, ConsumerMarker); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("delete the marker's old consumer on %s: %w", StreamWork, unavailable(err))
		}
		b.log.Info("deleted the marker's old consumer", "stream", StreamWork, "consumer", ConsumerMarker)
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("look up the marker's old consumer on %s: %w", StreamWork, unavailable(err))
	}
	return nil
}

// healer recreates what vanished and tells whoever listens.
type healer struct {
	mu sync.Mutex // one heal at a time
	// recreated is closed (and replaced) when a heal recreates something.
	sigMu     sync.Mutex
	recreated chan struct{}
}

// Recreated returns a channel that is closed the next time the bus
// recreates a stream or bucket that had vanished (deleted by an operator,
// lost with the server's store), or one of its consume loops gets its
// consumer back after losing it (whoever recreated the stream). What they held is gone with them: pending
// drain-check schedules, tenant states, holds. A reconciler that rebuilds it
// from the databases takes the channel before each pass, so that a
// recreation during the pass is not missed:
//
//	for {
//		recreated := b.Recreated()
//		reconcile(ctx)
//		select {
//		case <-recreated:
//		case <-ctx.Done():
//			return
//		}
//	}
func (b *Bus) Recreated() <-chan struct{} {
	b.heal.sigMu.Lock()
	defer b.heal.sigMu.Unlock()
	return b.heal.recreated
}

func (b *Bus) signalRecreated() {
	b.heal.sigMu.Lock()
	defer b.heal.sigMu.Unlock()
	close(b.heal.recreated)
	b.heal.recreated = make(chan struct{})
}

// recreateAfter is how long what vanished must stay gone before it is
// recreated: the server says a deleted stream or consumer is not found (and
// tells its consumers) before it has removed its files, and one recreated
// meanwhile under the same name loses its files and stops storing.
const recreateAfter = time.Second

// restore creates every stream and bucket that is missing (still missing
// recreateAfter later), with the configuration ensure gives it, and signals
// Recreated when it created any. It changes nothing that exists.
func (b *Bus) restore(ctx context.Context) error {
	b.heal.mu.Lock()
	defer b.heal.mu.Unlock()
	have, err := b.streamNames(ctx)
	if err != nil {
		return err
	}
	if len(have) == len(streamConfigs(0))+len(bucketConfigs(0)) {
		return nil
	}
	wait(ctx, recreateAfter)
	if have, err = b.streamNames(ctx); err != nil {
		return err
	}
	var created []string
	for _, cfg := range streamConfigs(b.replicas) {
		if have[cfg.Name] {
			continue
		}
		if _, err := b.js.CreateStream(ctx, cfg); err != nil {
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				continue // another replica was quicker
			}
			return fmt.Errorf("recreate stream %s: %w", cfg.Name, unavailable(err))
		}
		created = append(created, cfg.Name)
	}
	for _, cfg := range bucketConfigs(b.replicas) {
		if have["KV_"+cfg.Bucket] {
			continue
		}
		if _, err := b.js.CreateKeyValue(ctx, cfg); err != nil {
			if errors.Is(err, jetstream.ErrBucketExists) {
				continue
			}
			return fmt.Errorf("recreate KV bucket %s: %w", cfg.Bucket, unavailable(err))
		}
		created = append(created, "KV_"+cfg.Bucket)
	}
	if len(created) > 0 {
		b.log.Warn("recreated what JetStream had lost; what they held is gone", "streams", created)
		b.signalRecreated()
	}
	return nil
}

// streamNames lists the pipeline's streams (its buckets' included) that exist.
func (b *Bus) streamNames(ctx context.Context) (map[string]bool, error) {
	ours := map[string]bool{}
	for _, cfg := range streamConfigs(0) {
		ours[cfg.Name] = true
	}
	for _, cfg := range bucketConfigs(0) {
		ours["KV_"+cfg.Bucket] = true
	}
	have := map[string]bool{}
	names := b.js.StreamNames(ctx)
	for name := range names.Name() {
		if ours[name] {
			have[name] = true
		}
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("list streams: %w", unavailable(err))
	}
	return have, nil
}

// healed runs op and, when it failed because a stream, bucket or consumer it
// needs is gone, restores what is missing and runs it once more.
func (b *Bus) healed(ctx context.Context, op func() error) error {
	err := op()
	if err == nil || !missing(err) || ctx.Err() != nil {
		return err
	}
	if rerr := b.restore(ctx); rerr != nil {
		b.log.Debug("recreate the missing streams and buckets", "error", rerr, "cause", err)
		return err // the caller reports it
	}
	return op()
}
