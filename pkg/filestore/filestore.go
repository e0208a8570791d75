// Package filestore removes a tenant's files from Onyx's S3 file store: every
// object under S3_FILE_STORE_PREFIX/TENANT_ID/ in S3_FILE_STORE_BUCKET_NAME,
// on AWS S3 or an S3-compatible server (S3_ENDPOINT_URL, addressed
// path-style).
//
// What is deleted is decided by the key prefix alone, and the prefix always
// ends in '/': no other tenant's object can match it. The tenant's
// file_record.object_key rows, which the caller passes in, are a
// cross-check, never a list of things to delete: a key they name outside the
// tenant's prefix (a legacy layout, another prefix, another tenant's
// folder) is reported in Removed.Outside and left in place, because nothing
// but the row says it belongs to this tenant, and a row is not proof enough
// to delete another tenant's file. Someone looks at those by hand.
//
// Every failure to reach S3 (refused or reset connections, timeouts, 5xx
// answers, throttling) comes back as tenant.ErrUnavailable or
// tenant.ErrLater, so that the caller retries and never counts the tenant
// as cleaned; an answer that waiting will not change (access denied, no such
// bucket) comes back as a plain error that says what to fix.
package filestore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// BatchSize is the number of keys listed, and then deleted, per request:
// S3's limit for both ListObjectsV2 and DeleteObjects.
const BatchSize = 1000

// maxStale is how many times in a row a listing may show only objects
// that S3 said it deleted (a server whose listings lag) before RemoveTenant
// gives up for now.
const maxStale = 3

// MaxOutsideChecks bounds the requests RemoveTenant makes to see whether
// the Outside keys exist.
const MaxOutsideChecks = 100

// Store removes tenants' objects from one bucket. It is safe for concurrent
// use.
type Store struct {
	client  *s3.Client
	cfg     Config
	bucket  string
	timeout time.Duration

	// afterBatch, when set (tests), runs after each delete request.
	afterBatch func(batch int)
}

// Removed is what RemoveTenant did, for the ledger.
type Removed struct {
	// Objects and Bytes count the objects deleted under the tenant's
	// prefix and their size, as listed.
	Objects int64
	Bytes   int64
	// Outside lists, sorted and without duplicates, the file_record keys
	// that are not under the tenant's prefix: left in place, for review.
	Outside []string
	// OutsidePresent counts the Outside keys found in the bucket, plus
	// those not checked (beyond MaxOutsideChecks): 0 means none of them
	// is there.
	OutsidePresent int64
	// Unlisted counts the file_record keys under the prefix that were not
	// there to delete (deleted by an earlier attempt, or never uploaded).
	Unlisted int64
}

// Open returns a Store for cfg. It checks the configuration but does not
// reach S3 (Ping does), so a service can start while S3 is down.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("s3 file store: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	attempts := cfg.MaxAttempts
	if attempts <= 0 {
		attempts = retry.DefaultMaxAttempts
	}
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(cfg.Region),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = attempts
				o.MaxBackoff = min(timeout/4, 5*time.Second)
			})
		}),
	}
	if cfg.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(cfg.AccessKeyID, cfg.SecretAccessKey, "")))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3 file store: load AWS configuration: %w", err)
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.EndpointURL != "" {
			o.BaseEndpoint = aws.String(cfg.EndpointURL)
			o.UsePathStyle = true
		}
		// Checksums only where S3 requires one; DeleteObjects also gets the
		// Content-MD5 that S3-compatible servers demand (contentMD5).
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Store{client: client, cfg: cfg, bucket: cfg.BucketName(), timeout: timeout}, nil
}

// Ping checks that the bucket can be reached with these credentials.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	return s.kind(ctx, "ping", err)
}

// RemoveTenant deletes every object under the tenant's prefix, a page of
// up to BatchSize keys at a time (list, then delete what was listed), until
// a listing finds nothing left: that last listing is the check that
// nothing remains. recordKeys are the tenant's file_record.object_key
// values; they are compared with the prefix, never deleted by name (see
// the package documentation).
//
// Running it again is harmless: a tenant with nothing left is a no-op. On
// error, the Removed returned counts what was deleted before it.
func (s *Store) RemoveTenant(ctx context.Context, id tenant.ID, recordKeys []string) (Removed, error) {
	var r Removed
	prefix, err := s.prefix(id)
	if err != nil {
		return r, err
	}
	inside := map[string]bool{} // record keys under the prefix: deleted now?
	for _, k := range recordKeys {
		if strings.HasPrefix(k, prefix) {
			inside[k] = false
		} else {
			r.Outside = append(r.Outside, k)
		}
	}
	slices.Sort(r.Outside)
	r.Outside = slices.Compact(r.Outside)

	var last map[string]bool // the keys deleted by the previous request
	stale := 0               // pages in a row that listed only keys already deleted
	for batch := 1; ; batch++ {
		page, _, err := s.list(ctx, prefix, nil)
		if err != nil {
			return r, fmt.Errorf("remove %s from S3: %w", id, err)
		}
		if len(page) == 0 {
			break
		}
		if !slices.ContainsFunc(page, func(o object) bool { return !last[o.key] }) {
			if stale++; stale == maxStale {
				return r, tenant.Later(time.Minute, fmt.Sprintf(
					"S3 still lists %d of %s's objects it said it deleted (e.g. %s)", len(page), id, tenant.QuoteInput(page[0].key)), nil)
			}
		} else {
			stale = 0
		}
		deleted, err := s.delete(ctx, page)
		prev := last
		last = make(map[string]bool, len(deleted))
		for _, o := range deleted {
			last[o.key] = true
			if prev[o.key] {
				continue // counted when first deleted
			}
			r.Objects++
			r.Bytes += o.size
			if _, ok := inside[o.key]; ok {
				inside[o.key] = true
			}
		}
		if err != nil {
			return r, fmt.Errorf("remove %s from S3: %w", id, err)
		}
		if s.afterBatch != nil {
			s.afterBatch(batch)
		}
	}
	for _, done := range inside {
		if !done {
			r.Unlisted++
		}
	}
	if r.OutsidePresent, err = s.present(ctx, r.Outside); err != nil {
		return r, fmt.Errorf("remove %s from S3: check file_record keys outside %s: %w", id, prefix, err)
	}
	return r, nil
}

// Leftovers counts the objects under the tenant's prefix: 0 once it is
// clean of this store.
func (s *Store) Leftovers(ctx context.Context, id tenant.ID) (int64, error) {
	prefix, err := s.prefix(id)
	if err != nil {
		return 0, err
	}
	var n int64
	var token *string
	for {
		page, next, err := s.list(ctx, prefix, token)
		if err != nil {
			return n, fmt.Errorf("count %s's objects in S3: %w", id, err)
		}
		n += int64(len(page))
		if next == nil {
			return n, nil
		}
		token = next
	}
}

// prefix is the tenant's key prefix, for a valid id only: an ID made
// without tenant.ParseID (the zero ID, say) would give a prefix that is
// not one tenant's.
// Prefix is the key prefix of the tenant's objects (Config.TenantPrefix),
// for a valid tenant id only.
func (s *Store) Prefix(id tenant.ID) (string, error) { return s.prefix(id) }

func (s *Store) prefix(id tenant.ID) (string, error) {
	if _, err := tenant.ParseID(string(id)); err != nil {
		return "", fmt.Errorf("s3 file store: %w", err)
	}
	return s.cfg.TenantPrefix(id), nil
}

type object struct {
	key  string
	size int64
}

// list returns one page of the objects under prefix, from token on, and
// the token of the next page (nil on the last). A key that does not start
// with prefix is an error: the server did not honour the prefix, and
// nothing it listed may be deleted.
func (s *Store) list(ctx context.Context, prefix string, token *string) ([]object, *string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket:            &s.bucket,
		Prefix:            &prefix,
		MaxKeys:           aws.Int32(BatchSize),
		ContinuationToken: token,
	})
	if err != nil {
		return nil, nil, s.kind(ctx, "list "+prefix, err)
	}
	page := make([]object, 0, len(out.Contents))
	for _, o := range out.Contents {
		key := aws.ToString(o.Key)
		if !strings.HasPrefix(key, prefix) {
			return nil, nil, fmt.Errorf("listing %s in bucket %s returned %s, which is not under it: the server ignores the prefix, nothing is deleted",
				prefix, s.bucket, tenant.QuoteInput(key))
		}
		if dotSegment(key[len(prefix):]) {
			// A server that maps keys to file paths may resolve it outside
			// the prefix (another tenant's folder): never deleted here.
			return nil, nil, fmt.Errorf("listing %s in bucket %s returned %s, whose path has a '.' or '..' segment: "+
				"it may name another tenant's object on a server that resolves paths; nothing is deleted: remove it by hand",
				prefix, s.bucket, tenant.QuoteInput(key))
		}
		page = append(page, object{key: key, size: aws.ToInt64(o.Size)})
	}
	var next *string
	if aws.ToBool(out.IsTruncated) && aws.ToString(out.NextContinuationToken) != "" {
		next = out.NextContinuationToken
	}
	return page, next, nil
}

// dotSegment reports whether a key's remainder has a "." or ".." path
// segment (Onyx's keys are uuids and names without them).
func dotSegment(rest string) bool {
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// delete deletes one page of objects in one request and returns those
// deleted. Keys S3 could not delete make an error, unavailable when S3
// says it was busy or failing, plain otherwise (access denied, an object
// lock, ...).
func (s *Store) delete(ctx context.Context, page []object) ([]object, error) {
	ids := make([]types.ObjectIdentifier, len(page))
	for i, o := range page {
		ids[i] = types.ObjectIdentifier{Key: aws.String(o.key)}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: &s.bucket,
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	}, func(o *s3.Options) { o.APIOptions = append(o.APIOptions, contentMD5) })
	if err != nil {
		return nil, s.kind(ctx, "delete", err)
	}
	failed := map[string]types.Error{}
	for _, e := range out.Errors {
		failed[aws.ToString(e.Key)] = e
	}
	deleted := make([]object, 0, len(page))
	for _, o := range page {
		if _, bad := failed[o.key]; !bad {
			deleted = append(deleted, o)
		}
	}
	if len(failed) == 0 {
		return deleted, nil
	}
	e := out.Errors[0]
	err = fmt.Errorf("S3 did not delete %d of %d objects, e.g. %s: %s: %s",
		len(failed), len(page), tenant.QuoteInput(aws.ToString(e.Key)), aws.ToString(e.Code), aws.ToString(e.Message))
	for _, e := range out.Errors {
		if transient(aws.ToString(e.Code)) {
			return deleted, tenant.Unavailable(err)
		}
	}
	return deleted, err
}

// present counts the keys that exist, checking at most MaxOutsideChecks
// of them and counting the others as present. Each check lists one key
// from the key on (the key itself comes first when it exists), which needs
// no permission beyond s3:ListBucket, unlike HEAD.
func (s *Store) present(ctx context.Context, keys []string) (int64, error) {
	var n int64
	for i, key := range keys {
		if i >= MaxOutsideChecks {
			return n + int64(len(keys)-i), nil
		}
		lctx, cancel := context.WithTimeout(ctx, s.timeout)
		out, err := s.client.ListObjectsV2(lctx, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: aws.String(key), MaxKeys: aws.Int32(1)})
		if err != nil {
			err = s.kind(lctx, "list "+tenant.QuoteInput(key), err)
			cancel()
			return n, err
		}
		cancel()
		if len(out.Contents) > 0 && aws.ToString(out.Contents[0].Key) == key {
			n++
		}
	}
	return n, nil
}

// kind turns an SDK error into the domain's kind, with a message that says
// what to do about the ones waiting will not fix.
func (s *Store) kind(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var (
		re     *smithyhttp.ResponseError
		apiErr smithy.APIError
	)
	code := ""
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() == context.Canceled:
		return fmt.Errorf("s3 %s: %w", op, err) // the caller gave up
	case cutOff(err):
		// Timed out or cut off, possibly in the middle of an answer.
		return tenant.Unavailable(fmt.Errorf("s3 %s: bucket %s unreachable: %w", op, s.bucket, err))
	case throttled(code):
		return tenant.Later(30*time.Second, "S3 is throttling requests", fmt.Errorf("s3 %s: %w", op, err))
	case transient(code):
		return tenant.Unavailable(fmt.Errorf("s3 %s: %w", op, err))
	case errors.As(err, &re) && re.Response != nil && re.HTTPStatusCode() != 0:
		switch status := re.HTTPStatusCode(); {
		case status >= 500 || status == 408 || status == 429:
			return tenant.Unavailable(fmt.Errorf("s3 %s: %w", op, err))
		case status == 403 || status == 401:
			return fmt.Errorf("s3 %s: access denied to bucket %s: the credentials need s3:ListBucket and s3:DeleteObject on it: %w",
				op, s.bucket, err)
		case status == 404 && (code == "NoSuchBucket" || code == "NotFound" || code == ""):
			return fmt.Errorf("s3 %s: bucket %s not found: check S3_FILE_STORE_BUCKET_NAME, S3_ENDPOINT_URL and AWS_REGION_NAME: %w",
				op, s.bucket, err)
		}
		return fmt.Errorf("s3 %s: %w", op, err)
	}
	// No answer from S3 at all (the SDK reports those as a response error
	// of status 0): connection refused or reset, a timeout, DNS,
	// credentials that could not be fetched.
	return tenant.Unavailable(fmt.Errorf("s3 %s: bucket %s unreachable: %w", op, s.bucket, err))
}

// cutOff reports a request that ran out of time or lost its connection.
func cutOff(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// throttled reports S3's "slow down" error codes.
func throttled(code string) bool {
	switch code {
	case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests", "RequestThrottled":
		return true
	}
	return false
}

// transient reports S3 error codes that mean "try again".
func transient(code string) bool {
	switch code {
	case "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "OperationAborted":
		return true
	}
	return false
}

// contentMD5 adds the Content-MD5 header to a request (DeleteObjects),
// which S3 documents as required and which S3-compatible servers (MinIO,
// Ceph, OCI, ...) insist on, whereas the SDK sends only a CRC32 checksum.
// It runs in the build step, before signing, so the header is signed.
func contentMD5(stack *middleware.Stack) error {
	return stack.Build.Add(middleware.BuildMiddlewareFunc("TenantCleanupContentMD5",
		func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
			req, ok := in.Request.(*smithyhttp.Request)
			if !ok {
				return next.HandleBuild(ctx, in)
			}
			var body []byte
			if stream := req.GetStream(); stream != nil {
				b, err := io.ReadAll(stream)
				if err != nil {
					return middleware.BuildOutput{}, middleware.Metadata{}, fmt.Errorf("read request body for Content-MD5: %w", err)
				}
				body = b
				if req, err = req.SetStream(bytes.NewReader(b)); err != nil {
					return middleware.BuildOutput{}, middleware.Metadata{}, err
				}
				in.Request = req
			}
			sum := md5.Sum(body)
			req.Header.Set("Content-MD5", base64.StdEncoding.EncodeToString(sum[:]))
			return next.HandleBuild(ctx, in)
		}), middleware.After)
}
