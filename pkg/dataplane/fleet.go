package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// SchemaInfo is one tenant schema found on the data plane.
type SchemaInfo struct {
	ID tenant.ID
	// OID is the schema's pg_namespace oid.
	OID      int64
	HasCraft bool
	// MissingTables lists required tables the schema lacks; such a schema's
	// activity is not read and the tenant is never eligible.
	MissingTables []string
}

// ListTenantSchemas lists the schemas whose names are valid tenant ids.
// Schemas that start like a tenant but are not valid ids are returned in
// skipped and never touched.
func (s *Store) ListTenantSchemas(ctx context.Context) (schemas []SchemaInfo, skipped []string, err error) {
	skipped, err = s.EachTenantSchema(ctx, func(info SchemaInfo) error { schemas = append(schemas, info); return nil })
	if err != nil {
		return nil, nil, err
	}
	return schemas, skipped, nil
}

// EachTenantSchema calls fn with each schema whose name is a valid tenant
// id, by name in byte order, as the rows arrive: the list is never held. An
// error of fn stops it and is returned. Schemas that start like a tenant but
// are not valid ids are returned in skipped and never touched.
func (s *Store) EachTenantSchema(ctx context.Context, fn func(SchemaInfo) error) (skipped []string, err error) {
	rows, err := s.pool.Query(ctx, query("list_schemas", ""))
	if err != nil {
		return nil, fmt.Errorf("list tenant schemas: %w", pgerr.Kind(err))
	}
	defer rows.Close()
	var (
		name   string
		oid    int64
		tables []string
	)
	for rows.Next() {
		if err := rows.Scan(&name, &oid, &tables); err != nil {
			return nil, fmt.Errorf("list tenant schemas: %w", pgerr.Kind(err))
		}
		id, err := tenant.ParseID(name)
		if err != nil {
			skipped = append(skipped, name)
			continue
		}
		info := SchemaInfo{ID: id, OID: oid, HasCraft: slices.Contains(tables, "build_session")}
		for _, r := range requiredTables {
			if !slices.Contains(tables, r) {
				info.MissingTables = append(info.MissingTables, r)
			}
		}
		if err := fn(info); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tenant schemas: %w", pgerr.Kind(err))
	}
	return skipped, nil
}

// TenantActivity is the result of reading one tenant's activity in bulk.
type TenantActivity struct {
	ID       tenant.ID
	Activity Activity
	// Gone is true when the schema disappeared while it was being read.
	Gone bool
	// Unreadable says why the tenant could not be read in time (a lock held
	// on one of its tables, a statement timeout); empty when it was read.
	Unreadable string
}

// ActivityBatch is how many tenant schemas one worker reads per round trip
// (ReadActivities). They are pipelined, each read its own statement and its
// own implicit transaction (a Sync after each), so no transaction ever spans
// two tenants.
const ActivityBatch = 50

// Activities reads the activity of the given schemas (those with all
// required tables) on up to workers connections at once, in the order given.
func (s *Store) Activities(ctx context.Context, schemas []SchemaInfo, workers int) ([]TenantActivity, error) {
	var readable []SchemaInfo
	for _, sc := range schemas {
		if len(sc.MissingTables) == 0 {
			readable = append(readable, sc)
		}
	}
	out := make([]TenantActivity, len(readable))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     = make(chan int)
	)
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := range next {
				end := min(start+ActivityBatch, len(readable))
				if err := s.ReadActivities(ctx, readable[start:end], out[start:end]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for start := 0; start < len(readable); start += ActivityBatch {
		select {
		case next <- start:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return nil, fmt.Errorf("read tenant activity: %w", pgerr.Kind(firstErr))
	}
	return out, nil
}

// ReadActivities reads the activity of a batch of schemas (each with every
// required table) into out (as long as batch) in one round trip on one
// connection: every tenant's activity query is sent in pipeline mode
// followed by its own Sync, and the results (in binary format) are read back
// in order. A schema that vanished meanwhile is reported Gone, one that could
// not be read in time Unreadable; any other failure is returned.
func (s *Store) ReadActivities(ctx context.Context, batch []SchemaInfo, out []TenantActivity) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	p := conn.Conn().PgConn().StartPipeline(ctx)
	binary := []int16{1}
	for _, sc := range batch {
		p.SendQueryParams(activityQuery(sc.ID, sc.HasCraft), nil, nil, nil, binary)
		p.SendPipelineSync()
	}
	if err := p.Flush(); err != nil {
		p.Close()
		return err
	}
	var firstErr error
	for i, sc := range batch {
		a, gone, err := readPipelined(p)
		switch {
		case isLockTimeout(err) || isStatementTimeout(err):
			// One tenant that cannot be read in time never stops the pass.
			out[i] = TenantActivity{ID: sc.ID, Unreadable: "could not be read in time: " + err.Error()}
		case err != nil && firstErr == nil:
			firstErr = err
		case gone:
			out[i] = TenantActivity{ID: sc.ID, Gone: true}
		default:
			out[i] = TenantActivity{ID: sc.ID, Activity: a}
		}
	}
	if err := p.Close(); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// readPipelined reads one activity result and its Sync from the pipeline.
func readPipelined(p *pgconn.Pipeline) (Activity, bool, error) {
	var (
		a    Activity
		gone bool
	)
	res, err := p.GetResults()
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) { // the statement failed before running (e.g. its schema is gone)
		if _, serr := p.GetResults(); serr != nil { // its Sync
			return a, false, serr
		}
		if isGone(err) {
			return a, true, nil
		}
		return a, false, err
	}
	if err != nil {
		return a, false, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return a, false, fmt.Errorf("pipeline: unexpected %T", res)
	}
	result := rr.Read()
	switch {
	case isGone(result.Err):
		gone = true
	case result.Err != nil:
		err = result.Err
	case len(result.Rows) != 1 || len(result.Rows[0]) != 4:
		err = fmt.Errorf("activity query returned %d rows", len(result.Rows))
	default:
		row := result.Rows[0]
		a.LastQuery, a.LastCraft = binaryTimestamptz(row[0]), binaryTimestamptz(row[1])
		a.Documents, a.Users = binaryInt8(row[2]), binaryInt8(row[3])
	}
	if _, serr := p.GetResults(); serr != nil && err == nil { // the statement's Sync
		err = serr
	}
	return a, gone, err
}

// pgEpochUnix is where PostgreSQL's binary timestamps count from (2000),
// in seconds since 1970.
const pgEpochUnix = 946684800

// binaryTimestamptz decodes a binary timestamptz (microseconds since 2000);
// NULL is the zero time. Exact over PostgreSQL's whole range (seconds and
// microseconds apart: neither a time.Duration nor microseconds since 1970
// hold it); 'infinity' (the largest int64) is after every finite time,
// '-infinity' before, so that neither makes an active tenant look inactive.
func binaryTimestamptz(b []byte) time.Time {
	if len(b) != 8 {
		return time.Time{}
	}
	us := int64(binary.BigEndian.Uint64(b))
	return time.Unix(pgEpochUnix+us/1_000_000, us%1_000_000*1000).UTC()
}

// binaryInt8 decodes a binary bigint; NULL is 0.
func binaryInt8(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// TenantsWithPublicRows lists the valid tenant ids that have rows in the
// shared public tables (including those whose schema is gone).
func (s *Store) TenantsWithPublicRows(ctx context.Context) ([]tenant.ID, error) {
	var ids []tenant.ID
	err := s.EachTenantWithPublicRows(ctx, func(id tenant.ID) { ids = append(ids, id) })
	return ids, err
}

// EachTenantWithPublicRows calls fn with each valid tenant id that has rows
// in the shared public tables (including those whose schema is gone), as the
// rows arrive: the list is never held.
func (s *Store) EachTenantWithPublicRows(ctx context.Context, fn func(tenant.ID)) error {
	rows, err := s.pool.Query(ctx, query("public_rows", ""))
	if err != nil {
		return fmt.Errorf("list public rows: %w", pgerr.Kind(err))
	}
	var name string
	_, err = pgx.ForEachRow(rows, []any{&name}, func() error {
		if id, err := tenant.ParseID(name); err == nil {
			fn(id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list public rows: %w", pgerr.Kind(err))
	}
	return nil
}

// Placements reads public.tenant_shard (on the catalog): the shard each
// tenant with a row is placed on. Rows whose tenant id is not valid are
// left out.
func (s *Store) Placements(ctx context.Context) (map[tenant.ID]string, error) {
	return s.placements(ctx, "")
}

// PlacementsOf reads the public.tenant_shard rows (on the catalog) of the
// given tenants: the shard each one with a row is placed on.
func (s *Store) PlacementsOf(ctx context.Context, ids []tenant.ID) (map[tenant.ID]string, error) {
	if len(ids) == 0 {
		return map[tenant.ID]string{}, nil
	}
	return s.placements(ctx, " WHERE tenant_id = ANY($1::text[])", idStrings(ids))
}

// placements reads the public.tenant_shard rows that where (with args)
// selects, by valid tenant id.
func (s *Store) placements(ctx context.Context, where string, args ...any) (map[tenant.ID]string, error) {
	rows, err := s.pool.Query(ctx, "SELECT tenant_id, shard_name FROM public.tenant_shard"+where, args...)
	if err != nil {
		return nil, fmt.Errorf("read public.tenant_shard: %w", pgerr.Kind(err))
	}
	out := map[tenant.ID]string{}
	var id, shard string
	_, err = pgx.ForEachRow(rows, []any{&id, &shard}, func() error {
		if tid, err := tenant.ParseID(id); err == nil {
			out[tid] = shard
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read public.tenant_shard: %w", pgerr.Kind(err))
	}
	return out, nil
}

// RecordsOf reads the records of the given tenants (tenant_cleanup.progress;
// none when the table does not exist), by tenant id.
func (s *Store) RecordsOf(ctx context.Context, ids []tenant.ID) (map[tenant.ID]Record, error) {
	out := make(map[tenant.ID]Record)
	if len(ids) == 0 {
		return out, nil
	}
	recs, err := readRecords(ctx, s.pool, " WHERE tenant_id = ANY($1::text[])", idStrings(ids))
	if err != nil {
		return nil, fmt.Errorf("data plane: read tenant_cleanup.progress: %w", pgerr.Kind(err))
	}
	for _, rec := range recs {
		if id, err := tenant.ParseID(rec.ID); err == nil {
			out[id] = rec.Record
		}
	}
	return out, nil
}

func idStrings(ids []tenant.ID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}
