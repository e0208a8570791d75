package dataplane

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// What tenantctl sweep reads of the data plane: whether a tenant still
// lives here (a sweep never touches one that does) and the large objects
// the cleaner listed and did not unlink.

// Presence is what the data plane still holds of a tenant.
type Presence struct {
	Footprint
	// DropUnderway: this pipeline's drop of it renamed its schema, and the
	// renamed schema is still there.
	DropUnderway bool
	// ListedLargeObjects counts the large objects its drop listed and that
	// are not unlinked yet (tenant_cleanup.large_objects).
	ListedLargeObjects int64
}

// Presence reads the tenant's schema, its public rows, this pipeline's
// record of it, whether its drop is under way and its listed large objects,
// without locking anything.
func (s *Store) Presence(ctx context.Context, id tenant.ID) (Presence, error) {
	var p Presence
	fp, err := s.Footprint(ctx, id)
	if err != nil {
		return p, err
	}
	p.Footprint = fp
	if q := fp.Record.Quarantine(); q != "" {
		err = s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)", q).Scan(&p.DropUnderway)
	}
	if err == nil {
		err = s.pool.QueryRow(ctx, "SELECT count(*) FROM tenant_cleanup.large_objects WHERE tenant_id = $1", string(id)).
			Scan(&p.ListedLargeObjects)
		if noTable(err) {
			err = nil
		}
	}
	if err != nil {
		return Presence{}, fmt.Errorf("data plane: look up %s: %w", id, pgerr.Kind(err))
	}
	return p, nil
}

// ListedLargeObjects counts, per tenant id as stored, the large objects
// listed by drops and not unlinked yet (empty when the pipeline never
// created its tables here).
func (s *Store) ListedLargeObjects(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	rows, err := s.pool.Query(ctx, "SELECT tenant_id, count(*) FROM tenant_cleanup.large_objects GROUP BY tenant_id")
	if err == nil {
		var (
			id string
			n  int64
		)
		_, err = pgx.ForEachRow(rows, []any{&id, &n}, func() error { out[id] = n; return nil })
	}
	if err != nil && !noTable(err) {
		return nil, fmt.Errorf("data plane: read tenant_cleanup.large_objects: %w", pgerr.Kind(err))
	}
	return out, nil
}

// referencesPerQuery bounds the file_content tables read by one statement.
const referencesPerQuery = 200

// UnattributedLargeObjects counts the large objects in the database that no
// schema's file_content.lobj_oid points at and no drop listed: orphans whose
// owner cannot be told any more, because the rows that named them went with
// a dropped schema (pg_largeobject keeps neither a tenant nor a path). The
// large objects are read first, so one created while this runs is not
// counted. It reads only; nothing is unlinked on its strength.
func (s *Store) UnattributedLargeObjects(ctx context.Context) (int64, error) {
	fail := func(err error) (int64, error) {
		return 0, fmt.Errorf("data plane: count unattributed large objects: %w", pgerr.Kind(err))
	}
	rows, err := s.pool.Query(ctx, "SELECT oid::bigint FROM pg_catalog.pg_largeobject_metadata")
	if err != nil {
		return fail(err)
	}
	all, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fail(err)
	}
	if len(all) == 0 {
		return 0, nil
	}
	named := map[int64]bool{}
	collect := func(sql string) error {
		rows, err := s.pool.Query(ctx, sql)
		if err != nil {
			return err
		}
		var oid int64
		_, err = pgx.ForEachRow(rows, []any{&oid}, func() error { named[oid] = true; return nil })
		return err
	}
	if err := collect("SELECT lobj_oid::bigint FROM tenant_cleanup.large_objects"); err != nil && !noTable(err) {
		return fail(err)
	}
	if err := s.eachFileContent(ctx, "", nil, func(oid int64) { named[oid] = true }); err != nil {
		return fail(err)
	}
	var n int64
	for _, oid := range all {
		if !named[oid] {
			n++
		}
	}
	return n, nil
}

// eachFileContent calls f with every file_content.lobj_oid of every schema
// that has such a table (restricted to oids when given: where is a
// condition on lobj_oid with $1 the oids), referencesPerQuery tables a
// statement. A schema dropped meanwhile is skipped.
func (s *Store) eachFileContent(ctx context.Context, where string, oids []int64, f func(oid int64)) error {
	return eachFileContent(ctx, s.pool, where, oids, f)
}

// eachFileContent is Store.eachFileContent on q (the pool, or a tenant
// session's own connection, so that a worker holding one takes no other).
func eachFileContent(ctx context.Context, q rowsQuerier, where string, oids []int64, f func(oid int64)) error {
	rows, err := q.Query(ctx, `SELECT n.nspname FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
		WHERE c.relname = 'file_content' AND c.relkind IN ('r', 'p') AND a.attname = 'lobj_oid' AND NOT a.attisdropped
		ORDER BY 1`)
	if err != nil {
		return err
	}
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	var args []any
	if where != "" {
		args = append(args, oids)
	}
	for len(schemas) > 0 {
		batch := schemas[:min(referencesPerQuery, len(schemas))]
		schemas = schemas[len(batch):]
		parts := make([]string, len(batch))
		for i, sc := range batch {
			parts[i] = "SELECT lobj_oid::bigint FROM " + pgx.Identifier{sc, "file_content"}.Sanitize() + where
		}
		rows, err := q.Query(ctx, strings.Join(parts, " UNION ALL "), args...)
		if err == nil {
			var oid int64
			_, err = pgx.ForEachRow(rows, []any{&oid}, func() error { f(oid); return nil })
		}
		if err != nil && !isGone(err) {
			return err
		}
	}
	return nil
}

// ListedStillNamed returns the large objects listed for the tenant that a
// schema's file_content still names (another tenant's file, or a schema
// restored since): they must not be unlinked. It reads every file_content
// table, for the few oids listed.
func (s *Store) ListedStillNamed(ctx context.Context, id tenant.ID) ([]int64, error) {
	return listedStillNamed(ctx, s.pool, id)
}

// listedStillNamed is ListedStillNamed on q.
func listedStillNamed(ctx context.Context, q rowsQuerier, id tenant.ID) ([]int64, error) {
	fail := func(err error) ([]int64, error) {
		return nil, fmt.Errorf("data plane: check the large objects listed for %s: %w", id, pgerr.Kind(err))
	}
	rows, err := q.Query(ctx, "SELECT lobj_oid::bigint FROM tenant_cleanup.large_objects WHERE tenant_id = $1", string(id))
	if err != nil {
		if noTable(err) {
			return nil, nil
		}
		return fail(err)
	}
	listed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || len(listed) == 0 {
		if err != nil {
			return fail(err)
		}
		return nil, nil
	}
	named := map[int64]bool{}
	if err := eachFileContent(ctx, q, " WHERE lobj_oid = ANY ($1)", listed, func(oid int64) { named[oid] = true }); err != nil {
		return fail(err)
	}
	var out []int64
	for _, oid := range listed {
		if named[oid] {
			out = append(out, oid)
		}
	}
	return out, nil
}

// HasTenants reports whether the data plane holds any schema named as a
// tenant id (tenant.ParseID's pattern): a sweep against a database without any would take every tenant
// for gone.
func (s *Store) HasTenants(ctx context.Context) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname ~ '^tenant_([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|i-[0-9a-f]+|dev)$')`).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("data plane: look for tenant schemas: %w", pgerr.Kind(err))
	}
	return ok, nil
}
