package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			http.Error(w, "not ready: data plane: connection refused", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ctx := context.Background()

	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		if err := probe(ctx, addr, "/healthz", time.Second); err != nil {
			t.Errorf("probe(%s, /healthz): %v", addr, err)
		}
	}
	if err := probe(ctx, ":"+port, "healthz", time.Second); err != nil {
		t.Errorf("probe without a leading slash: %v", err)
	}
	err := probe(ctx, ":"+port, "/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("probe(/readyz) = %v, want the 503 and its reason", err)
	}
	if err := probe(ctx, "9090", "/healthz", time.Second); err == nil {
		t.Error("probe accepted an address without a port separator")
	}
	srv.Close()
	if err := probe(ctx, ":"+port, "/healthz", time.Second); err == nil {
		t.Error("probe of a closed port succeeded")
	}
}
