package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantcleanup/tenant-cleanup/internal/pgerr"
	"github.com/tenantcleanup/tenant-cleanup/internal/pgschema"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// LockMode says how LockTenant locks the tenant's row.
type LockMode string

// Lock modes. NoKeyUpdate (the marker) keeps the status from changing and
// holds from being placed (tenantctl hold share-locks the row) while the
// tenant is marked, without blocking rows that merely reference it. Update
// (the cleaner) also lets the transaction delete the row.
const (
	NoKeyUpdate LockMode = "FOR NO KEY UPDATE"
	Update      LockMode = "FOR UPDATE"
)

// dependentTables reference public.tenant and are deleted first, in this
// order; public.tenant goes last.
var dependentTables = []string{"tenant_notification", "tenant_config", "subscription"}

// RowLock is a control-plane transaction holding one tenant's row lock:
// what was read through it (the status, the hold) cannot change until the
// transaction ends, and nobody can place a hold meanwhile.
type RowLock struct {
	tx     pgx.Tx
	Record Record
	// Found is false when the tenant has no control-plane row.
	Found bool
	// Hold is the tenant's hold in force, read under the lock; nil if none.
	Hold *tenant.Hold
}

// LockTenant opens a transaction (constraints checked at once, not at
// commit), locks the tenant's row, and reads it and its hold in force at
// now. The caller ends it with Release or Finish. A row locked by someone
// else for longer than lockTimeout is a tenant.ErrLater error.
func (s *Store) LockTenant(ctx context.Context, id tenant.ID, mode LockMode, lockTimeout time.Duration, now time.Time) (*RowLock, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: fmt.Sprintf(
		"BEGIN; SET LOCAL lock_timeout = %d; SET CONSTRAINTS ALL IMMEDIATE", lockTimeout.Milliseconds())})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", pgerr.Kind(err))
	}
	l := &RowLock{tx: tx}
	l.Record, l.Found, err = readTenant(ctx, tx, id, mode)
	if err == nil {
		var h tenant.Hold
		var held bool
		h, held, err = readHold(ctx, tx, id)
		if held && h.Active(now) {
			l.Hold = &h
		}
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		if isLockTimeout(err) {
			return nil, tenant.Later(15*time.Second, "control-plane tenant row is locked", err)
		}
		return nil, fmt.Errorf("control plane: lock tenant %s: %w", id, pgerr.Kind(err))
	}
	return l, nil
}

// Alive checks that the locked transaction is still open on the server
// (and resets its idle timer): a connection that died (a bastion tunnel cut,
// a failover, idle_in_transaction_session_timeout) released the row lock, so
// a hold or a status change may have come in. It is a tenant.ErrLater error.
func (l *RowLock) Alive(ctx context.Context) error {
	if _, err := l.tx.Exec(ctx, "SELECT 1"); err != nil {
		return tenant.Later(5*time.Second, "the control-plane transaction holding the tenant's row ended", err)
	}
	return nil
}

// Release ends the transaction without changes (a no-op once it ended).
func (l *RowLock) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = l.tx.Rollback(ctx)
}

// TableRows is the number of rows deleted from one control-plane table.
type TableRows struct {
	Table string
	Rows  int64
}

// PrepareDelete deletes the tenant's control-plane rows (dependent tables
// first, the tenant row last) and inserts its ledger row, in the locked
// transaction, without committing: everything the cleanup's last step needs
// is proven possible before the first irreversible step. Rows that are not
// the tenant's (of tables the pipeline does not know, a billing table say,
// or of another tenant) referencing the tenant's rows refuse the tenant,
// naming them; so do triggers of other roles the deletes would run with the
// pipeline's privileges, and a delete that fails (a trigger, a restrictive
// constraint). It returns the rows deleted per table.
func (l *RowLock) PrepareDelete(ctx context.Context, e LedgerEntry) ([]TableRows, error) {
	id := l.Record.ID
	tables := append(append([]string{}, dependentTables...), "tenant")
	guard, locked, err := l.refuseForeignReferences(ctx, tables)
	if err != nil {
		return nil, err
	}
	batch := &pgx.Batch{}
	for _, table := range tables {
		batch.Queue("DELETE FROM public."+pgx.Identifier{table}.Sanitize()+" WHERE tenant_id = $1", string(id))
	}
	results := l.tx.SendBatch(ctx, batch)
	var deleted []TableRows
	counts := map[string]int64{}
	for _, table := range tables {
		tag, err := results.Exec()
		if err != nil {
			_ = results.Close()
			return nil, deleteError(id, "delete its "+table+" rows", err)
		}
		deleted = append(deleted, TableRows{Table: table, Rows: tag.RowsAffected()})
		counts[table] = tag.RowsAffected()
	}
	if err := results.Close(); err != nil {
		return nil, deleteError(id, "delete its rows", err)
	}
	for _, table := range tables {
		if counts[table] > locked[table] { // not looked at by the foreign-key check
			return nil, tenant.Later(time.Second, "control plane: rows of the tenant appeared in "+table+" while they were being deleted", nil)
		}
	}
	if changed, err := guard.Changed(ctx, l.tx); err != nil {
		return nil, fmt.Errorf("control plane: %w", pgerr.Kind(err))
	} else if changed != "" {
		return nil, tenant.Refuse(id, "a trigger that ran when the tenant's control-plane rows were deleted changed the session: %s; "+
			"nothing was deleted: review the triggers of %s and tenant, then request the tenant again",
			tenant.CleanText(changed, 300), strings.Join(dependentTables, ", "))
	}
	// A trigger or rule may keep a row it was asked to delete (a soft
	// delete): the tenant is then not deleted, and must not be recorded so.
	var kept int64
	if err := l.tx.QueryRow(ctx, query("rows_left"), string(id)).Scan(&kept); err != nil {
		return nil, deleteError(id, "count its rows", err)
	}
	if kept > 0 {
		return nil, tenant.Refuse(id, "the control plane kept %d of the tenant's rows it was asked to delete (a trigger or rule "+
			"on %s or tenant?); nothing was deleted", kept, strings.Join(dependentTables, ", "))
	}
	countsJSON, _ := json.Marshal(counts)
	_, err = l.tx.Exec(ctx, query("ledger_insert"), string(id), e.RequestedBy, nullTime(e.MarkedAt),
		e.DocumentsAtMarking, e.UsersAtMarking, nullTime(e.LastActivityAt), nullTime(l.Record.CreatedAt), l.Record.Status,
		l.Record.StripeCustomerID, e.SchemaExisted, e.RelationsDropped, e.PublicRowsDeleted, string(countsJSON), e.CleanedBy,
		nullTime(e.DropStartedAt), nullTime(e.SchemaDroppedAt), nullTime(e.PublicRowsDeletedAt), e.Evidence)
	if err != nil {
		return nil, deleteError(id, "write its ledger row", err)
	}
	return deleted, nil
}

// Finish completes the ledger row with the data-plane facts of e and commits
// the transaction: the tenant's control-plane rows are gone and its ledger
// row written, at once.
func (l *RowLock) Finish(ctx context.Context, e LedgerEntry) error {
	defer l.Release() // no-op after a commit
	id := l.Record.ID
	stores := e.StoresRemoved
	if stores == nil {
		stores = map[string]int64{}
	}
	_, err := l.tx.Exec(ctx, query("ledger_finish"), string(id), nullTime(e.LastActivityAt), e.SchemaExisted,
		e.RelationsDropped, e.PublicRowsDeleted, nullTime(e.DropStartedAt), nullTime(e.SchemaDroppedAt),
		nullTime(e.PublicRowsDeletedAt), e.Evidence, stores)
	if err != nil {
		return fmt.Errorf("control plane: complete the ledger row of %s: %w", id, pgerr.Kind(err))
	}
	if err := l.tx.Commit(ctx); err != nil {
		return fmt.Errorf("control plane: commit the cleanup of %s: %w", id, pgerr.Kind(err))
	}
	return nil
}

// refuseForeignReferences readies the transaction for deleting the tenant's
// rows from tables: it refuses the tenant when the deletes would run code of
// another role (a trigger) with the pipeline's privileges, or when rows that
// are not the tenant's reference the rows they delete. The tables are locked
// against new triggers and the rows FOR UPDATE against new references first
// (see pgschema.CheckCode and LockRows), so neither can change before the
// deletes; a lock held longer than the transaction's lock_timeout is
// "later". It returns the guard to check after the deletes and the rows it
// locked per table.
func (l *RowLock) refuseForeignReferences(ctx context.Context, tables []string) (*pgschema.Guard, map[string]int64, error) {
	id := l.Record.ID
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = pgx.Identifier{"public", t}.Sanitize()
	}
	guard, err := pgschema.CheckCode(ctx, l.tx, pgschema.DML{Delete: names})
	if err != nil {
		return nil, nil, lockError(id, err)
	}
	if len(guard.Untrusted) > 0 {
		return nil, nil, tenant.Refuse(id, "deleting the tenant's control-plane rows would run %s: %s",
			tenant.CleanText(strings.Join(guard.Untrusted, ", "), 1000), pgschema.Advice)
	}
	locked, err := pgschema.LockRows(ctx, l.tx, tables, string(id))
	if err != nil {
		return nil, nil, lockError(id, err)
	}
	found, err := pgschema.ForeignRows(ctx, l.tx, tables, string(id))
	if err != nil {
		return nil, nil, fmt.Errorf("control plane: %w", pgerr.Kind(err))
	}
	if len(found) > 0 {
		return nil, nil, tenant.Refuse(id, "control-plane rows that are not the tenant's (of tables this pipeline does not know, "+
			"or of other tenants) reference the tenant: %s; it deletes only the tenant's rows of %s and tenant: review those rows, "+
			"then request the tenant again", tenant.CleanText(strings.Join(found, ", "), 1000), strings.Join(dependentTables, ", "))
	}
	return guard, locked, nil
}

// lockError is a failure to lock the tenant's rows or tables: "later" when
// someone held a lock for longer than lock_timeout.
func lockError(id tenant.ID, err error) error {
	if isLockTimeout(err) {
		return tenant.Later(15*time.Second, "control plane: the rows or tables of "+string(id)+" are locked by someone else", err)
	}
	return fmt.Errorf("control plane: %w", pgerr.Kind(err))
}

// deleteError classifies a failed control-plane delete: a lock held by
// someone else is "later"; a statement the database rejects (a trigger, a
// constraint, a ledger that does not take the row) refuses the tenant with
// the database's words, before anything irreversible; anything else (a lost
// connection) is returned as it is.
func deleteError(id tenant.ID, what string, err error) error {
	var pgErr *pgconn.PgError
	switch {
	case isLockTimeout(err):
		return tenant.Later(15*time.Second, "control plane: "+what+": a lock is held", err)
	case errors.As(err, &pgErr) && !strings.HasPrefix(pgErr.Code, "08") && !strings.HasPrefix(pgErr.Code, "57") &&
		!strings.HasPrefix(pgErr.Code, "53") && pgErr.Code != "40001" && pgErr.Code != "40P01":
		return tenant.Refuse(id, "the control plane rejects the cleanup (%s: %s, SQLSTATE %s); nothing was deleted",
			what, pgErr.Message, pgErr.Code)
	}
	return fmt.Errorf("control plane: %s of %s: %w", what, id, pgerr.Kind(err))
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
