package filestore

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/internal/redact"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// DefaultBucket is the bucket Onyx uses when FILE_STORE_BACKEND is s3 and
// S3_FILE_STORE_BUCKET_NAME is unset.
const DefaultBucket = "onyx-file-store-bucket"

// DefaultPrefix is Onyx's S3_FILE_STORE_PREFIX when unset or empty.
const DefaultPrefix = "onyx-files"

// Config is the S3 file store's configuration, read from Onyx's own
// variables (envconfig tags, as in pkg/config). The zero value is a store
// that is not configured (Enabled is false).
type Config struct {
	Backend         string        `envconfig:"FILE_STORE_BACKEND" desc:"Onyx's file store backend; s3 turns the S3 file store on (bucket onyx-file-store-bucket unless S3_FILE_STORE_BUCKET_NAME names one)"`
	Bucket          string        `envconfig:"S3_FILE_STORE_BUCKET_NAME" desc:"when set (or FILE_STORE_BACKEND=s3), cleaning a tenant deletes its objects in this bucket"`
	Prefix          string        `envconfig:"S3_FILE_STORE_PREFIX" default:"onyx-files" desc:"key prefix of Onyx's files; a tenant's objects are under PREFIX/TENANT_ID/"`
	EndpointURL     string        `envconfig:"S3_ENDPOINT_URL" desc:"S3-compatible server (MinIO, SeaweedFS, ...), addressed path-style; empty: AWS S3"`
	AccessKeyID     string        `envconfig:"S3_AWS_ACCESS_KEY_ID" desc:"access key; empty: the AWS default credential chain (environment, web identity, instance role)"`
	SecretAccessKey string        `envconfig:"S3_AWS_SECRET_ACCESS_KEY" secret:"true" desc:"secret key, with S3_AWS_ACCESS_KEY_ID"`
	Region          string        `envconfig:"AWS_REGION_NAME" default:"us-east-2" desc:"region of the bucket"`
	Timeout         time.Duration `envconfig:"S3_TIMEOUT" default:"30s" range:"100ms..10m" desc:"bound on each S3 request, retries included"`
	MaxAttempts     int           `envconfig:"S3_MAX_ATTEMPTS" default:"3" range:"1..10" desc:"attempts of each S3 request before the store counts as unavailable"`
}

// Enabled reports whether the S3 file store is configured: a bucket is
// named, or FILE_STORE_BACKEND is s3. A bucket named while the backend is
// postgres is still cleaned: it may hold files from before a switch.
func (c *Config) Enabled() bool {
	return c.Bucket != "" || strings.EqualFold(strings.TrimSpace(c.Backend), "s3")
}

// BucketName is the bucket cleaned: S3_FILE_STORE_BUCKET_NAME, or Onyx's
// default.
func (c *Config) BucketName() string {
	if c.Bucket != "" {
		return c.Bucket
	}
	return DefaultBucket
}

// TenantPrefix is the key prefix of the tenant's objects, built as Onyx
// builds it (s3_key_utils.generate_s3_key): the configured prefix without
// leading or trailing slashes, the tenant id, and always a trailing slash,
// so that it can never match another tenant's objects (tenant_i-ab/ is
// not a prefix of tenant_i-abc/...).
func (c *Config) TenantPrefix(id tenant.ID) string {
	p := c.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return strings.Trim(p, "/") + "/" + string(id) + "/"
}

// Validate checks what Open needs, with messages that say what to set.
func (c *Config) Validate() error {
	var errs []error
	if !c.Enabled() {
		errs = append(errs, errors.New("the S3 file store is not configured: set S3_FILE_STORE_BUCKET_NAME or FILE_STORE_BACKEND=s3"))
	}
	if (c.AccessKeyID == "") != (c.SecretAccessKey == "") {
		errs = append(errs, errors.New("set both S3_AWS_ACCESS_KEY_ID and S3_AWS_SECRET_ACCESS_KEY, or neither (to use the AWS default credential chain)"))
	}
	if c.EndpointURL != "" {
		u, err := url.Parse(c.EndpointURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			errs = append(errs, fmt.Errorf("S3_ENDPOINT_URL must be http(s)://host[:port] without credentials, got %s",
				tenant.QuoteInput(redactEndpoint(c.EndpointURL))))
		}
	}
	if c.Region == "" {
		errs = append(errs, errors.New("AWS_REGION_NAME is empty: set the bucket's region (any value for most S3-compatible servers)"))
	}
	return errors.Join(errs...)
}

// redactEndpoint hides whatever may be a secret in a malformed endpoint:
// everything before an '@'.
func redactEndpoint(s string) string {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		return redact.Mask + s[i:]
	}
	return s
}
