package filestore

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Root is the key prefix under which every tenant has its folder: the
// configured prefix without leading or trailing slashes, and a slash.
func (c *Config) Root() string {
	p := c.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return strings.Trim(p, "/") + "/"
}

// Folders lists the names of the folders directly under the store's root
// (ROOT/NAME/...), with a listing by delimiter, up to BatchSize names a
// request: which tenants have anything in the bucket, in one pass rather
// than one listing per tenant. Names are returned as stored, valid tenant
// ids or not; the caller validates them (tenant.ParseID) before any use.
// Objects directly under the root (no folder) are not listed.
func (s *Store) Folders(ctx context.Context) ([]string, error) {
	root := s.cfg.Root()
	var (
		names []string
		token *string
	)
	for {
		lctx, cancel := context.WithTimeout(ctx, s.timeout)
		out, err := s.client.ListObjectsV2(lctx, &s3.ListObjectsV2Input{
			Bucket:            &s.bucket,
			Prefix:            &root,
			Delimiter:         aws.String("/"),
			MaxKeys:           aws.Int32(BatchSize),
			ContinuationToken: token,
		})
		if err != nil {
			err = s.kind(lctx, "list "+root, err)
			cancel()
			return names, fmt.Errorf("list the tenant folders of bucket %s: %w", s.bucket, err)
		}
		cancel()
		for _, p := range out.CommonPrefixes {
			name, ok := strings.CutPrefix(aws.ToString(p.Prefix), root)
			if !ok || !strings.HasSuffix(name, "/") {
				return names, fmt.Errorf("listing %s in bucket %s returned the folder %s, which is not under it",
					root, s.bucket, tenant.QuoteInput(aws.ToString(p.Prefix)))
			}
			names = append(names, strings.TrimSuffix(name, "/"))
		}
		if !aws.ToBool(out.IsTruncated) || aws.ToString(out.NextContinuationToken) == "" {
			return names, nil
		}
		token = out.NextContinuationToken
	}
}

// Describe names the bucket and prefix, for operators' output.
func (s *Store) Describe() string {
	d := "S3 bucket " + s.bucket + " under " + s.cfg.Root()
	if s.cfg.EndpointURL != "" {
		d += " at " + redactEndpoint(s.cfg.EndpointURL)
	}
	return d
}
