package pacer_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/pacer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// dropLockKey stands for pkg/dataplane's drop-slot advisory lock key.
const dropLockKey = 0x7c1e0002

// TestSamplerReadsWhatItsRoleMay samples a database as a role without
// pg_monitor, then with it: everything but the other sessions is read
// without it, rates from the second sample on; no replica means no lag to
// judge (not an error); drops in flight are counted from their advisory
// locks.
func TestSamplerReadsWhatItsRoleMay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := testenv.CloneDatabase(t, "template0")
	admin := testenv.Pool(t, dbURL)
	role := fmt.Sprintf("tc_pacer_%d", os.Getpid())
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	u, _ := url.Parse(dbURL)
	u.User = url.User(role)
	cfg := pacer.DefaultConfig()
	const own = "tenant-cleanup-cleaner-test"
	s := pacer.NewSampler(testenv.Pool(t, u.String()), cfg, pacer.SamplerOptions{DropLockKey: dropLockKey, OwnApplicationName: own})

	first := s.Sample(ctx)
	if !first.Read.Has(pacer.SignalProbe) || first.Probe <= 0 || first.Read.Has(pacer.SignalWALRate) || first.Read.Has(pacer.SignalCheckpoints) {
		t.Fatalf("first sample (a probe, no rate yet): %+v", first)
	}
	second := s.Sample(ctx)
	for _, sig := range []pacer.Signal{pacer.SignalProbe, pacer.SignalWALRate, pacer.SignalCheckpoints, pacer.SignalBackendWrites} {
		if !second.Read.Has(sig) {
			t.Errorf("%s not read: %+v", sig, second)
		}
	}
	if why := second.Unread[pacer.SignalActiveBackends]; second.Read.Has(pacer.SignalActiveBackends) || !strings.Contains(why, "needs pg_monitor") {
		t.Errorf("active sessions without pg_monitor: read %v, unread %q", second.Read.Has(pacer.SignalActiveBackends), why)
	}
	if _, unread := second.Unread[pacer.SignalReplicationLag]; unread || second.Read.Has(pacer.SignalReplicationLag) || second.Replicas != 0 {
		t.Errorf("no replica: %+v", second)
	}
	if second.DropsInFlight != 0 {
		t.Errorf("drops in flight %d, want 0", second.DropsInFlight)
	}

	// A drop of another replica holds a slot.
	tx, err := admin.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 1)", int32(dropLockKey)); err != nil {
		t.Fatal(err)
	}
	if got := s.Sample(ctx); got.DropsInFlight != 1 || got.OwnDrops != 0 {
		t.Errorf("drops in flight %d, own %d while another replica holds a slot, want 1 and 0", got.DropsInFlight, got.OwnDrops)
	}
	// A drop of this replica (its sessions' application_name, another role
	// than the sampler's: application_name is visible to every role).
	ownURL, _ := url.Parse(dbURL)
	q := ownURL.Query()
	q.Set("application_name", own)
	ownURL.RawQuery = q.Encode()
	ownTx, err := testenv.Pool(t, ownURL.String()).Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ownTx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, 0)", int32(dropLockKey)); err != nil {
		t.Fatal(err)
	}
	if got := s.Sample(ctx); got.DropsInFlight != 2 || got.OwnDrops != 1 {
		t.Errorf("drops in flight %d, own %d with one of each, want 2 and 1", got.DropsInFlight, got.OwnDrops)
	}
	_ = ownTx.Rollback(ctx)
	_ = tx.Rollback(ctx)

	if _, err := admin.Exec(ctx, "GRANT pg_monitor TO "+role); err != nil {
		t.Fatal(err)
	}
	if third := s.Sample(ctx); !third.Read.Has(pacer.SignalActiveBackends) {
		t.Errorf("active sessions with pg_monitor not read: %q", third.Unread[pacer.SignalActiveBackends])
	}
}
