package analyzer

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/controlplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// A pass holds little per tenant: it keeps the names of every shard's
// tenant schemas in a compact list (about 50 bytes a schema, to tell a
// tenant whose schema is gone from one it listed), and takes the fleet a
// chunk of chunkTenants tenants at a time, by tenant id, as the shards list
// them: their control-plane rows, records and placements in one lookup
// each, their activity read by each shard's readers, their verdict handed on
// as soon as the chunk is read. At most chunksAhead chunks are looked up or
// read ahead of the one being judged, so that what a pass holds besides the
// names does not grow with the fleet.
var chunkTenants = 100 // a variable for tests

const chunksAhead = 2

// Analyze reads both planes and applies the rule; it changes nothing. The
// report keeps the candidates (and, with ReadAll, every tenant).
func (a *Analyzer) Analyze(ctx context.Context) (*Report, error) {
	r := &Report{keepCandidates: true}
	if err := a.analyze(ctx, r, nil); err != nil {
		return nil, err
	}
	return r, nil
}

// analyze fills r with the analysis and calls emit, when set, with each
// candidate that is not in the pipeline already, as it is found; an error
// of emit stops the analysis and is returned.
func (a *Analyzer) analyze(ctx context.Context, r *Report, emit func(Tenant) error) error {
	now := a.Now()
	window := tenant.Window(a.InactiveDays)
	r.At, r.InactiveDays, r.keepAll = now, a.InactiveDays, a.ReadAll
	// The control plane is counted (for the summary's "not here") while the
	// fleet is gone through; every shard is listed as the pass goes, the
	// chunks taking the schemas as they are listed.
	var (
		controlCount int
		countErr     error
		wg           sync.WaitGroup
	)
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // before the wait: the listings stop
	wg.Go(func() { controlCount, countErr = a.Control.CountTenants(ctx) })
	reads := a.listShards(ctx, &wg)
	if a.sharded() {
		r.Shards = make([]ShardCount, len(reads))
	}
	p := &passState{a: a, r: r, reads: reads, now: now, window: window}

	// A schema of a tenant's name is read whatever the record says: a drop
	// under way renamed the schema it drops, so one of the tenant's name is
	// another copy (restored, recreated), as alive as any. Only a tenant
	// the control plane says could be eligible needs its activity.
	want := func(sc dataplane.SchemaInfo, control map[tenant.ID]controlplane.Record) bool {
		rec, found := control[sc.ID]
		return a.ReadAll || mayBeEligible(rec, found, now, window)
	}
	if err := p.run(ctx, want, emit); err != nil {
		return err
	}
	// The public rows are read after the activity, so that a tenant whose
	// schema is dropped meanwhile is seen as an interrupted cleanup only if
	// its public rows outlive the read.
	if err := p.orphans(ctx, emit); err != nil {
		return err
	}
	r.SkippedSchemas = nil
	for _, sr := range reads {
		r.SkippedSchemas = append(r.SkippedSchemas, sr.skipped...)
	}
	wg.Wait()
	if countErr != nil {
		return countErr
	}
	for i, sr := range reads {
		if a.sharded() {
			r.Shards[i].Name = sr.name
			if err := sr.failure(); err != nil {
				r.Shards[i].Unreachable = err.Error()
			}
		}
	}
	r.NotHere = max(0, controlCount-p.inControl)
	slices.SortFunc(r.Unreadable, func(x, y Unreadable) int { return strings.Compare(string(x.ID), string(y.ID)) })
	slices.Sort(r.InPipeline)
	slices.SortFunc(r.Tenants, func(x, y Tenant) int { return strings.Compare(string(x.ID), string(y.ID)) })
	return nil
}

// shardRead is one shard as a pass reads it.
type shardRead struct {
	name  string
	store *dataplane.Store
	// listed brings the shard's schemas, by name, as they are listed; it is
	// closed at the end of the list (skipped and err are then set).
	listed chan dataplane.SchemaInfo
	// schemas are the names listed (read once listed is closed).
	schemas schemaList
	skipped []string
	// cut: the list failed before its end (set before listed is closed).
	cut bool
	// head is the next schema taken from listed and not yet in a chunk,
	// listedTo the last name taken, ended whether listed is closed (a list
	// cut short says nothing of the names after it); only nextChunk uses
	// them.
	head     *dataplane.SchemaInfo
	listedTo tenant.ID
	ended    bool
	mu       sync.Mutex
	// err is why the shard could not be listed or read: the pass fails for
	// the catalog; another shard's schemas are not read from then on, and
	// the tenants it did not list are left for the next pass.
	err error
}

func (sr *shardRead) failure() error {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return sr.err
}

func (sr *shardRead) fail(err error) {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	if sr.err == nil {
		sr.err = err
	}
}

// listShards starts listing the tenant schemas of every shard, the catalog
// first, all at the same time (in goroutines of wg).
func (a *Analyzer) listShards(ctx context.Context, wg *sync.WaitGroup) []*shardRead {
	reads := []*shardRead{{name: a.catalogName(), store: a.Data}}
	for _, name := range slices.Sorted(maps.Keys(a.Shards)) {
		reads = append(reads, &shardRead{name: name, store: a.Shards[name]})
	}
	for _, sr := range reads {
		sr.listed = make(chan dataplane.SchemaInfo, chunkTenants)
		wg.Go(func() {
			defer close(sr.listed)
			// The list holds a connection while the pass goes; with a single
			// one, the reads would wait for it forever: the list is then
			// read whole first.
			var held []dataplane.SchemaInfo
			skipped, err := sr.store.EachTenantSchema(ctx, func(info dataplane.SchemaInfo) error {
				if n := sr.schemas.len(); n > 0 && bytes.Compare(sr.schemas.name(n-1), []byte(info.ID)) >= 0 {
					return fmt.Errorf("list tenant schemas: %s came after %s: the list is not in byte order", info.ID, sr.schemas.name(n-1))
				}
				sr.schemas.add(info.ID)
				if sr.store.MaxConns() < 2 {
					held = append(held, info)
					return nil
				}
				return send(ctx, sr.listed, info)
			})
			for _, info := range held {
				if err == nil {
					err = send(ctx, sr.listed, info)
				}
			}
			sr.skipped = skipped
			if err != nil {
				sr.cut = true
				sr.fail(err)
			}
		})
	}
	return reads
}

func send[T any](ctx context.Context, ch chan<- T, v T) error {
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// schemaList is the names of one shard's tenant schemas, compactly, in
// byte order: one byte slice, and where each name ends in it.
type schemaList struct {
	names []byte
	ends  []uint32
}

func (l *schemaList) add(id tenant.ID) {
	l.names = append(l.names, id...)
	l.ends = append(l.ends, uint32(len(l.names)))
}

func (l *schemaList) len() int { return len(l.ends) }

func (l *schemaList) name(i int) []byte {
	start := uint32(0)
	if i > 0 {
		start = l.ends[i-1]
	}
	return l.names[start:l.ends[i]]
}

func (l *schemaList) contains(id tenant.ID) bool {
	i := sort.Search(l.len(), func(i int) bool { return string(l.name(i)) >= string(id) })
	return i < l.len() && string(l.name(i)) == string(id)
}

// passState is what a pass keeps while it goes through the fleet.
type passState struct {
	a           *Analyzer
	r           *Report
	reads       []*shardRead
	now         time.Time
	window      time.Duration
	inControl   int // tenants seen that have a control-plane row
	unreachable []string
}

// chunk is a run of tenants, by id, with everything the pass read of them.
type chunk struct {
	ids []tenant.ID
	// copies are the tenants' schemas, by tenant then shard: those of ids[i]
	// are copies[first[i]:first[i+1]].
	copies     []shardCopy
	first      []int
	control    map[tenant.ID]controlplane.Record
	records    []map[tenant.ID]dataplane.Record // by shard (nil: not read)
	placements map[tenant.ID]string
	// unlisted are, by index in ids, the shards whose list failed before
	// it reached the tenant: a copy there may be the one in use.
	unlisted map[int][]string
	reads    sync.WaitGroup // the activity reads not done yet
	mu       sync.Mutex
	err      error // the pass fails with it
}

func (c *chunk) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
}

func (c *chunk) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// recordOf is the tenant's record over every shard.
func (c *chunk) recordOf(id tenant.ID) dataplane.Record {
	var recs []dataplane.Record
	for _, m := range c.records {
		recs = append(recs, m[id])
	}
	return dataplane.MergeRecords(recs)
}

// shardCopy is one tenant schema on one shard, as a pass read it.
type shardCopy struct {
	shard    int // index in the pass's shards
	info     dataplane.SchemaInfo
	activity dataplane.TenantActivity
	// lost: its shard failed before its activity was read.
	lost error
}

// readJob is a batch of one chunk's copies on one shard to read.
type readJob struct {
	c    *chunk
	copy []int // indexes in c.copies
}

// run goes through the listed fleet a chunk at a time: a goroutine looks up
// each chunk and hands its activity reads to each shard's readers, and the
// chunks are judged here, in order, once read.
func (p *passState) run(ctx context.Context, want func(dataplane.SchemaInfo, map[tenant.ID]controlplane.Record) bool,
	emit func(Tenant) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	jobs := make([]chan readJob, len(p.reads))
	for i, sr := range p.reads {
		jobs[i] = make(chan readJob)
		for range max(min(p.a.Workers, maxReaders), 1) {
			workers.Go(func() {
				for job := range jobs[i] {
					p.read(ctx, sr, i, job)
				}
			})
		}
	}
	chunks := make(chan *chunk, chunksAhead)
	workers.Go(func() {
		defer func() {
			close(chunks)
			for _, j := range jobs {
				close(j)
			}
		}()
		p.produce(ctx, want, chunks, jobs)
	})
	var err error
	for c := range chunks {
		if err != nil {
			continue // drained after a failure
		}
		c.reads.Wait()
		if err = c.failure(); err == nil {
			err = p.judge(c, emit)
		}
		if err != nil {
			cancel()
		}
	}
	workers.Wait()
	return err
}

// produce cuts the listed fleet into chunks, looks each up and hands its
// reads to the readers.
func (p *passState) produce(ctx context.Context, want func(dataplane.SchemaInfo, map[tenant.ID]controlplane.Record) bool,
	chunks chan<- *chunk, jobs []chan readJob) {
	for {
		c := p.nextChunk()
		if c == nil {
			return
		}
		var batches [][]int
		var batchShard []int
		if c.failure() == nil {
			if err := p.lookUp(ctx, c); err != nil {
				c.fail(err)
			}
		}
		if c.failure() == nil {
			perShard := make([][]int, len(p.reads))
			for i := range c.copies {
				cp := &c.copies[i]
				if err := p.reads[cp.shard].failure(); err != nil {
					cp.lost = err
					continue
				}
				if len(cp.info.MissingTables) == 0 && want(cp.info, c.control) {
					perShard[cp.shard] = append(perShard[cp.shard], i)
				}
			}
			for s, list := range perShard {
				for start := 0; start < len(list); start += dataplane.ActivityBatch {
					batches = append(batches, list[start:min(start+dataplane.ActivityBatch, len(list))])
					batchShard = append(batchShard, s)
				}
			}
		}
		c.reads.Add(len(batches))
		select {
		case chunks <- c:
		case <-ctx.Done():
			return
		}
		if c.failure() != nil {
			return
		}
		for k, b := range batches {
			select {
			case jobs[batchShard[k]] <- readJob{c: c, copy: b}:
			case <-ctx.Done():
				c.fail(ctx.Err())
				for range batches[k:] {
					c.reads.Done()
				}
				return
			}
		}
	}
}

// nextChunk takes the next chunkTenants tenants of the shards' lists, with
// all their copies, as they are listed; nil at the end. A catalog that could
// not be listed fails the pass (in the chunk).
func (p *passState) nextChunk() *chunk {
	c := &chunk{}
	for len(c.ids) < chunkTenants {
		var least *dataplane.SchemaInfo
		for s, sr := range p.reads {
			if sr.head == nil && !sr.ended {
				if info, ok := <-sr.listed; ok {
					sr.head, sr.listedTo = &info, info.ID
				} else if err := sr.failure(); err != nil && s == 0 {
					c.fail(err)
					return c
				} else {
					sr.ended = true
				}
			}
			if h := sr.head; h != nil && (least == nil || h.ID < least.ID) {
				least = h
			}
		}
		if least == nil {
			break
		}
		id := least.ID
		c.first = append(c.first, len(c.copies))
		c.ids = append(c.ids, id)
		for s, sr := range p.reads {
			if h := sr.head; h != nil && h.ID == id {
				c.copies = append(c.copies, shardCopy{shard: s, info: *h})
				sr.head = nil
			} else if h == nil && sr.ended && sr.cut && id > sr.listedTo {
				if c.unlisted == nil {
					c.unlisted = map[int][]string{}
				}
				c.unlisted[len(c.ids)-1] = append(c.unlisted[len(c.ids)-1], sr.name)
			}
		}
	}
	if len(c.ids) == 0 {
		return nil
	}
	c.first = append(c.first, len(c.copies))
	return c
}

// lookUp reads the chunk's control-plane rows, its records on every shard
// (a shard that fails is not read from then on) and, in a sharded fleet,
// its placements.
func (p *passState) lookUp(ctx context.Context, c *chunk) error {
	var err error
	if c.control, err = p.a.Control.TenantsOf(ctx, c.ids); err != nil {
		return err
	}
	c.records = make([]map[tenant.ID]dataplane.Record, len(p.reads))
	for s, sr := range p.reads {
		if sr.failure() != nil {
			continue
		}
		// A tenant's record on any shard counts, wherever its schemas are
		// now (a drop may have begun on one shard).
		recs, err := sr.store.RecordsOf(ctx, c.ids)
		if err != nil {
			if s == 0 {
				return err
			}
			sr.fail(err)
			continue
		}
		c.records[s] = recs
	}
	if p.a.sharded() {
		if c.placements, err = p.a.Data.PlacementsOf(ctx, c.ids); err != nil {
			return err
		}
	}
	return nil
}

// read reads one batch of activities; a failure fails the pass on the
// catalog, and marks another shard unreachable.
func (p *passState) read(ctx context.Context, sr *shardRead, shard int, job readJob) {
	defer job.c.reads.Done()
	batch := make([]dataplane.SchemaInfo, len(job.copy))
	for k, i := range job.copy {
		batch[k] = job.c.copies[i].info
	}
	out := make([]dataplane.TenantActivity, len(batch))
	err := ctx.Err()
	if err == nil {
		err = sr.failure()
	}
	if err == nil {
		err = sr.store.ReadActivities(ctx, batch, out)
	}
	if err != nil {
		err = fmt.Errorf("read tenant activity: %w", pgerr.Kind(err))
		if shard == 0 {
			job.c.fail(err)
			return
		}
		sr.fail(err)
		for _, i := range job.copy {
			job.c.copies[i].lost = err
		}
		return
	}
	for k, i := range job.copy {
		job.c.copies[i].activity = out[k]
	}
}

// judge applies the rule to every tenant of a chunk that was read.
func (p *passState) judge(c *chunk, emit func(Tenant) error) error {
	a, r := p.a, p.r
	for i, id := range c.ids {
		p.seen(c, id)
		var (
			copies     []shardCopy
			unreadable string
			lostOn     []string
		)
		for _, cp := range c.copies[c.first[i]:c.first[i+1]] {
			switch {
			case cp.lost != nil:
				lostOn = append(lostOn, p.reads[cp.shard].name)
				continue
			case cp.activity.Gone:
				continue // dropped while we read it
			case cp.activity.Unreadable != "" && unreadable == "":
				unreadable = cp.activity.Unreadable
				if a.sharded() {
					unreadable = "shard " + p.reads[cp.shard].name + ": " + unreadable
				}
			}
			copies = append(copies, cp)
		}
		// A copy not read (its shard failed) may be the one in use: the
		// tenant is judged on the others, never as a candidate.
		lostOn = append(lostOn, c.unlisted[i]...)
		if len(copies) == 0 {
			if len(lostOn) > 0 {
				r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: "shard(s) " + strings.Join(lostOn, ", ") +
					" could not be read: tried again next pass"})
			}
			continue
		}
		if unreadable != "" {
			r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: unreadable})
			continue
		}
		t := Tenant{ID: id, SchemaExists: true}
		for _, cp := range copies {
			t.Activity = dataplane.MergeActivity(t.Activity, cp.activity.Activity)
			t.Shards = append(t.Shards, p.reads[cp.shard].name)
			if len(cp.info.MissingTables) > 0 && t.Reason == "" {
				t.Reason = "schema lacks table(s) " + strings.Join(cp.info.MissingTables, ", ")
				if a.sharded() {
					t.Reason += " (on shard " + p.reads[cp.shard].name + ")"
				}
			}
		}
		if len(copies) == 1 {
			t.Activity = copies[0].activity.Activity
		}
		// Judged on the copies read, it is a candidate only if it would
		// be one were the lost copy inactive too: then it is withheld.
		if len(lostOn) > 0 && t.Reason == "" && classify(t, c.control, p.now, p.window).Eligible {
			r.Withheld++
			t.Reason = "shard(s) " + strings.Join(lostOn, ", ") + " could not be read, and a copy of its schema there " +
				"may be in use: tried again next pass"
		}
		if a.sharded() {
			placement := a.placement(c.placements[id])
			for _, cp := range copies {
				if name := p.reads[cp.shard].name; name != placement {
					r.StrayCopies = append(r.StrayCopies, StrayCopy{ID: id, Shard: name, Placement: placement})
				}
			}
			if !a.configured(placement) && t.Reason == "" {
				t.Reason = fmt.Sprintf("public.tenant_shard places it on shard %q, which is not configured: left alone", placement)
			}
		}
		if err := p.add(c, t, copies, emit); err != nil {
			return err
		}
	}
	return nil
}

// seen counts a tenant the pass saw that has a control-plane row, and
// lists it as unreadable when that row cannot be judged.
func (p *passState) seen(c *chunk, id tenant.ID) {
	rec, found := c.control[id]
	if !found {
		return
	}
	p.inControl++
	if rec.Problem != "" {
		p.r.Unreadable = append(p.r.Unreadable, Unreadable{ID: id, Reason: rec.Problem})
	}
}

// add classifies t, counts it and hands a candidate to emit.
func (p *passState) add(c *chunk, t Tenant, copies []shardCopy, emit func(Tenant) error) error {
	t = classify(t, c.control, p.now, p.window)
	if t.Eligible && t.SchemaExists {
		rec := c.recordOf(t.ID)
		if rec.Marked() && p.now.Sub(rec.LastMarkedAt) < RepublishAfter && !rec.DropStarted() &&
			!slices.ContainsFunc(copies, func(cp shardCopy) bool { return c.records[cp.shard][t.ID].AboutAnotherCopy(cp.info.OID) }) {
			t.InPipeline = true
		}
	}
	for _, cp := range copies {
		if p.a.sharded() {
			sc := &p.r.Shards[cp.shard]
			sc.Schemas++
			sc.Documents += cp.activity.Activity.Documents
			if t.Eligible {
				sc.Candidates++
			}
		}
	}
	if err := p.r.add(t); err != nil {
		return err
	}
	if t.Eligible && !t.InPipeline && emit != nil {
		return emit(t)
	}
	return nil
}

// orphans goes through the tenants whose schema is gone but whose public
// rows remain on this data plane, and whose cleanup by this pipeline began
// (or an operator confirmed it). Without that evidence a tenant is never
// selected: it is listed for review. In a sharded fleet its schema must be
// missing on every shard, and it must not be placed on a shard that is not
// configured.
func (p *passState) orphans(ctx context.Context, emit func(Tenant) error) error {
	a, r := p.a, p.r
	var orphans []tenant.ID // few: tenants with public rows and no schema listed
	err := a.Data.EachTenantWithPublicRows(ctx, func(id tenant.ID) {
		for _, sr := range p.reads {
			if sr.schemas.contains(id) {
				return
			}
		}
		orphans = append(orphans, id)
	})
	if err != nil {
		return err
	}
	for _, sr := range p.reads {
		if sr.failure() != nil {
			p.unreachable = append(p.unreachable, sr.name)
		}
	}
	for start := 0; start < len(orphans); start += chunkTenants {
		c := &chunk{ids: orphans[start:min(start+chunkTenants, len(orphans))]}
		if err := p.lookUp(ctx, c); err != nil {
			return err
		}
		for _, id := range c.ids {
			p.seen(c, id)
			t := Tenant{ID: id}
			placement := a.placement(c.placements[id])
			switch {
			case a.sharded() && !a.configured(placement):
				t.Reason = fmt.Sprintf("no schema on the configured shards, and public.tenant_shard places it on shard %q, "+
					"which is not configured: left for review", placement)
				r.ForReview = append(r.ForReview, id)
			case len(p.unreachable) > 0:
				r.Unreadable = append(r.Unreadable, Unreadable{ID: id, Reason: "no schema on the shards that answered, and shard(s) " +
					strings.Join(p.unreachable, ", ") + " could not be read: its schema may be there"})
				continue
			case c.recordOf(id).Evidence(p.now) == "":
				t.Reason = "schema gone, and nothing shows that a cleanup of it began: left for review"
				r.ForReview = append(r.ForReview, id)
			}
			if err := p.add(c, t, nil, emit); err != nil {
				return err
			}
		}
	}
	return nil
}
