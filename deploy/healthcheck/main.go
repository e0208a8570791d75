// Command healthcheck is the container health probe of the tenant-cleanup
// image (distroless: no shell, curl or wget). It GETs a path of the service
// running in the same container, on the port of HTTP_ADDR (default :9090),
// and exits 0 on 200, 1 otherwise:
//
//	healthcheck            # GET http://127.0.0.1:9090/readyz
//	healthcheck /healthz   # liveness only
//
// docker-compose.yml uses it as the services' healthcheck; Kubernetes uses
// its own HTTP probes instead.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

func main() {
	path := "/readyz"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	addr := os.Getenv("HTTP_ADDR")
	if addr == "" {
		addr = ":9090"
	}
	if err := probe(context.Background(), addr, path, 3*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// probe GETs path on the local address that addr (a listen address such as
// ":9090" or "0.0.0.0:9090") is reachable at, and fails unless it answers 200.
func probe(ctx context.Context, addr, path string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0", "::", "[::]":
		host = "127.0.0.1"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
