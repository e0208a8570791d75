package dataplane

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// SchemaInfo is one tenant schema found on the data plane.
type SchemaInfo struct {
	ID       tenant.ID
	HasCraft bool
	// MissingTables lists required tables the schema lacks; such a schema's
	// activity is not read and the tenant is never eligible.
	MissingTables []string
}

// ListTenantSchemas lists the schemas whose names are valid tenant ids.
// Schemas that start like a tenant but are not valid ids are returned in
// skipped and never touched.
func (s *Store) ListTenantSchemas(ctx context.Context) (schemas []SchemaInfo, skipped []string, err error) {
	rows, err := s.pool.Query(ctx, query("list_schemas", ""))
	if err != nil {
		return nil, nil, fmt.Errorf("list tenant schemas: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var tables []string
		if err := rows.Scan(&name, &tables); err != nil {
			return nil, nil, fmt.Errorf("list tenant schemas: %w", err)
		}
		id, err := tenant.ParseID(name)
		if err != nil {
			skipped = append(skipped, name)
			continue
		}
		info := SchemaInfo{ID: id, HasCraft: slices.Contains(tables, "build_session")}
		for _, r := range requiredTables {
			if !slices.Contains(tables, r) {
				info.MissingTables = append(info.MissingTables, r)
			}
		}
		schemas = append(schemas, info)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list tenant schemas: %w", err)
	}
	return schemas, skipped, nil
}

// TenantActivity is the result of reading one tenant's activity in bulk.
type TenantActivity struct {
	ID       tenant.ID
	Activity Activity
	// Gone is true when the schema disappeared while it was being read.
	Gone bool
}

// activityBatch is how many tenant schemas one statement reads. Each
// statement is its own short transaction, so no transaction ever spans more
// than this many tenants or holds their locks for longer than one read.
const activityBatch = 50

// Activities reads the activity of the given schemas (those with all
// required tables), activityBatch tenants per statement on up to workers
// connections at once, in the order given.
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
				end := min(start+activityBatch, len(readable))
				if err := s.readBatch(ctx, readable[start:end], out[start:end]); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for start := 0; start < len(readable); start += activityBatch {
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
		return nil, fmt.Errorf("read tenant activity: %w", firstErr)
	}
	return out, nil
}

// readBatch reads a batch with one UNION ALL statement; if a schema of the
// batch vanished meanwhile, it reads the batch tenant by tenant instead.
func (s *Store) readBatch(ctx context.Context, batch []SchemaInfo, out []TenantActivity) error {
	var sb strings.Builder
	args := make([]any, len(batch))
	for i, sc := range batch {
		if i > 0 {
			sb.WriteString("\nUNION ALL\n")
		}
		args[i] = string(sc.ID)
		sb.WriteString("SELECT $" + strconv.Itoa(i+1) + "::text, a.* FROM (" + activityQuery(sc.ID, sc.HasCraft) + ") a")
	}
	rows, err := s.pool.Query(ctx, sb.String(), args...)
	if err == nil {
		idx := map[tenant.ID]int{}
		for i, sc := range batch {
			idx[sc.ID] = i
		}
		err = scanActivities(rows, func(id tenant.ID, a Activity) {
			out[idx[id]] = TenantActivity{ID: id, Activity: a}
		})
	}
	if err == nil || !isGone(err) {
		return err
	}
	for i, sc := range batch {
		a, err := readActivity(ctx, s.pool, sc.ID, sc.HasCraft)
		switch {
		case isGone(err):
			out[i] = TenantActivity{ID: sc.ID, Gone: true}
		case err != nil:
			return err
		default:
			out[i] = TenantActivity{ID: sc.ID, Activity: a}
		}
	}
	return nil
}

func scanActivities(rows pgx.Rows, fn func(tenant.ID, Activity)) error {
	defer rows.Close()
	for rows.Next() {
		var (
			name                 string
			a                    Activity
			lastQuery, lastCraft *time.Time
		)
		if err := rows.Scan(&name, &lastQuery, &lastCraft, &a.Documents, &a.Users); err != nil {
			return err
		}
		if lastQuery != nil {
			a.LastQuery = *lastQuery
		}
		if lastCraft != nil {
			a.LastCraft = *lastCraft
		}
		fn(tenant.ID(name), a)
	}
	return rows.Err()
}

// TenantsWithPublicRows lists the valid tenant ids that have rows in the
// shared public tables (including those whose schema is gone).
func (s *Store) TenantsWithPublicRows(ctx context.Context) ([]tenant.ID, error) {
	rows, err := s.pool.Query(ctx, query("public_rows", ""))
	if err != nil {
		return nil, fmt.Errorf("list public rows: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list public rows: %w", err)
	}
	var ids []tenant.ID
	for _, n := range names {
		if id, err := tenant.ParseID(n); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
