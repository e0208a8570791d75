package testenv

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Cluster is a JetStream cluster of embedded nats-server v2.15 nodes.
type Cluster struct {
	Nodes []*server.Server
	// URL lists every node's client URL, comma-separated.
	URL  string
	opts []*server.Options
}

// StartJetStreamCluster starts an n-node JetStream cluster in this process
// and waits until it has elected a meta leader; it shuts down when t ends.
func StartJetStreamCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		clusterPorts[i] = freePort(t)
	}
	var routes []*url.URL
	for _, p := range clusterPorts {
		routes = append(routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	c := &Cluster{}
	var urls []string
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("node%d", i+1),
			Host:       "127.0.0.1",
			Port:       freePort(t),
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "tenant-cleanup-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     routes,
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatalf("testenv: cluster node %d: %v", i+1, err)
		}
		go s.Start()
		c.Nodes = append(c.Nodes, s)
		c.opts = append(c.opts, o)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	t.Cleanup(func() {
		for _, s := range c.Nodes {
			s.Shutdown()
		}
	})
	for _, s := range c.Nodes {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatal("testenv: cluster node did not start")
		}
	}
	c.URL = strings.Join(urls, ",")
	Eventually(t, 30*time.Second, func() bool {
		for _, s := range c.Nodes {
			if s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	}, "JetStream cluster elects a meta leader")
	return c
}

// FreeAddr is a loopback host:port nothing listens on (for a server the
// test starts, an HTTP_ADDR say).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
