package analyzer

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/dataplane"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// TestCandidateSpoolSortsRunsOnDisk: a pass's candidates beyond what the
// spool holds in memory go to sorted runs in an unlinked file; merged, they
// come back whole, most documents first then by id, as Candidates orders
// them, and nothing is left in the directory.
func TestCandidateSpoolSortsRunsOnDisk(t *testing.T) {
	dir := t.TempDir()
	s := newCandidateSpool(dir)
	defer s.close()
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)
	var want []csvRow
	for i := range 5*spoolRun + 17 {
		t := Tenant{ID: tenant.ID(fmt.Sprintf("tenant_i-%04x", (i*7919)%(1<<16))), Shards: []string{"default", "b"}[:1+i%2],
			Activity: dataplane.Activity{Documents: rng.Int64N(20), Users: int64(i)}}
		if i%3 != 0 {
			t.Activity.LastQuery = at.Add(-time.Duration(i) * time.Hour)
		}
		want = append(want, rowOf(t))
		if err := s.add(t); err != nil {
			panic(err)
		}
	}
	if len(s.ends) != 5 {
		t.Fatalf("%d runs on disk; want 5", len(s.ends))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the spool left %d entries in its directory", len(entries))
	}
	slices.SortFunc(want, rowOrder)
	var got []csvRow
	if err := s.each(func(r csvRow) bool { got = append(got, r); return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows back; want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.id != w.id || g.documents != w.documents || g.users != w.users || g.shards != w.shards || !g.last.Equal(w.last) {
			t.Fatalf("row %d: %+v; want %+v", i, g, w)
		}
	}
}

// TestFailedCSVLeavesNoReport: when the CSV cannot be written whole (the
// spool cannot be read back, a disk full), the pass fails and no report is
// left under the report's name: a truncated CSV is never taken for the
// candidates of a pass.
func TestFailedCSVLeavesNoReport(t *testing.T) {
	dir := t.TempDir()
	s := newCandidateSpool(dir)
	defer s.close()
	for i := range 3 * spoolRun {
		if err := s.add(Tenant{ID: tenant.ID(fmt.Sprintf("tenant_i-%04x", i)), Activity: dataplane.Activity{Documents: int64(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	s.file.Close() // reading the runs back fails
	r := &Report{At: time.Now(), InactiveDays: 90, spool: s}
	path, err := WriteCSVIn(dir, 90, r)
	if err == nil {
		t.Fatal("the CSV was written from a spool that cannot be read")
	}
	if _, serr := os.Lstat(path); !errors.Is(serr, fs.ErrNotExist) {
		t.Fatalf("a report is left at %s after %v (stat: %v)", path, err, serr)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the report directory holds %d entries after a failed CSV", len(entries))
	}
}
