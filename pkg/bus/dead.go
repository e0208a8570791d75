package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Headers of a dead letter.
const (
	hdrSubject  = "Tenant-Cleanup-Subject"
	hdrReason   = "Tenant-Cleanup-Reason"
	hdrFailures = "Tenant-Cleanup-Failures"
	hdrTenant   = "Tenant-Cleanup-Tenant"
	hdrTime     = "Tenant-Cleanup-Time"
)

// DeadLetter is a message that failed too often.
type DeadLetter struct {
	// Seq identifies it in the dead-letter stream (for replay).
	Seq uint64
	// Subject is where it was consumed from, and where a replay sends it.
	Subject  string
	Consumer string
	Tenant   tenant.ID
	Reason   string
	Failures int
	Time     time.Time
	Data     []byte
}

func (b *Bus) deadLetter(ctx context.Context, consumer string, d Delivery, out Outcome, cause error, failures int) error {
	reason := cause.Error()
	if len(reason) > 2000 {
		reason = reason[:2000] + "…"
	}
	msg := &nats.Msg{Subject: subjectDeadPrefix + consumer, Data: d.Data, Header: nats.Header{}}
	msg.Header.Set(hdrSubject, d.Subject)
	msg.Header.Set(hdrReason, strings.ReplaceAll(reason, "\n", " "))
	msg.Header.Set(hdrFailures, strconv.Itoa(failures))
	msg.Header.Set(hdrTenant, string(out.Tenant))
	msg.Header.Set(hdrTime, time.Now().UTC().Format(time.RFC3339))
	if err := b.healed(ctx, func() error { _, err := b.js.PublishMsg(ctx, msg); return err }); err != nil {
		return unavailable(err)
	}
	ev := tenant.Event{TenantID: out.Tenant, Outcome: tenant.OutcomeDead, RequestedBy: out.RequestedBy,
		Reason: fmt.Sprintf("failed %d times, moved to %s (tenantctl dead replay): %s", failures, StreamDead, reason)}
	if out.Tenant == "" {
		ev.Input = tenant.QuoteInput(string(d.Data))
	}
	b.Report(ctx, ev)
	return nil
}

// DeadLetters lists the dead-letter stream, oldest first.
func (b *Bus) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	var info *jetstream.StreamInfo
	err := b.healed(ctx, func() (err error) { info, err = b.dead.Info(ctx); return err })
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", StreamDead, unavailable(err))
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		dl, err := b.deadLetterAt(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, dl)
	}
	return out, nil
}

func (b *Bus) deadLetterAt(ctx context.Context, seq uint64) (DeadLetter, error) {
	var raw *jetstream.RawStreamMsg
	err := b.healed(ctx, func() (err error) { raw, err = b.dead.GetMsg(ctx, seq); return err })
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return DeadLetter{}, err
		}
		return DeadLetter{}, fmt.Errorf("read %s message %d: %w", StreamDead, seq, unavailable(err))
	}
	dl := DeadLetter{Seq: seq, Data: raw.Data, Subject: raw.Header.Get(hdrSubject),
		Consumer: strings.TrimPrefix(raw.Subject, subjectDeadPrefix), Tenant: tenant.ID(raw.Header.Get(hdrTenant)),
		Reason: raw.Header.Get(hdrReason)}
	dl.Failures, _ = strconv.Atoi(raw.Header.Get(hdrFailures))
	dl.Time, _ = time.Parse(time.RFC3339, raw.Header.Get(hdrTime))
	return dl, nil
}

// Replay sends a dead letter back to the subject it was consumed from and
// removes it from the dead-letter stream.
func (b *Bus) Replay(ctx context.Context, seq uint64) (DeadLetter, error) {
	dl, err := b.deadLetterAt(ctx, seq)
	if err != nil {
		return DeadLetter{}, err
	}
	if dl.Subject != SubjectCandidate && !strings.HasPrefix(dl.Subject, subjectDrainPrefix) {
		return DeadLetter{}, fmt.Errorf("dead letter %d came from %q, which is not a subject of this pipeline", seq, dl.Subject)
	}
	if err := b.healed(ctx, func() error { _, err := b.js.Publish(ctx, dl.Subject, dl.Data); return err }); err != nil {
		return DeadLetter{}, fmt.Errorf("replay dead letter %d: %w", seq, unavailable(err))
	}
	if err := b.dead.DeleteMsg(ctx, seq); err != nil {
		return DeadLetter{}, fmt.Errorf("replayed dead letter %d but could not remove it (replaying it again is safe): %w", seq, err)
	}
	return dl, nil
}
