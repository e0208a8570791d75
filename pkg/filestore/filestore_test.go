package filestore_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/filestore"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

const bucket = "onyx-file-store-bucket"

// The cleaned tenant, and paying tenants whose ids share a prefix with it.
const (
	cleaned = tenant.ID("tenant_i-abc")
	longer  = tenant.ID("tenant_i-abc2") // cleaned's id is a prefix of it
	shorter = tenant.ID("tenant_i-ab")   // a prefix of cleaned's id
)

// setup starts an S3 server holding the bucket and opens a store on it,
// configured as in production but for the test's endpoint and bounds.
func setup(t *testing.T, mods ...func(*filestore.Config)) (*testenv.S3, *filestore.Store) {
	t.Helper()
	srv := testenv.StartS3(t, bucket)
	cfg := filestore.Config{
		Bucket:          bucket,
		Prefix:          "onyx-files",
		EndpointURL:     srv.URL,
		AccessKeyID:     testenv.S3AccessKey,
		SecretAccessKey: testenv.S3SecretKey,
		Region:          "us-east-1",
		Timeout:         10 * time.Second,
		MaxAttempts:     1,
	}
	for _, m := range mods {
		m(&cfg)
	}
	s, err := filestore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, s
}

// seed puts n objects under the tenant's prefix and returns their total size.
func seed(srv *testenv.S3, id tenant.ID, n int) int64 {
	var total int64
	for i := range n {
		body := []byte(strings.Repeat("x", i%97))
		srv.Put(bucket, fmt.Sprintf("onyx-files/%s/file-%05d.pdf", id, i), body)
		total += int64(len(body))
	}
	return total
}

func without(all, gone []string) []string {
	var out []string
	for _, k := range all {
		if !slices.Contains(gone, k) {
			out = append(out, k)
		}
	}
	return out
}

func TestRemoveTenantDeletesOnlyItsPrefix(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	mine := []string{
		"onyx-files/tenant_i-abc/",                   // a "folder" object
		"onyx-files/tenant_i-abc/report.pdf",         //
		"onyx-files/tenant_i-abc/chat/image [1].png", // glob-like characters in a key
	}
	others := []string{
		"onyx-files/tenant_i-abc2/report.pdf", // paying tenant, longer id
		"onyx-files/tenant_i-ab/report.pdf",   // paying tenant, shorter id
		"onyx-files/tenant_i-abc",             // no trailing slash: not under the prefix
		"onyx-files/tenant_i-abc.bak/x",       //
		"onyx-files/tenant_i-abc2/tenant_i-abc/y",
		"other-prefix/tenant_i-abc/report.pdf", // same tenant, another prefix
		"tenant_i-abc/report.pdf",              // same tenant, no prefix
	}
	for i, k := range append(slices.Clone(mine), others...) {
		srv.Put(bucket, k, []byte(strings.Repeat("y", i+1)))
	}
	before := srv.Keys(bucket, "")

	r, err := s.RemoveTenant(context.Background(), cleaned, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Objects != 3 || r.Bytes != 1+2+3 {
		t.Errorf("removed %d objects, %d bytes; want 3, 6", r.Objects, r.Bytes)
	}
	if got, want := srv.Keys(bucket, ""), without(before, mine); !slices.Equal(got, want) {
		t.Errorf("left in the bucket:\n%q\nwant:\n%q", got, want)
	}
	for id, want := range map[tenant.ID]int64{cleaned: 0, longer: 2, shorter: 1} {
		if n, err := s.Leftovers(context.Background(), id); err != nil || n != want {
			t.Errorf("Leftovers(%s) = %d, %v; want %d", id, n, err, want)
		}
	}
}

func TestRemoveTenantThousandsOfObjects(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	const n = 2500 // three delete requests of at most 1,000 keys
	size := seed(srv, cleaned, n)
	seed(srv, longer, 10)
	if left, err := s.Leftovers(context.Background(), cleaned); err != nil || left != n {
		t.Fatalf("Leftovers before = %d, %v; want %d", left, err, n)
	}

	start := time.Now()
	r, err := s.RemoveTenant(context.Background(), cleaned, nil)
	t.Logf("removed %d objects (%d bytes) in %s, %d delete requests", r.Objects, r.Bytes, time.Since(start), srv.Deletes())
	if err != nil {
		t.Fatal(err)
	}
	if r.Objects != n || r.Bytes != size {
		t.Errorf("removed %d objects, %d bytes; want %d, %d", r.Objects, r.Bytes, n, size)
	}
	if d := srv.Deletes(); d != 3 {
		t.Errorf("%d delete requests; want 3 (1,000 keys each at most)", d)
	}
	if left := srv.Keys(bucket, "onyx-files/tenant_i-abc/"); len(left) != 0 {
		t.Errorf("%d objects left, e.g. %s", len(left), left[0])
	}
	if left := srv.Keys(bucket, "onyx-files/tenant_i-abc2/"); len(left) != 10 {
		t.Errorf("the paying tenant has %d objects left; want 10", len(left))
	}
}

func TestRemoveTenantCrossChecksFileRecords(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	srv.Put(bucket, "onyx-files/tenant_i-abc/a.pdf", []byte("aaaa"))
	srv.Put(bucket, "onyx-files/tenant_i-abc/b.pdf", []byte("bb"))
	srv.Put(bucket, "onyx-files/tenant_i-abc/unrecorded.pdf", []byte("c"))
	srv.Put(bucket, "onyx-files/tenant_i-abc2/shared.pdf", []byte("paying"))
	srv.Put(bucket, "legacy/tenant_i-abc/old.pdf", []byte("legacy"))
	records := []string{
		"onyx-files/tenant_i-abc/a.pdf",
		"onyx-files/tenant_i-abc/b.pdf",
		"onyx-files/tenant_i-abc/never-uploaded.pdf",
		"onyx-files/tenant_i-abc2/shared.pdf", // another tenant's folder: never deleted
		"legacy/tenant_i-abc/old.pdf",         // outside the prefix: reported, kept
		"legacy/gone.pdf",
		"legacy/tenant_i-abc/old.pdf",
	}

	r, err := s.RemoveTenant(context.Background(), cleaned, records)
	if err != nil {
		t.Fatal(err)
	}
	wantOutside := []string{"legacy/gone.pdf", "legacy/tenant_i-abc/old.pdf", "onyx-files/tenant_i-abc2/shared.pdf"}
	if r.Objects != 3 || r.Bytes != 7 || r.Unlisted != 1 || r.OutsidePresent != 2 || !slices.Equal(r.Outside, wantOutside) {
		t.Errorf("removed %+v; want 3 objects, 7 bytes, 1 unlisted, outside %q of which 2 present", r, wantOutside)
	}
	if got := srv.Keys(bucket, ""); !slices.Equal(got, []string{"legacy/tenant_i-abc/old.pdf", "onyx-files/tenant_i-abc2/shared.pdf"}) {
		t.Errorf("left in the bucket: %q", got)
	}
}

func TestRemoveTenantTwice(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	seed(srv, cleaned, 5)
	records := []string{"onyx-files/tenant_i-abc/file-00000.pdf"}
	if _, err := s.RemoveTenant(context.Background(), cleaned, records); err != nil {
		t.Fatal(err)
	}
	r, err := s.RemoveTenant(context.Background(), cleaned, records)
	if err != nil {
		t.Fatal(err)
	}
	if r.Objects != 0 || r.Bytes != 0 || r.Unlisted != 1 {
		t.Errorf("second run removed %+v; want nothing, 1 unlisted", r)
	}
}

func TestRemoveTenantS3GoesAwayMidway(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	const n = 2500
	size := seed(srv, cleaned, n)
	filestore.SetAfterBatch(s, func(batch int) {
		if batch == 1 {
			srv.Stop()
		}
	})

	first, err := s.RemoveTenant(context.Background(), cleaned, nil)
	if !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("with the server gone: %v; want an unavailable error", err)
	}
	if first.Objects != 1000 {
		t.Errorf("first attempt says it removed %d objects; want 1000", first.Objects)
	}
	if _, err := s.Leftovers(context.Background(), cleaned); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Leftovers with the server gone: %v; want an unavailable error", err)
	}

	srv.Start()
	filestore.SetAfterBatch(s, nil)
	second, err := s.RemoveTenant(context.Background(), cleaned, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Objects+second.Objects != n || first.Bytes+second.Bytes != size {
		t.Errorf("removed %+v then %+v; want %d objects, %d bytes in all", first, second, n, size)
	}
	if left, err := s.Leftovers(context.Background(), cleaned); err != nil || left != 0 {
		t.Errorf("Leftovers = %d, %v; want 0", left, err)
	}
}

func TestRemoveTenantS3Hangs(t *testing.T) {
	t.Parallel()
	srv, s := setup(t, func(c *filestore.Config) { c.Timeout = 2 * time.Second; c.MaxAttempts = 2 })
	seed(srv, cleaned, 1500)
	filestore.SetAfterBatch(s, func(batch int) { srv.Pause() })

	start := time.Now()
	_, err := s.RemoveTenant(context.Background(), cleaned, nil)
	if !errors.Is(err, tenant.ErrUnavailable) {
		t.Fatalf("with the server hanging: %v; want an unavailable error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %s; want about the 2s timeout", d)
	}

	srv.Resume()
	filestore.SetAfterBatch(s, nil)
	if _, err := s.RemoveTenant(context.Background(), cleaned, nil); err != nil {
		t.Fatal(err)
	}
	if left := srv.Keys(bucket, "onyx-files/tenant_i-abc/"); len(left) != 0 {
		t.Errorf("%d objects left", len(left))
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	cfg := filestore.Config{
		Bucket: bucket, EndpointURL: testenv.ClosedURL(t), Region: "us-east-1",
		AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey,
		Timeout: 2 * time.Second, MaxAttempts: 2,
	}
	s, err := filestore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open must not reach S3: %v", err)
	}
	ctx := context.Background()
	if err := s.Ping(ctx); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Ping: %v; want an unavailable error", err)
	}
	if _, err := s.RemoveTenant(ctx, cleaned, nil); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("RemoveTenant: %v; want an unavailable error", err)
	}
	if _, err := s.Leftovers(ctx, cleaned); !errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Leftovers: %v; want an unavailable error", err)
	}
}

func TestMissingBucketSaysWhatToFix(t *testing.T) {
	t.Parallel()
	_, s := setup(t, func(c *filestore.Config) { c.Bucket = "no-such-bucket" })
	_, err := s.RemoveTenant(context.Background(), cleaned, nil)
	if err == nil || errors.Is(err, tenant.ErrUnavailable) || !strings.Contains(err.Error(), "S3_FILE_STORE_BUCKET_NAME") {
		t.Errorf("RemoveTenant on a missing bucket: %v; want a plain error naming S3_FILE_STORE_BUCKET_NAME", err)
	}
	if err := s.Ping(context.Background()); err == nil || errors.Is(err, tenant.ErrUnavailable) {
		t.Errorf("Ping on a missing bucket: %v; want a plain error", err)
	}
}

func TestRemoveTenantRefusesAnInvalidID(t *testing.T) {
	t.Parallel()
	srv, s := setup(t)
	srv.Put(bucket, "onyx-files//x", []byte("x"))
	for _, id := range []tenant.ID{"", "tenant_i-abc/..", "TENANT_I-ABC"} {
		if _, err := s.RemoveTenant(context.Background(), id, nil); !errors.Is(err, tenant.ErrInvalidID) {
			t.Errorf("RemoveTenant(%q): %v; want an invalid-id error", id, err)
		}
	}
	if got := srv.Keys(bucket, ""); len(got) != 1 {
		t.Errorf("bucket holds %q; want it untouched", got)
	}
}

// S3-compatible servers that misbehave: nothing outside the prefix is
// deleted, a server that never deletes is given up on, and each answer is
// the right kind of error.
func TestRemoveTenantWhenS3Misbehaves(t *testing.T) {
	t.Parallel()
	const (
		mine    = `<Contents><Key>onyx-files/tenant_i-abc/mine.pdf</Key><Size>1</Size></Contents>`
		foreign = `<Contents><Key>onyx-files/tenant_i-abc2/paying.pdf</Key><Size>1</Size></Contents>`
		deleted = `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></DeleteResult>`
	)
	keyError := func(code string) string {
		return `<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Error><Key>onyx-files/tenant_i-abc/mine.pdf</Key><Code>` +
			code + `</Code><Message>no</Message></Error></DeleteResult>`
	}
	for _, tc := range []struct {
		name       string
		listStatus int
		listing    string // Contents elements, or an Error document when listStatus is not 200
		deleteBody string
		kind       error  // tenant.ErrUnavailable, tenant.ErrLater, or nil for a plain error
		says       string // in the error
		deletes    int64
	}{
		{"listing ignores the prefix", 200, mine + foreign, deleted, nil, "not under it", 0},
		{"deletes nothing but says it did", 200, mine, deleted, tenant.ErrLater, "said it deleted", 3},
		{"access denied to one key", 200, mine, keyError("AccessDenied"), nil, "AccessDenied", 1},
		{"internal error on one key", 200, mine, keyError("InternalError"), tenant.ErrUnavailable, "InternalError", 1},
		{"slow down", 503, `<Error><Code>SlowDown</Code><Message>slow</Message></Error>`, "", tenant.ErrLater, "throttling", 0},
		{"access denied", 403, `<Error><Code>AccessDenied</Code><Message>no</Message></Error>`, "", nil, "s3:ListBucket", 0},
	} {
		var deletes atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/xml")
			if r.Method == http.MethodPost {
				deletes.Add(1)
				fmt.Fprint(w, tc.deleteBody)
				return
			}
			if tc.listStatus != 200 {
				w.WriteHeader(tc.listStatus)
				fmt.Fprint(w, tc.listing)
				return
			}
			fmt.Fprint(w, `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>`+
				`<IsTruncated>false</IsTruncated>`+tc.listing+`</ListBucketResult>`)
		}))
		s, err := filestore.Open(context.Background(), filestore.Config{
			Bucket: bucket, EndpointURL: srv.URL, Region: "us-east-1",
			AccessKeyID: testenv.S3AccessKey, SecretAccessKey: testenv.S3SecretKey, MaxAttempts: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.RemoveTenant(context.Background(), cleaned, nil)
		srv.Close()
		switch {
		case err == nil || !strings.Contains(err.Error(), tc.says):
			t.Errorf("%s: %v; want an error saying %q", tc.name, err, tc.says)
		case tc.kind != nil && !errors.Is(err, tc.kind):
			t.Errorf("%s: %v; want %v", tc.name, err, tc.kind)
		case tc.kind == nil && (errors.Is(err, tenant.ErrUnavailable) || errors.Is(err, tenant.ErrLater)):
			t.Errorf("%s: %v; want a plain error", tc.name, err)
		}
		if n := deletes.Load(); n != tc.deletes {
			t.Errorf("%s: %d delete requests; want %d", tc.name, n, tc.deletes)
		}
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     filestore.Config
		enabled bool
		bucket  string
		prefix  string // TenantPrefix(cleaned)
	}{
		{"unset", filestore.Config{}, false, filestore.DefaultBucket, "onyx-files/tenant_i-abc/"},
		{"bucket", filestore.Config{Bucket: "b", Prefix: "onyx-files"}, true, "b", "onyx-files/tenant_i-abc/"},
		{"backend s3", filestore.Config{Backend: "S3"}, true, filestore.DefaultBucket, "onyx-files/tenant_i-abc/"},
		{"backend postgres", filestore.Config{Backend: "postgres"}, false, filestore.DefaultBucket, "onyx-files/tenant_i-abc/"},
		{"postgres with a bucket", filestore.Config{Backend: "postgres", Bucket: "b"}, true, "b", "onyx-files/tenant_i-abc/"},
		{"slashes stripped", filestore.Config{Bucket: "b", Prefix: "/files/"}, true, "b", "files/tenant_i-abc/"},
		{"nested prefix", filestore.Config{Bucket: "b", Prefix: "a/b"}, true, "b", "a/b/tenant_i-abc/"},
	} {
		if got := tc.cfg.Enabled(); got != tc.enabled {
			t.Errorf("%s: Enabled() = %v; want %v", tc.name, got, tc.enabled)
		}
		if got := tc.cfg.BucketName(); got != tc.bucket {
			t.Errorf("%s: BucketName() = %q; want %q", tc.name, got, tc.bucket)
		}
		if got := tc.cfg.TenantPrefix(cleaned); got != tc.prefix {
			t.Errorf("%s: TenantPrefix() = %q; want %q", tc.name, got, tc.prefix)
		}
	}

	for _, tc := range []struct {
		name string
		cfg  filestore.Config
		want string
	}{
		{"not configured", filestore.Config{Region: "r"}, "S3_FILE_STORE_BUCKET_NAME"},
		{"half the credentials", filestore.Config{Bucket: "b", Region: "r", AccessKeyID: "AKIA"}, "S3_AWS_SECRET_ACCESS_KEY"},
		{"endpoint without scheme", filestore.Config{Bucket: "b", Region: "r", EndpointURL: "minio:9000"}, "S3_ENDPOINT_URL"},
		{"endpoint with credentials", filestore.Config{Bucket: "b", Region: "r", EndpointURL: "http://key:hunter2@minio:9000"}, "S3_ENDPOINT_URL"},
		{"no region", filestore.Config{Bucket: "b"}, "AWS_REGION_NAME"},
	} {
		_, err := filestore.Open(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Open: %v; want an error naming %s", tc.name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: error shows a secret: %v", tc.name, err)
		}
	}
}

// The variables are Onyx's, read through pkg/config like every other
// setting; -h never shows the secret key.
func TestConfigFromEnvironment(t *testing.T) {
	t.Setenv("FILE_STORE_BACKEND", "s3")
	t.Setenv("S3_FILE_STORE_PREFIX", "files")
	t.Setenv("S3_ENDPOINT_URL", "http://minio:9000")
	t.Setenv("S3_AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
	t.Setenv("S3_AWS_SECRET_ACCESS_KEY", "very-secret-key")
	var cfg filestore.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	want := filestore.Config{Backend: "s3", Prefix: "files", EndpointURL: "http://minio:9000",
		AccessKeyID: "AKIAEXAMPLE", SecretAccessKey: "very-secret-key", Region: "us-east-2",
		Timeout: 30 * time.Second, MaxAttempts: 3}
	if cfg != want {
		t.Errorf("loaded %+v\nwant %+v", cfg, want)
	}
	if !cfg.Enabled() || cfg.BucketName() != filestore.DefaultBucket || cfg.TenantPrefix(cleaned) != "files/tenant_i-abc/" {
		t.Errorf("Enabled %v, bucket %s, prefix %s", cfg.Enabled(), cfg.BucketName(), cfg.TenantPrefix(cleaned))
	}
	var usage strings.Builder
	config.Usage(&usage, &cfg)
	if strings.Contains(usage.String(), "very-secret-key") || !strings.Contains(usage.String(), "S3_FILE_STORE_BUCKET_NAME") {
		t.Errorf("usage shows the secret or misses a variable:\n%s", usage.String())
	}

	t.Setenv("S3_MAX_ATTEMPTS", "0")
	if err := config.Load(&cfg); err == nil || !strings.Contains(err.Error(), "S3_MAX_ATTEMPTS") {
		t.Errorf("S3_MAX_ATTEMPTS=0: %v; want it refused", err)
	}
}
