package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/fixtures/onyx"
)

// bench holds what one run created and measured.
type bench struct {
	o   *options
	res *results
	pid int
	tmp string // logs, JetStream stores, CSVs

	mu      sync.Mutex
	created []string // databases this run created and has not dropped yet

	fleet struct {
		data, control string
		ids           []string
	}
	// small fleets for (d) and (e), by size; connectable (read-only use)
	small map[int]smallFleet
}

type smallFleet struct {
	data, control string
	ids           []string
}

func newBench(ctx context.Context, o *options) (*bench, error) {
	b := &bench{o: o, res: &results{}, pid: os.Getpid(), small: map[int]smallFleet{}}
	var err error
	if b.tmp, err = os.MkdirTemp("", "tenant-cleanup-bench-"); err != nil {
		return nil, err
	}
	admin, err := pgx.Connect(ctx, o.admin)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s (set BENCH_DATABASE_URL): %w", o.admin, err)
	}
	defer admin.Close(ctx)
	dropOrphans(ctx, admin)
	b.res.Params = params{Tenants: o.tenants, TablesPerTenant: fixtureTables + o.filler, FillerTables: o.filler,
		AnalyzerSizes: o.analyzerSizes, SmallTablesPerTenant: fixtureTables + o.smallFiller, RSSTenants: o.rssTenants,
		Parts: strings.Join(partsOf(o.only), ",")}
	return b, nil
}

func partsOf(only map[string]bool) []string {
	var out []string
	for _, p := range allParts {
		if only[p] {
			out = append(out, p)
		}
	}
	return out
}

// cleanup drops every database the run created (unless -keep) and the
// temporary directory.
func (b *bench) cleanup() {
	if b.o.keep {
		fmt.Printf("\n-keep: kept databases %s and %s\n", strings.Join(b.created, " "), b.tmp)
		return
	}
	b.mu.Lock()
	names := append([]string(nil), b.created...) // dropDatabases edits b.created
	b.mu.Unlock()
	b.dropDatabases(names...)
	os.RemoveAll(b.tmp)
}

// fixtureTables is the number of tables fixture.create_tenant makes (Craft's
// build_session comes on top for the tenants that used Craft).
const fixtureTables = 13

var orphanName = regexp.MustCompile(`^bench_([0-9]+)_`)

// dropOrphans drops bench_<pid>_* databases left by bench runs that died.
func dropOrphans(ctx context.Context, admin *pgx.Conn) {
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname ~ '^bench_[0-9]+_'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range names {
		m := orphanName.FindStringSubmatch(name)
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		fmt.Printf("    dropping %s, left by bench run %d that is gone\n", name, pid)
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
}

func (b *bench) dbName(what string) string { return fmt.Sprintf("bench_%d_%s", b.pid, what) }

func (b *bench) dbURL(name string) string {
	u, err := url.Parse(b.o.admin)
	if err != nil {
		panic(err)
	}
	u.Path = "/" + name
	q := u.Query()
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// createDatabase creates name, empty or as a FILE_COPY clone of template
// (much faster than the default WAL_LOG strategy for catalogs of a million
// relations), and returns how long that took.
func (b *bench) createDatabase(ctx context.Context, name, template string) (time.Duration, error) {
	admin, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return 0, err
	}
	defer admin.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return 0, err
	}
	sql := "CREATE DATABASE " + ident
	if template != "" {
		sql += " TEMPLATE " + pgx.Identifier{template}.Sanitize() + " STRATEGY FILE_COPY"
	}
	start := time.Now()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		// "source database is being accessed by other users": a connection of
		// ours that has not quite gone yet.
		if _, lastErr = admin.Exec(ctx, sql); lastErr == nil || !strings.Contains(lastErr.Error(), "being accessed") {
			break
		}
		time.Sleep(time.Second)
	}
	if lastErr != nil {
		return 0, fmt.Errorf("create database %s: %w", name, lastErr)
	}
	b.mu.Lock()
	b.created = append(b.created, name)
	b.mu.Unlock()
	return time.Since(start), nil
}

// settle checkpoints PostgreSQL and flushes every file system's dirty pages.
func (b *bench) settle(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	syscall.Sync()
	return nil
}

// clone creates a data-plane and control-plane pair from templates and
// records the setup time.
func (b *bench) clone(ctx context.Context, what, dataTpl, controlTpl string) (data, control string, err error) {
	data, control = b.dbName(what+"_data"), b.dbName(what+"_control")
	d1, err := b.createDatabase(ctx, data, dataTpl)
	if err != nil {
		return "", "", err
	}
	d2, err := b.createDatabase(ctx, control, controlTpl)
	if err != nil {
		return "", "", err
	}
	// Settle the copy before anything is timed: a clone leaves about a
	// gigabyte of dirty pages that the kernel would otherwise write back
	// during the measured run (the floor varied 267–755 tenants/min without
	// this). A checkpoint, then sync(2), both untimed.
	start := time.Now()
	if err := b.settle(ctx); err != nil {
		return "", "", err
	}
	b.res.addSetup("clone for "+what, 0, d1+d2+time.Since(start), 0)
	info("cloned %s from %s in %s", data, dataTpl, (d1 + d2).Round(100*time.Millisecond))
	return data, control, nil
}

func (b *bench) dropDatabases(names ...string) {
	if b.o.keep {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	for _, n := range names {
		if n == "" {
			continue
		}
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Printf("    could not drop %s: %v\n", n, err)
			continue
		}
		b.mu.Lock()
		for i, c := range b.created {
			if c == n {
				b.created = append(b.created[:i], b.created[i+1:]...)
				break
			}
		}
		b.mu.Unlock()
	}
}

func (b *bench) databaseSize(ctx context.Context, name string) int64 {
	admin, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return 0
	}
	defer admin.Close(ctx)
	var size int64
	_ = admin.QueryRow(ctx, "SELECT pg_database_size($1)", name).Scan(&size)
	return size
}

// freshFixtureDatabase creates name and loads the fixture script into it.
func (b *bench) freshFixtureDatabase(ctx context.Context, name, script string) error {
	if _, err := b.createDatabase(ctx, name, ""); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, b.dbURL(name))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, script); err != nil { // simple protocol: the whole script
		return fmt.Errorf("load fixture into %s: %w", name, err)
	}
	return nil
}

// setupConn is a session for building fleets: its commits do not wait for
// the WAL flush (nothing here needs to survive a crash).
func setupConn(ctx context.Context, url string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "SET synchronous_commit = off"); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

func throughputID(i int) string { return fmt.Sprintf("tenant_b0000000-0000-4000-8000-%012x", i+1) }
func smallID(i int) string      { return fmt.Sprintf("tenant_d0000000-0000-4000-8000-%012x", i+1) }

func quoteIdent(id string) string { return pgx.Identifier{id}.Sanitize() }

// craftLiteral gives every tenth tenant a Craft build_session table (last
// used 150 days ago), so the "build_session if present" paths run too.
func craftLiteral(i int) string {
	if i%10 == 9 {
		return "now() - interval '150 days'"
	}
	return "NULL"
}

// bytesPerTableEstimate is what one empty fixture table costs on disk with its
// indexes, TOAST table, sequence and catalog rows (measured on this machine:
// a 143-table tenant takes about 7 MB and 1,000 files).
const (
	bytesPerTableEstimate = 7 << 20 / 143
	filesPerTableEstimate = 7
)

// buildThroughputFleet builds the template pair for (a), (b), (c) and (p):
// N eligible tenants of 13+filler tables, already marked and drained.
func (b *bench) buildThroughputFleet(ctx context.Context) error {
	n, tables := b.o.tenants, fixtureTables+b.o.filler
	copies := 0
	for _, p := range []string{"a", "b", "p"} {
		if b.o.only[p] {
			copies++
		}
	}
	if b.o.only["c"] {
		copies += 2
	}
	perCopy := int64(n) * int64(tables) * bytesPerTableEstimate
	step("building the throughput fleet: %d drained, eligible tenants × %d tables", n, tables)
	info("disk estimate: %d tables ≈ %d files ≈ %.1f GiB per copy; the template plus one clone at a time (%d clones, each dropped after its run)",
		n*tables, n*tables*filesPerTableEstimate, float64(perCopy)/(1<<30), copies)
	info("locks: each tenant is created in transactions of at most 65 tables (≈1,200 locks); the server's lock table holds %d",
		64*100)
	start := time.Now()
	data, control := b.dbName("tpl_data"), b.dbName("tpl_control")
	if err := b.freshFixtureDatabase(ctx, data, onyx.DataPlaneSQL); err != nil {
		return err
	}
	if err := b.freshFixtureDatabase(ctx, control, onyx.ControlPlaneSQL); err != nil {
		return err
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = throughputID(i)
	}
	err := parallel(ctx, b.o.workers, n, 20, "tenants", func(ctx context.Context, w *worker, i int) error {
		return buildDrainedTenant(ctx, w, ids[i], b.o.filler, craftLiteral(i))
	}, b.dbURL(data), b.dbURL(control))
	if err != nil {
		return err
	}
	if err := finishTemplate(ctx, b.dbURL(data)); err != nil {
		return err
	}
	b.timeCatalogQueries(ctx, b.dbURL(data), "throughput", n, tables, ids[0], b.profileDir())
	if err := b.lockTemplate(ctx, data, control); err != nil {
		return err
	}
	took := time.Since(start)
	size := b.databaseSize(ctx, data)
	b.fleet.data, b.fleet.control, b.fleet.ids = data, control, ids
	b.res.addSetup("throughput fleet template", n, took, size)
	info("built in %s (%.2f s per tenant); data plane %.2f GiB (%.1f MB per tenant)", took.Round(time.Second),
		took.Seconds()/float64(n), float64(size)/(1<<30), float64(size)/float64(n)/1e6)
	return nil
}

// buildDrainedTenant creates one tenant (fixture tables, a few users,
// documents and chat 200 days ago), its filler tables in transactions of at
// most 65, marks it as the marker would and runs Onyx's simulated background
// deletion until no pair is left, then leaves 3 stray documents (the cleaner
// tolerates DRAIN_MAX_LEFTOVER_DOCS=5), and creates its control-plane rows.
func buildDrainedTenant(ctx context.Context, w *worker, id string, filler int, craft string) error {
	s := quoteIdent(id)
	if _, err := w.data.Exec(ctx, fmt.Sprintf(
		"SELECT fixture.create_tenant('%[1]s', 0); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[2]s)",
		id, craft)); err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	for from := 1; from <= filler; from += 65 {
		to := min(from+64, filler)
		if _, err := w.data.Exec(ctx, fmt.Sprintf("SELECT fixture.filler_table('%s', g) FROM generate_series(%d, %d) g",
			id, from, to)); err != nil {
			return fmt.Errorf("filler tables of %s: %w", id, err)
		}
	}
	if _, err := w.data.Exec(ctx, fmt.Sprintf(`
		UPDATE %[1]s.index_attempt SET cancellation_requested = true WHERE status = 'IN_PROGRESS';
		UPDATE %[1]s.index_attempt SET status = 'CANCELED' WHERE status = 'NOT_STARTED';
		UPDATE %[1]s.connector_credential_pair SET status = 'DELETING'`, s)); err != nil {
		return fmt.Errorf("mark %s: %w", id, err)
	}
	for round := 0; ; round++ {
		var docs, pairs int64
		if err := w.data.QueryRow(ctx, "SELECT fixture.drain_step($1, 1000)", id).Scan(&docs); err != nil {
			return fmt.Errorf("drain %s: %w", id, err)
		}
		if err := w.data.QueryRow(ctx, "SELECT count(*) FROM "+s+".connector_credential_pair").Scan(&pairs); err != nil {
			return err
		}
		if docs == 0 && pairs == 0 {
			break
		}
		if round == 10 {
			return fmt.Errorf("%s: still %d pairs and %d documents after 10 drain steps", id, pairs, docs)
		}
	}
	if _, err := w.data.Exec(ctx, "INSERT INTO "+s+".document (id, semantic_id, link, chunk_count) "+
		"SELECT 'stray-' || g, 'stray doc', 'https://example.com/stray-' || g, 1 FROM generate_series(1, 3) g"); err != nil {
		return err
	}
	_, err := w.control.Exec(ctx, "SELECT fixture_control_tenant($1, 'GATED_ACCESS', now() - interval '400 days')", id)
	return err
}

// finishTemplate analyzes the catalogs (autovacuum is off on this server, so
// nothing else would) so that clones plan catalog queries as a live database
// would.
func finishTemplate(ctx context.Context, dataURL string) error {
	conn, err := pgx.Connect(ctx, dataURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `ANALYZE pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_depend,
		pg_catalog.pg_type, pg_catalog.pg_constraint, pg_catalog.pg_index, pg_catalog.pg_namespace,
		pg_catalog.pg_attrdef, pg_catalog.pg_sequence, pg_catalog.pg_description, pg_catalog.pg_shdepend,
		public.user_tenant_mapping, public.user_tenant_mapping_oauth_account, public.tenant_shard,
		public.tenant_anonymous_user_path, public.tenant_invite_counter, public.tenant_sso_domain`)
	return err
}

// lockTemplate forbids connections to the templates so that nothing holds
// them open when they are cloned.
func (b *bench) lockTemplate(ctx context.Context, names ...string) error {
	admin, err := pgx.Connect(ctx, b.o.admin)
	if err != nil {
		return err
	}
	defer admin.Close(ctx)
	for _, n := range names {
		if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{n}.Sanitize()+" WITH ALLOW_CONNECTIONS false"); err != nil {
			return err
		}
	}
	return nil
}

// buildSmallFleets builds the fleets for (d) and (e): tenants of the fixture's
// 13 tables (plus -small-filler), eligible (gated, created 400 days ago, last
// query 200 days ago) and NOT drained (pairs and documents left), so that in
// (e) every drain check finds work left and reschedules. Sizes are built
// incrementally: each is a clone of the previous one plus the extra tenants.
func (b *bench) buildSmallFleets(ctx context.Context) error {
	sizes := []int{}
	if b.o.only["d"] {
		sizes = append(sizes, b.o.analyzerSizes...)
	}
	if b.o.only["e"] && !slices.Contains(sizes, b.o.rssTenants) {
		sizes = append(sizes, b.o.rssTenants)
	}
	slices.Sort(sizes)
	largest := sizes[len(sizes)-1]
	tables := fixtureTables + b.o.smallFiller
	step("building the analyzer/RSS fleets: %v eligible, undrained tenants × %d tables", sizes, tables)
	info("disk estimate: ≈ %.1f GiB for the largest (%d tenants), %d fleets kept until (d) and (e) are done",
		float64(largest)*float64(tables)*bytesPerTableEstimate*1.3/(1<<30), largest, len(sizes))
	prev, built := smallFleet{}, 0
	start := time.Now()
	for _, size := range sizes {
		t0 := time.Now()
		f := smallFleet{data: b.dbName(fmt.Sprintf("small%d_data", size)), control: b.dbName(fmt.Sprintf("small%d_control", size))}
		if prev.data == "" {
			if err := b.freshFixtureDatabase(ctx, f.data, onyx.DataPlaneSQL); err != nil {
				return err
			}
			if err := b.freshFixtureDatabase(ctx, f.control, onyx.ControlPlaneSQL); err != nil {
				return err
			}
		} else {
			if _, err := b.createDatabase(ctx, f.data, prev.data); err != nil {
				return err
			}
			if _, err := b.createDatabase(ctx, f.control, prev.control); err != nil {
				return err
			}
		}
		batch := max(1, 5*fixtureTables/tables)
		from := built
		jobs := (size - from + batch - 1) / batch
		err := parallel(ctx, b.o.workers, jobs, 40, fmt.Sprintf("batches of %d tenants", batch), func(ctx context.Context, w *worker, j int) error {
			lo := from + j*batch
			hi := min(lo+batch, size)
			return buildSmallTenants(ctx, w, lo, hi, b.o.smallFiller)
		}, b.dbURL(f.data), b.dbURL(f.control))
		if err != nil {
			return err
		}
		if err := finishTemplate(ctx, b.dbURL(f.data)); err != nil {
			return err
		}
		b.timeCatalogQueries(ctx, b.dbURL(f.data), "analyzer/RSS", size, tables, smallID(0), b.profileDir())
		for i := 0; i < size; i++ {
			f.ids = append(f.ids, smallID(i))
		}
		b.small[size] = f
		took := time.Since(t0)
		sz := b.databaseSize(ctx, f.data)
		b.res.addSetup(fmt.Sprintf("analyzer/RSS fleet of %d", size), size-from, took, sz)
		info("%d tenants ready in %s (+%d built, %.0f ms per tenant); data plane %.2f GiB", size, took.Round(time.Second),
			size-from, took.Seconds()*1000/float64(max(size-from, 1)), float64(sz)/(1<<30))
		prev, built = f, size
	}
	info("analyzer/RSS fleets built in %s", time.Since(start).Round(time.Second))
	return nil
}

func buildSmallTenants(ctx context.Context, w *worker, lo, hi, filler int) error {
	var sb strings.Builder
	ids := make([]string, 0, hi-lo)
	for i := lo; i < hi; i++ {
		id := smallID(i)
		ids = append(ids, id)
		fmt.Fprintf(&sb, "SELECT fixture.create_tenant('%[1]s', %[2]d); SELECT fixture.seed_tenant('%[1]s', 2, 1, 5, now() - interval '200 days', %[3]s);\n",
			id, filler, craftLiteral(i))
	}
	if _, err := w.data.Exec(ctx, sb.String()); err != nil {
		return fmt.Errorf("create tenants %d-%d: %w", lo, hi-1, err)
	}
	_, err := w.control.Exec(ctx, "SELECT fixture_control_tenant(id, 'GATED_ACCESS', now() - interval '400 days') FROM unnest($1::text[]) id", ids)
	return err
}

// worker is one setup session on each plane.
type worker struct {
	data, control *pgx.Conn
}

func (w *worker) open(ctx context.Context, dataURL, controlURL string) error {
	var err error
	if w.data, err = setupConn(ctx, dataURL); err != nil {
		return err
	}
	w.control, err = setupConn(ctx, controlURL)
	return err
}

func (w *worker) close() {
	for _, c := range []*pgx.Conn{w.data, w.control} {
		if c != nil {
			c.Close(context.Background())
		}
	}
	w.data, w.control = nil, nil
}

// parallel runs fn(0..n-1) on workers sessions, printing progress; each
// session is replaced after reconnectEvery calls.
func parallel(ctx context.Context, workers, n, reconnectEvery int, what string, fn func(context.Context, *worker, int) error, dataURL, controlURL string) error {
	var (
		next     atomic.Int64
		done     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	stopProgress := make(chan struct{})
	go func() {
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-t.C:
				d := done.Load()
				if d > 0 {
					left := time.Duration(float64(time.Since(start)) / float64(d) * float64(int64(n)-d))
					info("%d/%d %s, about %s left", d, n, what, left.Round(time.Second))
				}
			}
		}
	}()
	defer close(stopProgress)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(err error) {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
			}
			w := &worker{}
			defer w.close()
			for jobs := 0; ctx.Err() == nil; jobs++ {
				// A session that created thousands of relations carries
				// caches of them all, and every invalidation from the other
				// sessions' DDL costs it more: start afresh now and then.
				if jobs%reconnectEvery == 0 {
					w.close()
					if err := w.open(ctx, dataURL, controlURL); err != nil {
						fail(err)
						return
					}
				}
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, w, i); err != nil {
					fail(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// profileDir is the absolute -profile-dir, created; "" if it cannot be.
func (b *bench) profileDir() string {
	dir, err := filepath.Abs(b.o.profileDir)
	if err != nil || os.MkdirAll(dir, 0o755) != nil {
		return ""
	}
	return dir
}
