package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// cancelAfterRemoval is the real S3 store, with the handler's context
// cancelled as its removal ends: the shutdown grace (bus/consume.go: the
// work context is cancelled ShutdownGrace after SIGTERM) running out while
// a long removal's last DeleteObjects is in flight.
type cancelAfterRemoval struct {
	FileStore
	cancel context.CancelFunc
	fired  bool
}

func (c *cancelAfterRemoval) RemoveTenant(ctx context.Context, id tenant.ID, keys []string) (filestore.Removed, error) {
	r, err := c.FileStore.RemoveTenant(ctx, id, keys)
	if !c.fired {
		c.fired = true
		c.cancel()
		return r, fmt.Errorf("remove %s from S3: %w", id, ctx.Err())
	}
	return r, err
}

// The ledger's stores_removed is true after retries: objects
// deleted by an attempt whose context is cancelled (shutdown grace over)
// are counted (RecordRemoved does not run on the cancelled context),
// although the redelivery finds
// nothing left to count.
func TestS3CountKeptWhenAttemptIsCancelled(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.withStores(t)
	e.eligible(t, idA)
	e.seedStores(t, idA, 10)
	if err := e.mark(t, idA); err != nil {
		t.Fatal(err)
	}
	e.drain(t, idA)
	hctx, cancel := context.WithCancel(ctx)
	wrapped := &cancelAfterRemoval{FileStore: e.cleaner.Files, cancel: cancel}
	e.cleaner.Files = wrapped
	body, _ := json.Marshal(tenant.DrainCheck{ID: idA})
	d := bus.Delivery{Subject: bus.DrainSubject(idA), Data: body}
	out, err := e.cleaner.Handle(hctx, d)
	if err == nil {
		t.Fatal("the cancelled attempt reported success")
	}
	_ = e.Bus.Perform(ctx, d, out, err)
	if err := e.check(t, tenant.DrainCheck{ID: idA}); err != nil {
		t.Fatal(err)
	}
	e.AssertCleaned(idA)
	entry, _, err := e.cleaner.Control.LedgerEntry(ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	if entry.StoresRemoved["s3_objects"] != 10 {
		t.Fatalf("10 S3 objects were deleted, the ledger says stores_removed=%v", entry.StoresRemoved)
	}
}
