package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// KV buckets.
const (
	// BucketState holds the pipeline's state: tenant.<id> (tenant.State)
	// and pause.<name> (tenant.Pause). Holds live in the control plane
	// (controlplane.Store.PlaceHold), under the tenant's row lock.
	BucketState = "TENANT_CLEANUP_STATE"
	// bucketFailures counts handler failures per message (by stream
	// sequence) for the dead-letter rule; entries expire after a week.
	bucketFailures = "TENANT_CLEANUP_FAILURES"
)

const (
	keyTenant = "tenant."
	keyPause  = "pause."
)

// recordState applies ev to the tenant's state with compare-and-set, so that
// concurrent writers never overwrite each other's newer state. A refused
// tenant's state expires RefusedStateTTL after it is written: anybody may
// request any id, and what the pipeline keeps about them must stay bounded.
func (b *Bus) recordState(ctx context.Context, ev tenant.Event) error {
	if ev.TenantID == "" {
		return nil
	}
	key := keyTenant + string(ev.TenantID)
	for attempt := 0; attempt < 10; attempt++ {
		var (
			cur tenant.State
			rev uint64
		)
		entry, err := b.state.Get(ctx, key)
		switch {
		case err == nil:
			rev = entry.Revision()
			if err := json.Unmarshal(entry.Value(), &cur); err != nil {
				cur = tenant.State{}
			}
		case !errors.Is(err, jetstream.ErrKeyNotFound):
			return err
		}
		next := cur.Apply(ev)
		body, err := json.Marshal(next)
		if err != nil {
			return err
		}
		var ttl time.Duration
		if next.Phase == tenant.PhaseRefused {
			ttl = b.refusedTTL
		}
		switch {
		case rev == 0 && ttl > 0:
			_, err = b.state.Create(ctx, key, body, jetstream.KeyTTL(ttl))
		case rev == 0:
			_, err = b.state.Create(ctx, key, body)
		case ttl > 0:
			// The key-value API sets a TTL only when it creates a key: delete
			// the revision read (compare-and-set), then create it again with
			// the TTL (which fails if another writer came in between).
			if err = b.state.Delete(ctx, key, jetstream.LastRevision(rev)); err == nil {
				_, err = b.state.Create(ctx, key, body, jetstream.KeyTTL(ttl))
			}
		default:
			_, err = b.state.Update(ctx, key, body, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
	}
	return errors.New("state update kept conflicting")
}

// TenantState reads one tenant's state; found is false when the pipeline
// never saw it.
func (b *Bus) TenantState(ctx context.Context, id tenant.ID) (tenant.State, bool, error) {
	var s tenant.State
	found, err := b.getJSON(ctx, keyTenant+string(id), &s)
	return s, found, err
}

// States reads every tenant's state.
func (b *Bus) States(ctx context.Context) ([]tenant.State, error) {
	var out []tenant.State
	err := b.each(ctx, keyTenant, func(v []byte) {
		var s tenant.State
		if json.Unmarshal(v, &s) == nil {
			out = append(out, s)
		}
	})
	return out, err
}

// SetPause records that cleaning is paused or capped (name identifies the
// replica or the cap); it is shown by status until p.Until.
func (b *Bus) SetPause(ctx context.Context, name string, p tenant.Pause) error {
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return b.healed(ctx, func() error { _, err := b.state.Put(ctx, keyPause+sanitizeKey(name), body); return err })
}

// Pauses lists the pauses in force at now.
func (b *Bus) Pauses(ctx context.Context, now time.Time) ([]tenant.Pause, error) {
	var out []tenant.Pause
	err := b.each(ctx, keyPause, func(v []byte) {
		var p tenant.Pause
		if json.Unmarshal(v, &p) == nil && now.Before(p.Until) {
			out = append(out, p)
		}
	})
	return out, err
}

// sanitizeKey keeps only characters valid in a KV key.
func sanitizeKey(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// distinctKey is s as a key token that no other name shares: s itself when
// it is one, else sanitizeKey(s) with a hash of s (shards "a.b" and "a_b"
// keep reports of their own).
func distinctKey(s string) string {
	k := sanitizeKey(s)
	if k == s {
		return k
	}
	h := fnv.New64a()
	h.Write([]byte(s))
	return fmt.Sprintf("%s_%016x", k, h.Sum64())
}

func (b *Bus) getJSON(ctx context.Context, key string, v any) (bool, error) {
	var entry jetstream.KeyValueEntry
	err := b.healed(ctx, func() (err error) { entry, err = b.state.Get(ctx, key); return err })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", key, unavailable(err))
	}
	if err := json.Unmarshal(entry.Value(), v); err != nil {
		return false, fmt.Errorf("read %s: %w", key, err)
	}
	return true, nil
}

// each calls fn with the value of every key under prefix.
func (b *Bus) each(ctx context.Context, prefix string, fn func([]byte)) error {
	var w jetstream.KeyWatcher
	err := b.healed(ctx, func() (err error) {
		w, err = b.state.WatchFiltered(ctx, []string{prefix + ">"}, jetstream.IgnoreDeletes())
		return err
	})
	if err != nil {
		return fmt.Errorf("read %s*: %w", prefix, unavailable(err))
	}
	defer w.Stop()
	for {
		select {
		case entry := <-w.Updates():
			if entry == nil { // the initial values are done
				return nil
			}
			fn(entry.Value())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// PaceReportTTL is how long a cleaner replica's pace report outlives its
// last write: a replica writes it on every change and every third of it.
const PaceReportTTL = 90 * time.Second

// keyPace is the prefix of the pace reports: pace.<replica>, and
// pace.<replica>.<shard> in a sharded fleet.
const keyPace = "pace."

// PaceReport is what one cleaner replica's pacer does now (pkg/pacer), for
// tenantctl status.
type PaceReport struct {
	// By is the replica (cleaner@host/pid).
	By string `json:"by"`
	// Shard is the data-plane shard this pacer paces, in a sharded fleet
	// (each shard has a pacer of its own); empty with one shard.
	Shard string `json:"shard,omitempty"`
	// State is running, throttled, paused, calibrating or off.
	State string `json:"state"`
	// Limit is how many drops may run at once, Max its ceiling.
	Limit int `json:"limit"`
	Max   int `json:"max"`
	// InFlight is the replica's drops running, Waiting the tenants waiting
	// for the pacer.
	InFlight int `json:"in_flight"`
	Waiting  int `json:"waiting"`
	// Reason says what the pacer does and why.
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// SetPace records r, which expires PaceReportTTL later unless written again.
func (b *Bus) SetPace(ctx context.Context, r PaceReport) error {
	body, err := json.Marshal(r)
	if err != nil {
		return err
	}
	key := keyPace + sanitizeKey(r.By)
	if r.Shard != "" {
		key += "." + distinctKey(r.Shard)
	}
	return b.healed(ctx, func() error {
		// A TTL is set only when a key is created: the replica is the
		// key's only writer, so delete and create it.
		if err := b.state.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
		_, err := b.state.Create(ctx, key, body, jetstream.KeyTTL(PaceReportTTL))
		return err
	})
}

// Paces lists the pace reports of the cleaner replicas running now.
func (b *Bus) Paces(ctx context.Context, now time.Time) ([]PaceReport, error) {
	var out []PaceReport
	err := b.each(ctx, keyPace, func(v []byte) {
		var r PaceReport
		if json.Unmarshal(v, &r) == nil && now.Sub(r.At) < PaceReportTTL {
			out = append(out, r)
		}
	})
	return out, err
}
