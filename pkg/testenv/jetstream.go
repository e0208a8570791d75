package testenv

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// JetStream is an embedded nats-server v2.15 with JetStream on a loopback
// port, storing in a directory of the test's own.
type JetStream struct {
	URL      string
	Port     int
	StoreDir string
	Server   *server.Server
	t        testing.TB
}

// StartJetStream starts a JetStream server for t, shut down when t ends.
func StartJetStream(t testing.TB) *JetStream {
	t.Helper()
	js := &JetStream{StoreDir: t.TempDir(), Port: -1, t: t}
	js.start()
	t.Cleanup(js.Shutdown)
	return js
}

func (js *JetStream) start() {
	js.t.Helper()
	opts := &server.Options{
		ServerName: "test",
		Host:       "127.0.0.1",
		Port:       js.Port,
		JetStream:  true,
		StoreDir:   js.StoreDir,
		NoLog:      true,
		NoSigs:     true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		js.t.Fatalf("testenv: nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		js.t.Fatalf("testenv: nats-server did not start")
	}
	js.Server = s
	js.Port = s.Addr().(*net.TCPAddr).Port
	js.URL = fmt.Sprintf("nats://127.0.0.1:%d", js.Port)
}

// Shutdown stops the server (idempotent).
func (js *JetStream) Shutdown() {
	if js.Server != nil {
		js.Server.Shutdown()
		js.Server.WaitForShutdown()
		js.Server = nil
	}
}

// Restart stops the server and starts it again on the same port and store.
func (js *JetStream) Restart() {
	js.t.Helper()
	js.Shutdown()
	js.start()
}
