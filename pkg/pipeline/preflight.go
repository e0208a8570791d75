// Package pipeline holds the two message handlers of the pipeline: the
// marker's (a cleanup request → mark the tenant, schedule its drain check) and
// the cleaner's (a due drain check → check again later, report it stuck, or
// clean the tenant). Both start with the same preflight under the tenant's
// lock: fresh reads of both planes and every rule that can refuse a tenant.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Rules are the settings the handlers apply.
type Rules struct {
	// Window is the inactivity window (INACTIVE_DAYS).
	Window time.Duration
	// ShardName is the catalog shard's name, the shard of Stores.Data
	// (ONYX_DB_CATALOG_SHARD, DATA_PLANE_SHARD_NAME; "default" when empty).
	// A tenant whose public.tenant_shard row names a shard that is not
	// configured (neither this one nor one of Stores.Shards) is refused.
	ShardName string
	// DefaultShard is where a tenant without a public.tenant_shard row
	// lives (ONYX_DB_DEFAULT_SHARD; "" means ShardName).
	DefaultShard string
	// RowLockTimeout bounds the wait for the control-plane row lock.
	RowLockTimeout time.Duration
}

// shard is the name of this data plane's shard.
func (r Rules) shard() string {
	if r.ShardName == "" {
		return "default"
	}
	return r.ShardName
}

// Stores are the databases: the data plane's catalog shard (Data), its
// other shards in a sharded fleet, and the control plane.
type Stores struct {
	Data    *dataplane.Store
	Control *controlplane.Store
	// Shards are the data plane's other shards by name (ONYX_DB_SHARDS);
	// nil in a one-shard setup.
	Shards map[string]*dataplane.Store
}

// sharded reports whether the data plane has several shards.
func (s Stores) sharded() bool { return len(s.Shards) > 0 }

// stepHook, when set (by tests), runs after each named step of a handler;
// an error stops the handler there, as a crash at that instant would.
type stepHook func(step string) error

func (h stepHook) after(step string) error {
	if h == nil {
		return nil
	}
	return h(step)
}

// lockTenant takes the tenant's lock; another worker's lock on it means "later".
func (s Stores) lockTenant(ctx context.Context, id tenant.ID) (*dataplane.TenantSession, error) {
	t, err := s.Data.Lock(ctx, id)
	if errors.Is(err, dataplane.ErrBusy) {
		return nil, tenant.Later(time.Second, "another worker is processing the tenant", nil)
	}
	return t, err
}

// checked is what preflight read.
type checked struct {
	// snap is the tenant over all its copies (merged; the catalog's
	// snapshot itself in a one-shard setup).
	snap   dataplane.Snapshot
	record controlplane.Record
	// copies are the tenant on each shard that matters for it, the
	// catalog's first (always there: it holds the tenant's lock and its
	// public rows); others are the sessions preflight opened on the other
	// shards (release them), skipped the shards it could not reach.
	copies  []shardCopy
	others  []shardCopy
	skipped []string
}

// release releases the sessions preflight opened on the other shards.
func (c checked) release() { release(c.others) }

// preflight reads the tenant afresh from both planes and refuses it when any
// rule says so: not eligible, placed on another shard, a schema whose
// cleanup cannot be completed without evidence, a schema we do not
// understand, or (with checkDeps) objects outside its schema that a drop
// would reach. The cleaner leaves that last check to the drop, which makes it
// under lock in every drop transaction. These reads take no lock: the final
// look, under lock, comes right before each irreversible step.
func (s Stores) preflight(ctx context.Context, t *dataplane.TenantSession, id tenant.ID, r Rules, now time.Time, checkDeps bool) (checked, error) {
	snap, err := t.Inspect(ctx)
	if err != nil {
		return checked{}, err
	}
	rec, found, err := s.Control.Tenant(ctx, id)
	if err != nil {
		return checked{}, err
	}
	// A tenant placed on a shard this pipeline does not have is never
	// read, marked or completed: its schema and activity are elsewhere.
	if placement := r.placement(snap.ShardName); !s.configured(r, placement) {
		return checked{}, tenant.Refuse(id, "public.tenant_shard places it on shard %q, and this pipeline is configured for %s only: "+
			"left alone (its schema and activity there are not read)", snap.ShardName, quoted(s.shardNames(r)))
	}
	c := checked{record: rec, copies: []shardCopy{{shard: r.catalogName(), t: t, snap: snap}}}
	if s.sharded() {
		c.others, c.skipped, err = s.otherCopies(ctx, id, r, r.placement(snap.ShardName))
		if err != nil {
			return checked{}, err
		}
		for _, o := range c.others {
			if o.relevant() {
				c.copies = append(c.copies, o)
			}
		}
	}
	c.snap = merged(c.copies)
	if err := s.checkCopies(ctx, id, r, now, checkDeps, &c, found); err != nil {
		c.release()
		return checked{}, err
	}
	return c, nil
}

// checkCopies applies preflight's rules to what it read of every copy.
func (s Stores) checkCopies(ctx context.Context, id tenant.ID, r Rules, now time.Time, checkDeps bool, c *checked, found bool) error {
	on := func(cp shardCopy) string { // names the shard in a sharded fleet
		if s.sharded() {
			return " (on shard " + cp.shard + ")"
		}
		return ""
	}
	for _, cp := range c.copies {
		if p := cp.snap.Problem(); p != "" {
			return tenant.Refuse(id, "%s%s", p, on(cp))
		}
	}
	snap := c.snap
	if !begun(snap) {
		if err := eligible(id, c.record, found, snap.Activity, r.Window, now); err != nil {
			return err
		}
	}
	switch {
	case snap.Underway:
		// Its drop is completed first; a schema of its name is looked at
		// afterwards, from the start.
	case !snap.SchemaExists && len(c.skipped) > 0:
		// Missing on every shard that answered: it may be on one that did not.
		return tenant.Later(time.Minute, "its schema is on none of the shards that answered, and shard(s) "+
			strings.Join(c.skipped, ", ")+" could not be reached: it may be there", nil)
	case !snap.SchemaExists && s.sharded():
		if snap.Record.Evidence(now) == "" {
			return tenant.Refuse(id, "its schema is on none of the configured shards (%s) and nothing shows that a cleanup of it began "+
				"(renamed for maintenance? being restored?): left for review. If it is an interrupted cleanup, confirm it with "+
				"tenantctl cleanup %s", strings.Join(s.shardNames(r), ", "), id)
		}
	case !snap.SchemaExists:
		if snap.Record.Evidence(now) == "" {
			return tenant.Refuse(id, "its schema is not on this data plane and nothing shows that a cleanup of it began "+
				"(renamed for maintenance? being restored? placed on another shard?): left for review. If it is an "+
				"interrupted cleanup, confirm it with tenantctl cleanup %s", id)
		}
	default:
		for _, cp := range withSchema(c.copies) {
			if m := cp.snap.MissingTables; len(m) > 0 {
				return tenant.Refuse(id, "schema lacks table(s) %s%s: not a tenant schema this tool understands",
					strings.Join(m, ", "), on(cp))
			}
			if checkDeps && !cp.snap.Underway {
				if err := cp.t.CheckContained(ctx); err != nil {
					if s.sharded() {
						return fmt.Errorf("shard %s: %w", cp.shard, err)
					}
					return err
				}
			}
		}
	}
	return nil
}

// quoted is names quoted, comma-separated.
func quoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// begun reports whether the tenant's drop by this pipeline began: it is
// under way, or it finished and no schema of the tenant's name has been seen
// since (one would have made Inspect forget the record). The tenant passed
// its final look then, so its cleanup is completed whatever its status is
// now.
func begun(snap dataplane.Snapshot) bool {
	return snap.Underway || (snap.Record.DropStarted() && !snap.SchemaExists)
}

// eligible applies the contract's rule to fresh reads; a tenant that fails it
// is refused with the rule's reason.
func eligible(id tenant.ID, rec controlplane.Record, found bool, a dataplane.Activity, window time.Duration, now time.Time) error {
	v := tenant.Eligibility(rec.Facts(found, a.Last()), now, window)
	if !v.Eligible {
		return tenant.Refuse(id, "%s", v.Reason)
	}
	return nil
}
