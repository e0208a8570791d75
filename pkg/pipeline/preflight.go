// Package pipeline holds the two message handlers of the pipeline: the
// marker's (a cleanup request → mark the tenant, schedule its drain check) and
// the cleaner's (a due drain check → check again later, report it stuck, or
// clean the tenant). Both start with the same preflight under the tenant's
// lock: fresh reads of both planes and every rule that can refuse a tenant.
package pipeline

import (
	"context"
	"errors"
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
	// ShardName is the shard this data plane is (DATA_PLANE_SHARD_NAME;
	// "default" when empty): a tenant whose public.tenant_shard row names
	// another shard is refused.
	ShardName string
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

// Stores are the two databases.
type Stores struct {
	Data    *dataplane.Store
	Control *controlplane.Store
}

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
	snap   dataplane.Snapshot
	record controlplane.Record
}

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
	if p := snap.Problem(); p != "" {
		return checked{}, tenant.Refuse(id, "%s", p)
	}
	if !begun(snap) {
		if err := eligible(id, rec, found, snap.Activity, r.Window, now); err != nil {
			return checked{}, err
		}
	}
	if shard := r.shard(); snap.ShardName != "" && snap.ShardName != shard {
		return checked{}, tenant.Refuse(id, "public.tenant_shard places it on shard %q, and this pipeline is configured for %q only: "+
			"left alone (its schema and activity there are not read)", snap.ShardName, shard)
	}
	switch {
	case snap.Underway:
		// Its drop is completed first; a schema of its name is looked at
		// afterwards, from the start.
	case !snap.SchemaExists:
		if snap.Record.Evidence(now) == "" {
			return checked{}, tenant.Refuse(id, "its schema is not on this data plane and nothing shows that a cleanup of it began "+
				"(renamed for maintenance? being restored? placed on another shard?): left for review. If it is an "+
				"interrupted cleanup, confirm it with tenantctl cleanup %s", id)
		}
	case len(snap.MissingTables) > 0:
		return checked{}, tenant.Refuse(id, "schema lacks table(s) %s: not a tenant schema this tool understands",
			strings.Join(snap.MissingTables, ", "))
	case checkDeps:
		if err := t.CheckContained(ctx); err != nil {
			return checked{}, err
		}
	}
	return checked{snap: snap, record: rec}, nil
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
