package testenv

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// S3 is an S3-compatible server of the test's own: gofakes3 with its
// in-memory backend, served over HTTP on a loopback port, so that clients
// speak the S3 protocol to it exactly as they would to AWS S3 or MinIO
// (path-style addressing). Its contents live in the test process: they
// survive Stop and Start.
type S3 struct {
	// URL is the endpoint (http://127.0.0.1:PORT), for S3_ENDPOINT_URL.
	URL  string
	Addr string

	backend *s3mem.Backend
	handler http.Handler
	t       testing.TB

	mu     sync.Mutex
	srv    *http.Server
	paused chan struct{} // closed by Resume; nil when not paused

	deletes atomic.Int64 // DeleteObjects requests
}

// S3 access keys the test server accepts (it accepts any: it does not
// check signatures).
const (
	S3AccessKey = "test-access-key"
	S3SecretKey = "test-secret-key"
)

// StartS3 starts an S3 server holding the given (empty) buckets; it is
// stopped when t ends.
func StartS3(t testing.TB, buckets ...string) *S3 {
	t.Helper()
	s := &S3{backend: s3mem.New(), t: t}
	s.handler = gofakes3.New(s.backend).Server()
	for _, b := range buckets {
		if err := s.backend.CreateBucket(b); err != nil {
			t.Fatalf("testenv: s3: create bucket %s: %v", b, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.URL = "http://" + s.Addr
	s.serve(ln)
	t.Cleanup(func() { s.Resume(); s.Stop() })
	return s
}

func (s *S3) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(s.serveHTTP)}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (s *S3) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	if paused != nil {
		select {
		case <-paused:
		case <-r.Context().Done():
			return
		}
	}
	if _, del := r.URL.Query()["delete"]; del && r.Method == http.MethodPost {
		// As S3 documents it and as MinIO and others insist: a
		// multi-object delete carries the Content-MD5 of its body.
		body, err := io.ReadAll(r.Body)
		sum := md5.Sum(body)
		if err != nil || r.Header.Get("Content-MD5") != base64.StdEncoding.EncodeToString(sum[:]) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidDigest</Code>`+
				`<Message>DeleteObjects needs a valid Content-MD5 header</Message></Error>`)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.deletes.Add(1)
	}
	s.handler.ServeHTTP(w, r)
}

// Stop closes the listener and every open connection at once, as a server
// that went away. Contents are kept.
func (s *S3) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// Start serves again on the same address, with the same contents.
func (s *S3) Start() {
	s.t.Helper()
	ln, err := net.Listen("tcp", s.Addr)
	if err != nil {
		s.t.Fatalf("testenv: s3: listen again on %s: %v", s.Addr, err)
	}
	s.serve(ln)
}

// Pause holds every request, without answering, until Resume, as a server
// that hangs.
func (s *S3) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == nil {
		s.paused = make(chan struct{})
	}
}

// Resume answers held and new requests again.
func (s *S3) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused != nil {
		close(s.paused)
		s.paused = nil
	}
}

// Deletes counts the DeleteObjects (multi-object delete) requests served
// (those refused for a missing or wrong Content-MD5 are not counted).
func (s *S3) Deletes() int64 { return s.deletes.Load() }

// CreateBucket adds an empty bucket.
func (s *S3) CreateBucket(name string) {
	s.t.Helper()
	if err := s.backend.CreateBucket(name); err != nil {
		s.t.Fatalf("testenv: s3: create bucket %s: %v", name, err)
	}
}

// Put stores an object directly in the backend (no HTTP), for setting up
// a test quickly.
func (s *S3) Put(bucket, key string, body []byte) {
	s.t.Helper()
	if _, err := s.backend.PutObject(bucket, key, map[string]string{}, bytes.NewReader(body), int64(len(body)), nil); err != nil {
		s.t.Fatalf("testenv: s3: put %s/%s: %v", bucket, key, err)
	}
}

// Keys lists the keys of bucket that start with prefix, sorted, read
// directly from the backend (no HTTP): what a test checks against is not
// seen through the client under test.
func (s *S3) Keys(bucket, prefix string) []string {
	s.t.Helper()
	p := gofakes3.NewPrefix(&prefix, nil)
	list, err := s.backend.ListBucket(bucket, &p, gofakes3.ListBucketPage{})
	if err != nil {
		s.t.Fatalf("testenv: s3: list %s: %v", bucket, err)
	}
	keys := make([]string, 0, len(list.Contents))
	for _, c := range list.Contents {
		keys = append(keys, c.Key)
	}
	sort.Strings(keys)
	return keys
}

// ClosedURL returns an http URL on a loopback port where nothing listens,
// for testing an unreachable endpoint.
func ClosedURL(t testing.TB) string {
	t.Helper()
	u := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	return u.String()
}
