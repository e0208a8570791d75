package pipeline

import (
	"context"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Bus is what the reconciler needs of the bus (bus.Bus).
type Bus interface {
	Pending
	TenantState(ctx context.Context, id tenant.ID) (tenant.State, bool, error)
	ScheduleDrainCheck(ctx context.Context, dc tenant.DrainCheck, at time.Time) error
	Recreated() <-chan struct{}
}

// Reconciler finds lost work and schedules it again.
type Reconciler struct {
	Stores
	Bus Bus
	Now func() time.Time
	Log *slog.Logger
}

// Reconcile finds lost work and schedules it again: tenants this pipeline
// marked (or began dropping) according to its own record on the data plane,
// not in the ledger, whose pipeline state is not final (refused, stuck,
// dead), and for which no drain check is scheduled or due. That is what a
// lost JetStream store, a purge or an operator's mistake leaves behind:
// without this, nothing would check them again. Each gets a drain check due
// now (the cleaner re-checks everything). It returns how many.
func (r *Reconciler) Reconcile(ctx context.Context) (int, error) {
	recs, err := r.Data.Records(ctx)
	if err != nil {
		return 0, err
	}
	// In a sharded fleet a tenant's record is on the shard of its schema.
	for name, st := range r.Shards {
		more, err := st.Records(ctx)
		if err != nil { // a shard that is down: its tenants next time
			r.Log.Warn("lost work: shard not read", "shard", name, "error", err)
			continue
		}
		recs = append(recs, more...)
	}
	var ids []tenant.ID
	added := map[tenant.ID]bool{}
	for _, rec := range recs {
		id, err := tenant.ParseID(rec.ID)
		if err == nil && (rec.Marked() || rec.DropStarted()) && !added[id] {
			added[id] = true
			ids = append(ids, id)
		}
	}
	cleaned, err := r.Control.Cleaned(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if cleaned[id] {
			continue
		}
		if s, found, err := r.Bus.TenantState(ctx, id); err != nil {
			return n, err
		} else if found && s.Phase.Final() {
			continue // reported already: status shows it
		}
		if pending, err := r.Bus.DrainPending(ctx, id); err != nil || pending {
			if err != nil {
				return n, err
			}
			continue
		}
		if err := r.Bus.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: id}, r.Now()); err != nil {
			return n, err
		}
		r.Log.Warn("lost work: no drain check was scheduled for a tenant this pipeline marked; checking it now", "tenant_id", id)
		n++
	}
	return n, nil
}

// Run reconciles now, every interval and whenever the bus recreated a
// stream or bucket (a lost store), until ctx ends. Failures are logged and
// tried again at the next turn.
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		recreated := r.Bus.Recreated()
		if n, err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
			r.Log.Warn("look for lost work failed; trying again later", "error", err)
		} else if n > 0 {
			r.Log.Info("scheduled lost work again", "tenants", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-recreated:
		}
	}
}
