package pipeline

import (
	"context"
	"log/slog"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Reconcile finds lost work and schedules it again: tenants this pipeline
// marked (or began dropping) according to its own record on the data plane,
// not in the ledger, whose pipeline state is not final (refused, stuck,
// dead), and for which no drain check is scheduled or due. That is what a
// lost JetStream store, a purge or an operator's mistake leaves behind:
// without this, nothing would check them again. Each gets a drain check due
// now (the cleaner re-checks everything). It returns how many.
func (c *Cleaner) Reconcile(ctx context.Context) (int, error) {
	recs, err := c.Data.Records(ctx)
	if err != nil {
		return 0, err
	}
	var ids []tenant.ID
	for _, r := range recs {
		id, err := tenant.ParseID(r.ID)
		if err == nil && (r.Marked() || r.DropStarted()) {
			ids = append(ids, id)
		}
	}
	cleaned, err := c.Control.Cleaned(ctx, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if cleaned[id] {
			continue
		}
		if s, found, err := c.Bus.TenantState(ctx, id); err != nil {
			return n, err
		} else if found && s.Phase.Final() {
			continue // reported already: status shows it
		}
		if pending, err := c.Bus.DrainPending(ctx, id); err != nil || pending {
			if err != nil {
				return n, err
			}
			continue
		}
		if err := c.Bus.ScheduleDrainCheck(ctx, tenant.DrainCheck{ID: id}, c.Now()); err != nil {
			return n, err
		}
		c.Log.Warn("lost work: no drain check was scheduled for a tenant this pipeline marked; checking it now", "tenant_id", id)
		n++
	}
	return n, nil
}

// ReconcileEvery runs Reconcile now, every interval and whenever the bus
// recreated a stream or bucket (a lost store), until ctx ends. Failures are
// logged and tried again at the next turn.
func (c *Cleaner) ReconcileEvery(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		recreated := c.Bus.Recreated()
		if n, err := c.Reconcile(ctx); err != nil && ctx.Err() == nil {
			log.Warn("look for lost work failed; trying again later", "error", err)
		} else if n > 0 {
			log.Info("scheduled lost work again", "tenants", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-recreated:
		}
	}
}
