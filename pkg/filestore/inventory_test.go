package filestore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Folders lists the folder names under the root, whatever they are (the
// caller validates them), in pages; objects not in a folder are not listed.
func TestFolders(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	seed(srv, cleaned, 3)
	seed(srv, longer, 1)
	srv.Put(bucket, "onyx-files/tenant_i-ab", []byte("not a folder"))
	srv.Put(bucket, "onyx-files/not a tenant [*]/x", []byte("x"))
	srv.Put(bucket, "other-prefix/tenant_i-ab/x", []byte("x"))
	got, err := s.Folders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"not a tenant [*]", "tenant_i-abc", "tenant_i-abc2"}; !slices.Equal(got, want) {
		t.Fatalf("folders %q, want %q", got, want)
	}
}

// A key under the tenant's prefix whose path climbs out of it ("..") is
// never deleted, nor anything listed with it: a server that maps keys to
// files could resolve it into another tenant's folder. The error is not
// "unavailable": waiting does not fix it, a human does.
func TestRemoveTenantRefusesDotSegments(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"onyx-files/tenant_i-abc/../tenant_i-abc2/report.pdf", "onyx-files/tenant_i-abc/./x", "onyx-files/tenant_i-abc/a/.."} {
		srv, s := setup(t)
		seed(srv, cleaned, 2)
		seed(srv, longer, 2)
		srv.Put(bucket, key, []byte("x"))
		before := srv.Keys(bucket, "")
		_, err := s.RemoveTenant(context.Background(), cleaned, nil)
		if err == nil || errors.Is(err, tenant.ErrUnavailable) || !strings.Contains(err.Error(), "'..' segment") {
			t.Fatalf("%s: error %v", key, err)
		}
		if after := srv.Keys(bucket, ""); !slices.Equal(before, after) {
			t.Fatalf("%s: deleted %q", key, without(before, after))
		}
	}
}
