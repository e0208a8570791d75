package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// A sharded fleet (ONYX_DB_SHARDS) spreads tenant schemas over several
// databases. The catalog shard (Stores.Data) holds the public tables,
// public.tenant_shard and the tenant's advisory lock taken first by every
// worker; the other shards are Stores.Shards. A tenant's schema may exist on
// several shards at once (a move under way, a stray copy): every copy is
// marked, drained, looked at under lock and dropped, each on its own shard,
// with its own record (tenant_cleanup.progress of that database), drop slots
// and lock budget.

// shardLookTimeout bounds the look at a shard that is not the tenant's
// placement: a shard that is down or slow delays only the tenants placed on
// it. (A copy there cannot be seen while it is down: the tenant's cleaned
// event says which shards were not checked, and tenantctl verify lists the
// schema when the shard is back.)
const shardLookTimeout = 5 * time.Second

// shardCopy is the tenant on one shard: its session there (holding the
// tenant's advisory lock on that database) and what Inspect read.
type shardCopy struct {
	shard string
	t     *dataplane.TenantSession
	snap  dataplane.Snapshot
}

// relevant reports whether the copy matters for the tenant: its schema is
// there, a drop of it is under way there, or this pipeline recorded
// something of it there.
func (c shardCopy) relevant() bool {
	return c.snap.SchemaExists || c.snap.Underway || c.snap.Record.Found
}

// catalogName is the catalog shard's name.
func (r Rules) catalogName() string { return r.shard() }

// defaultShard is where a tenant without a tenant_shard row lives.
func (r Rules) defaultShard() string {
	if r.DefaultShard != "" {
		return r.DefaultShard
	}
	return r.shard()
}

// placement is the shard a tenant's public.tenant_shard row (name, "" for
// none) places it on.
func (r Rules) placement(name string) string {
	if name == "" {
		return r.defaultShard()
	}
	return name
}

// configured reports whether name is one of the shards this pipeline has.
func (s Stores) configured(r Rules, name string) bool {
	if name == r.catalogName() {
		return true
	}
	_, ok := s.Shards[name]
	return ok
}

// shardNames lists the configured shards, the catalog first, then by name.
func (s Stores) shardNames(r Rules) []string {
	names := []string{r.catalogName()}
	var others []string
	for name := range s.Shards {
		if name != r.catalogName() {
			others = append(others, name)
		}
	}
	slices.Sort(others)
	return append(names, others...)
}

// ShardNames lists the configured shards (for metrics' bounded labels).
func (s Stores) ShardNames(r Rules) []string { return s.shardNames(r) }

// otherCopies locks the tenant on every other shard and inspects it there,
// in the order of shardNames (so that two workers never wait for each other
// crosswise). A shard that cannot be reached: "later" when the tenant is
// placed on it, else it is skipped and named in skipped. The caller
// releases the returned copies.
func (s Stores) otherCopies(ctx context.Context, id tenant.ID, r Rules, placement string) (copies []shardCopy, skipped []string, err error) {
	defer func() {
		if err != nil {
			release(copies)
			copies = nil
		}
	}()
	for _, name := range s.shardNames(r)[1:] {
		store := s.Shards[name]
		c, err := lookAt(ctx, store, id, name, name != placement)
		switch {
		case errors.Is(err, dataplane.ErrBusy):
			return copies, nil, tenant.Later(time.Second, "another worker is processing the tenant on shard "+name, nil)
		case err != nil && name == placement:
			return copies, nil, fmt.Errorf("shard %s (where the tenant is placed): %w", name, err)
		case err != nil && ctx.Err() != nil:
			return copies, nil, err
		case err != nil:
			skipped = append(skipped, name)
			continue
		}
		copies = append(copies, c)
	}
	return copies, skipped, nil
}

// lookAt locks the tenant on store and inspects it, within shardLookTimeout
// when bounded.
func lookAt(ctx context.Context, store *dataplane.Store, id tenant.ID, name string, bounded bool) (shardCopy, error) {
	lctx := ctx
	if bounded {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, shardLookTimeout)
		defer cancel()
	}
	t, err := store.Lock(lctx, id)
	if err != nil {
		return shardCopy{}, err
	}
	snap, err := t.Inspect(lctx)
	if err != nil {
		t.Release()
		return shardCopy{}, err
	}
	return shardCopy{shard: name, t: t, snap: snap}, nil
}

func release(copies []shardCopy) {
	for _, c := range copies {
		c.t.Release()
	}
}

// withSchema are the copies whose schema exists under the tenant's name.
func withSchema(copies []shardCopy) []shardCopy {
	var out []shardCopy
	for _, c := range copies {
		if c.snap.SchemaExists {
			out = append(out, c)
		}
	}
	return out
}

// merged is the tenant as all its copies show it: a schema if any copy has
// one, the latest activity of all copies, their documents and pairs
// together (drained only when every copy is), a drop under way or a record
// forgotten on any copy, and the records merged (mergeRecords). The
// placement comes from the catalog (the first copy).
func merged(copies []shardCopy) dataplane.Snapshot {
	if len(copies) == 1 {
		return copies[0].snap
	}
	var m dataplane.Snapshot
	var recs []dataplane.Record
	for i, c := range copies {
		s := c.snap
		if i == 0 {
			m.ShardName = s.ShardName
		}
		recs = append(recs, s.Record)
		m.Underway = m.Underway || s.Underway
		m.Forgotten = m.Forgotten || s.Forgotten
		if !s.SchemaExists {
			continue
		}
		if !m.SchemaExists {
			m.SchemaOID = s.SchemaOID
		}
		m.SchemaExists = true
		m.HasCraft = m.HasCraft || s.HasCraft
		for _, t := range s.MissingTables {
			if !slices.Contains(m.MissingTables, t) {
				m.MissingTables = append(m.MissingTables, t)
			}
		}
		m.Activity = dataplane.MergeActivity(m.Activity, s.Activity)
		m.Pairs += s.Pairs
	}
	m.Record = dataplane.MergeRecords(recs)
	return m
}

// mergeFacts merges what two final looks read.
func mergeFacts(a, b dataplane.Facts) dataplane.Facts {
	return dataplane.Facts{Activity: dataplane.MergeActivity(a.Activity, b.Activity), Pairs: a.Pairs + b.Pairs}
}

// shardList names the shards of copies, for messages.
func shardList(copies []shardCopy) string {
	var names []string
	for _, c := range copies {
		names = append(names, c.shard)
	}
	return strings.Join(names, ", ")
}

// markAll marks every copy, each in its own transaction with its final
// look under lock, nested: the transactions of the copies after the first
// run inside the first's look, so that every copy's activity tables are
// locked when judge sees the merged facts. The innermost commits first; a
// later failure of an outer one (a trigger found while marking it, say)
// leaves the inner copies marked and is reported; the next request marks
// the rest.
func markAll(ctx context.Context, copies []shardCopy, requestedBy string, judge func(dataplane.Facts) error) (dataplane.MarkResult, error) {
	var markFrom func(i int, acc dataplane.Facts) (dataplane.MarkResult, error)
	markFrom = func(i int, acc dataplane.Facts) (dataplane.MarkResult, error) {
		var inner dataplane.MarkResult
		res, err := copies[i].t.Mark(ctx, requestedBy, func(f dataplane.Facts) error {
			all := mergeFacts(acc, f)
			if i == len(copies)-1 {
				return judge(all)
			}
			var err error
			inner, err = markFrom(i+1, all)
			return err
		})
		if err != nil {
			if len(copies) > 1 {
				err = fmt.Errorf("shard %s: %w", copies[i].shard, err)
			}
			return dataplane.MarkResult{}, err
		}
		res.CanceledAttempts += inner.CanceledAttempts
		res.StoppingAttempts += inner.StoppingAttempts
		res.DeletingPairs += inner.DeletingPairs
		res.Pairs += inner.Pairs
		res.SchemaGone = res.SchemaGone || inner.SchemaGone
		res.Facts = mergeFacts(res.Facts, inner.Facts)
		return res, nil
	}
	return markFrom(0, dataplane.Facts{})
}

// dropAll drops the tenant's schema on every copy. Drops under way (a
// schema renamed to its quarantine name) are completed first, each alone.
// Then the copies whose schema exists are dropped nested like markAll: the
// look transaction of each copy runs the drops of the copies after it, so
// that judge sees the facts of every copy read under lock, and the first
// copy (the catalog's, which deletes the public rows in its look) commits
// last. Each copy's drop keeps its guarantees on its own shard: closure and
// net, its drop slots and lock budget, its record and quarantine.
//
// committed, when set, receives each drop transaction's COMMIT latency with
// its shard (for that shard's pacer); observe, when set, how long each
// copy's drop took (a nested one includes the copies after it).
func dropAll(ctx context.Context, copies []shardCopy, checks dataplane.DropChecks,
	committed func(shard string, commit time.Duration), observe func(shard string, took time.Duration)) (dataplane.DropResult, error) {
	drop := func(c shardCopy, checks dataplane.DropChecks) (dataplane.DropResult, error) {
		if committed != nil {
			checks.Committed = func(d time.Duration) { committed(c.shard, d) }
		}
		start := time.Now()
		r, err := c.t.Drop(ctx, checks)
		if observe != nil {
			observe(c.shard, time.Since(start))
		}
		return r, err
	}
	if len(copies) == 1 {
		return drop(copies[0], unseen(copies[0], checks))
	}
	total := dataplane.DropResult{AlreadyGone: true}
	add := func(r dataplane.DropResult) {
		total.AlreadyGone = total.AlreadyGone && r.AlreadyGone
		total.Underway = total.Underway || r.Underway
		total.Relations += r.Relations
		total.Transactions += r.Transactions
		total.PublicRows = addPublicRows(total.PublicRows, r.PublicRows)
		if r.Looked {
			total.Looked = true
			total.Facts = mergeFacts(total.Facts, r.Facts)
		}
	}
	judge := checks.Look
	var live []shardCopy
	for _, c := range copies {
		if c.snap.Underway {
			r, err := drop(c, checks)
			add(r)
			if err != nil {
				return total, fmt.Errorf("shard %s: %w", c.shard, err)
			}
			continue
		}
		live = append(live, c)
	}
	// dropFrom drops live[i:]; looked says whether an outer copy made its
	// look (judge runs only after at least one look, in the innermost one).
	var dropFrom func(i int, acc dataplane.Facts, looked bool) error
	dropFrom = func(i int, acc dataplane.Facts, looked bool) error {
		if i == len(live) {
			if !looked {
				return nil // no copy had a schema to look at: nothing judged, nothing dropped
			}
			return judge(acc)
		}
		ran := false
		cc := checks
		cc.Look = func(f dataplane.Facts) error {
			ran = true
			return dropFrom(i+1, mergeFacts(acc, f), true)
		}
		cc = unseen(live[i], cc)
		r, err := drop(live[i], cc)
		add(r)
		if err != nil {
			return fmt.Errorf("shard %s: %w", live[i].shard, err)
		}
		if !ran { // no schema to look at there (gone meanwhile): on with the rest
			return dropFrom(i+1, acc, looked)
		}
		return nil
	}
	return total, dropFrom(0, dataplane.Facts{}, false)
}

// unseen makes the drop of a copy where preflight saw no schema (and no
// drop under way) stop at its look if it finds one: a schema that appeared
// since (a move under way) was not checked by preflight nor paced by its
// shard's pacer; the tenant is looked at again from the start.
func unseen(c shardCopy, checks dataplane.DropChecks) dataplane.DropChecks {
	if c.snap.SchemaExists || c.snap.Underway {
		return checks
	}
	checks.Look = func(dataplane.Facts) error {
		return tenant.Later(time.Second, "a schema of its name appeared on shard "+c.shard+
			" since it was looked at: it is looked at again from the start", nil)
	}
	return checks
}

func addPublicRows(a, b dataplane.PublicRows) dataplane.PublicRows {
	a.OAuthAccounts += b.OAuthAccounts
	a.UserMappings += b.UserMappings
	a.Shard += b.Shard
	a.AnonymousPath += b.AnonymousPath
	a.InviteCounter += b.InviteCounter
	a.SSODomains += b.SSODomains
	return a
}

// markTargets are the copies the marker marks: those whose schema exists
// under the tenant's name and whose own drop is not under way.
func markTargets(pre checked) []shardCopy {
	var out []shardCopy
	for _, c := range withSchema(pre.copies) {
		if !c.snap.Underway {
			out = append(out, c)
		}
	}
	return out
}
