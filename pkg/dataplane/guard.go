package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// The cleanup never removes or changes anything outside the tenant's schema.
// Two protections enforce it, neither depending on a list of object kinds:
//
//   - the guard (closure): before anything is dropped, the objects a
//     DROP SCHEMA … CASCADE would reach are walked in pg_depend the way
//     PostgreSQL's CASCADE walks it (sql/closure.sql); the tenant is refused,
//     naming them, if any lives outside the schema;
//   - the net, inside every drop transaction, after its DROP: PostgreSQL
//     locks every object it deletes and every table it changes, so the
//     transaction's own ACCESS EXCLUSIVE locks (sql/net.sql) must all be on
//     objects the guard walked; anything else (an object created since, a path
//     the walk would not know) aborts the transaction, and nothing is dropped.
//     Where the role may create event triggers (a superuser), an sql_drop
//     event trigger (sql/guard_trigger.sql) makes the same check with
//     pg_event_trigger_dropped_objects(), enforced by PostgreSQL itself.

// objectKey names an object as a lock names it: its catalog and oid.
type objectKey struct{ classid, objid int64 }

// closure is what a DROP SCHEMA … CASCADE of the tenant's schema would reach.
type closure struct {
	objects map[objectKey]bool
	// outside describes the objects outside the schema (sorted, unique).
	outside []string
	// relations maps each relation of the schema to its kind (pg_class.relkind).
	relations map[string]string
}

// walkClosure walks the closure of the schema whose oid is nsOID
// (sql/closure.sql).
func walkClosure(ctx context.Context, q rowsQuerier, nsOID int64) (closure, error) {
	c := closure{objects: map[objectKey]bool{}, relations: map[string]string{}}
	rows, err := q.Query(ctx, query("closure", ""), nsOID)
	if err != nil {
		return c, err
	}
	var (
		k                objectKey
		inside           bool
		relname, relkind *string
		description      *string
		outside          = map[string]bool{}
	)
	_, err = pgx.ForEachRow(rows, []any{&k.classid, &k.objid, &inside, &relname, &relkind, &description}, func() error {
		c.objects[k] = true
		if !inside && description != nil {
			outside[*description] = true
		}
		if relname != nil && relkind != nil {
			c.relations[*relname] = *relkind
		}
		return nil
	})
	for d := range outside {
		c.outside = append(c.outside, d)
	}
	slices.Sort(c.outside)
	return c, err
}

// refusal is the tenant's refusal when objects outside its schema would be
// reached, nil when none would.
func (c closure) refusal(id tenant.ID) error {
	if len(c.outside) == 0 {
		return nil
	}
	return tenant.Refuse(id, "objects outside its schema depend on it, and a DROP SCHEMA … CASCADE would remove or change them: %s",
		listSome(c.outside, 20))
}

// listSome joins up to n items, saying how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:n], "; ") + fmt.Sprintf("; … and %d more", len(items)-n)
}

// errNet is wrapped when a DROP reached objects the guard did not walk.
var errNet = errors.New("the drop reached objects the check did not see")

// checkNet compares, after a DROP in tx, the objects the transaction holds
// ACCESS EXCLUSIVE with the closure walked before it; the caller rolls back
// on error, so nothing is dropped.
func checkNet(ctx context.Context, tx pgx.Tx, c closure) error {
	classids, objids := make([]int64, 0, len(c.objects)), make([]int64, 0, len(c.objects))
	for k := range c.objects {
		classids, objids = append(classids, k.classid), append(objids, k.objid)
	}
	rows, err := tx.Query(ctx, query("net", ""), classids, objids)
	if err != nil {
		return err
	}
	var (
		k           objectKey
		description *string
		extra       []string
	)
	_, err = pgx.ForEachRow(rows, []any{&k.classid, &k.objid, &description}, func() error {
		if c.objects[k] {
			return nil
		}
		if description != nil {
			extra = append(extra, *description)
		} else {
			extra = append(extra, fmt.Sprintf("%s %d (gone now)", catalogNames[k.classid], k.objid))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return fmt.Errorf("%w: %s; nothing was dropped (rolled back). Something was created or attached while "+
			"the tenant was being dropped, or a dependency path the check does not know: it is retried, "+
			"and moved to the dead-letter stream if it persists", errNet, listSome(slices.Compact(extra), 20))
	}
	return nil
}

// catalogNames names the catalogs of objects a DROP may reach, for messages
// about objects that are gone (an unknown catalog prints as an empty name).
var catalogNames = map[int64]string{1259: "relation", 1247: "type", 1255: "function", 2604: "default",
	2606: "constraint", 2620: "trigger", 2618: "rule", 3256: "policy", 2615: "schema", 3381: "statistics object"}

// isGuardTrigger reports whether err is the sql_drop event trigger's refusal.
func isGuardTrigger(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "TCG01"
}

// armGuard makes the event trigger (if installed) check the DROPs that
// follow in tx against the schema named schemaName.
func armGuard(ctx context.Context, tx pgx.Tx, schemaName string) error {
	_, err := tx.Exec(ctx, "SELECT set_config('tenant_cleanup.dropping', $1, true)", schemaName)
	return err
}
