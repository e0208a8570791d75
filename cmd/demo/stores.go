package main

// The demo fleet's stores outside PostgreSQL: an S3 file store (gofakes3,
// in memory, served over HTTP in this process) and, when redis-server is
// installed, a Redis of its own on a free loopback port. Every tenant gets
// files and keys; the cleaner removes those of the tenants it cleans, and
// tenantctl sweep those of a tenant the original scripts cleaned. The
// summary shows what is left of each.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

const (
	demoBucket = "onyx-file-store-bucket"
	// demoFiles and demoKeys are each tenant's objects and Redis keys.
	demoFiles, demoKeys = 20, 50
)

// pastTenant was cleaned by the original scripts, before any store was
// cleaned: only its files and keys are left, and a cleaned_tenants.csv
// names it (with a paying tenant, by mistake).
var pastTenant = demoTenant{id: "tenant_d0000003-0000-4000-8000-000000000001", kind: "cleaned by the original scripts (in their CSV)"}

type demoStores struct {
	backend *s3mem.Backend
	srv     *http.Server
	redis   *redis.Client // nil: no redis-server here
	cmd     *exec.Cmd
	dir     string
	// Env configures the services and tenantctl for both stores.
	Env []string
}

// startStores starts the S3 server and redis-server and seeds every
// tenant's files and keys.
func startStores(ctx context.Context) (*demoStores, error) {
	s := &demoStores{backend: s3mem.New()}
	if err := s.backend.CreateBucket(demoBucket); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.srv = &http.Server{Handler: gofakes3.New(s.backend).Server(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	s.Env = []string{"S3_FILE_STORE_BUCKET_NAME=" + demoBucket, "S3_ENDPOINT_URL=http://" + ln.Addr().String(),
		"S3_AWS_ACCESS_KEY_ID=demo", "S3_AWS_SECRET_ACCESS_KEY=demo", "AWS_REGION_NAME=us-east-1"}
	fmt.Printf("    S3 (gofakes3, in memory) at http://%s, bucket %s\n", ln.Addr(), demoBucket)

	if bin, err := exec.LookPath("redis-server"); err != nil {
		fmt.Println("    Redis skipped: no redis-server on PATH (apt-get install redis-server)")
	} else if err := s.startRedis(ctx, bin); err != nil {
		s.close()
		return nil, err
	}
	for _, t := range append(fleet, pastTenant) {
		for i := range demoFiles {
			key := fmt.Sprintf("onyx-files/%s/%08d-upload.pdf", t.id, i)
			body := []byte("a file of " + t.id)
			if _, err := s.backend.PutObject(demoBucket, key, map[string]string{}, bytes.NewReader(body), int64(len(body)), nil); err != nil {
				s.close()
				return nil, err
			}
		}
		if s.redis == nil {
			continue
		}
		pipe := s.redis.Pipeline()
		for i := range demoKeys {
			pipe.Set(ctx, fmt.Sprintf("%s:cache:%d", t.id, i), "x", 0)
		}
		pipe.SAdd(ctx, rediskeys.GatedTenants, t.id)
		pipe.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: t.id})
		if _, err := pipe.Exec(ctx); err != nil {
			s.close()
			return nil, err
		}
	}
	what := fmt.Sprintf("%d files", demoFiles)
	if s.redis != nil {
		what += fmt.Sprintf(", %d Redis keys and 2 memberships", demoKeys)
	}
	fmt.Printf("    %s for each of the %d tenants and for %s\n", what, len(fleet), pastTenant.id)
	return s, nil
}

func (s *demoStores) startRedis(ctx context.Context, bin string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	if s.dir, err = os.MkdirTemp("", "tenant-cleanup-demo-redis-"); err != nil {
		return err
	}
	s.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", s.dir, "--save", "",
		"--appendonly", "no", "--daemonize", "no", "--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.redis = redis.NewClient(&redis.Options{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))})
	if err := waitFor(ctx, 10*time.Second, func() bool { return s.redis.Ping(ctx).Err() == nil }); err != nil {
		return fmt.Errorf("redis-server on port %d: %w", port, err)
	}
	s.Env = append(s.Env, "REDIS_HOST=127.0.0.1", "REDIS_PORT="+strconv.Itoa(port))
	fmt.Printf("    Redis (redis-server, no persistence) at 127.0.0.1:%d\n", port)
	return nil
}

func (s *demoStores) close() {
	_ = s.srv.Close()
	if s.redis != nil {
		_ = s.redis.Close()
	}
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// sweepPast runs tenantctl sweep on the original scripts' CSV: a dry run,
// then --apply. The paying tenant the CSV names by mistake is refused.
func (s *demoStores) sweepPast(binDir string, env []string, dir string) error {
	csvPath := filepath.Join(dir, "cleaned_tenants.csv")
	body := "tenant_id,cleaned_at\n" + pastTenant.id + ",2026-03-01T10:00:00\n" + fleet[5].id + ",2026-03-01T10:00:01\n"
	if err := os.WriteFile(csvPath, []byte(body), 0o600); err != nil {
		return err
	}
	step("bin/tenantctl sweep --csv cleaned_tenants.csv   (a dry run: the original scripts' tenants and the ledger's)")
	if err := runCmd(binDir, env, "tenantctl", "sweep", "--csv", csvPath); err != nil {
		return err
	}
	step("bin/tenantctl sweep --csv cleaned_tenants.csv --apply --yes")
	return runCmd(binDir, env, "tenantctl", "sweep", "--csv", csvPath, "--apply", "--yes")
}

// summary prints what each tenant has left in the stores, and fails when a
// cleaned tenant kept anything or another tenant lost anything.
func (s *demoStores) summary(ctx context.Context) error {
	step("files and keys of each tenant")
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tKIND\tS3 FILES\tREDIS KEYS\tMEMBERSHIPS\tRESULT")
	var wrong []string
	for _, t := range append(fleet, pastTenant) {
		prefix := "onyx-files/" + t.id + "/"
		p := gofakes3.NewPrefix(&prefix, nil)
		list, err := s.backend.ListBucket(demoBucket, &p, gofakes3.ListBucketPage{})
		if err != nil {
			return err
		}
		files := len(list.Contents)
		keys, members := "-", "-"
		var nKeys, nMembers int
		if s.redis != nil {
			nKeys = len(s.redis.Keys(ctx, t.id+":*").Val()) // a demo-sized keyspace
			if s.redis.SIsMember(ctx, rediskeys.GatedTenants, t.id).Val() {
				nMembers++
			}
			if s.redis.ZScore(ctx, rediskeys.ActiveTenants, t.id).Err() == nil {
				nMembers++
			}
			keys, members = strconv.Itoa(nKeys), strconv.Itoa(nMembers)
		}
		gone := t.expect == tenant.OutcomeCleaned || t.id == pastTenant.id
		verdict := "kept"
		switch {
		case gone && files+nKeys+nMembers == 0:
			verdict = "removed"
		case gone:
			verdict = "LEFT BEHIND"
			wrong = append(wrong, t.id)
		case files != demoFiles || (s.redis != nil && (nKeys != demoKeys || nMembers != 2)):
			verdict = "DAMAGED"
			wrong = append(wrong, t.id)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", t.id, t.kind, files, keys, members, verdict)
	}
	tw.Flush()
	if len(wrong) > 0 {
		return fmt.Errorf("stores: wrong for %v", wrong)
	}
	return nil
}
