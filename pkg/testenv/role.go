package testenv

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
)

var roleCounter atomic.Int64

// Role creates a role that is not a superuser (another team's, say) with a
// name of the test's own, and when the test ends drops what it owns in d's
// databases and then the role. Call it after NewDatabases.
func (d *Databases) Role(t testing.TB) string {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("tc_role_%d_%d", os.Getpid(), roleCounter.Add(1))
	quoted := pgx.Identifier{name}.Sanitize()
	if _, err := d.Data.Exec(ctx, "CREATE ROLE "+quoted+" NOSUPERUSER NOLOGIN"); err != nil {
		t.Fatalf("testenv: create role %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = d.Data.Exec(ctx, "DROP OWNED BY "+quoted+" CASCADE")
		_, _ = d.Control.Exec(ctx, "DROP OWNED BY "+quoted+" CASCADE")
		if _, err := d.Data.Exec(ctx, "DROP ROLE "+quoted); err != nil {
			t.Errorf("testenv: drop role %s: %v", name, err)
		}
	})
	return name
}
