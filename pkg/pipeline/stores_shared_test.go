package pipeline

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A live tenant (idB) whose file_content references the same large
// object as the dead tenant (a cloned/restored tenant copies lobj_oid values;
// large objects are database-wide, not per schema). Cleaning idA must not
// unlink a large object that another tenant still references.
func TestSharedLargeObjectOfLiveTenantSurvives(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	e.eligible(t, idA)
	e.eligible(t, idB)
	e.DBs.ExecData(t, "SELECT count(*) FROM fixture.add_files($1, 2, 'postgres')", idA)
	e.DBs.ExecData(t, "SELECT count(*) FROM fixture.add_files($1, 1, 'postgres')", idB) // creates B's tables
	// B (live) gets a file whose content is A's first large object (cloned tenant).
	b := pgx.Identifier{idB}.Sanitize()
	a := pgx.Identifier{idA}.Sanitize()
	e.DBs.ExecData(t, "INSERT INTO "+b+".file_record (file_id, bucket_name, object_key) VALUES ('shared', 'x', 'onyx-files/"+idB+"/shared')")
	e.DBs.ExecData(t, "INSERT INTO "+b+".file_content (file_id, lobj_oid) SELECT 'shared', min(lobj_oid) FROM "+a+".file_content")
	var shared int64
	if err := e.DBs.Data.QueryRow(ctx, "SELECT lobj_oid FROM "+b+".file_content WHERE file_id = 'shared'").Scan(&shared); err != nil {
		t.Fatal(err)
	}
	e.markDrainAndClean(t, idA)
	if n := e.DBs.CountData(t, "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1::oid", shared); n != 1 {
		t.Fatalf("large object %d, still referenced by live tenant %s's file_content, was unlinked by cleaning %s", shared, idB, idA)
	}
}
