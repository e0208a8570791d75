package bastion_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion/bastiontest"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// newDialer creates a dialer logging to the returned buffer and closes it
// when the test ends.
func newDialer(t *testing.T, cfg bastion.Config) (*bastion.Dialer, *testenv.SyncBuffer) {
	t.Helper()
	logs := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := bastion.New(cfg, log)
	if err != nil {
		t.Fatalf("bastion.New: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		if t.Failed() {
			t.Logf("dialer log:\n%s", logs.String())
		}
	})
	return d, logs
}

// tunnel starts a bastion (with opts), a TCP echo target and a dialer with
// the bastion's configuration, changed by edit when it is not nil.
func tunnel(t *testing.T, edit func(*bastion.Config), opts ...bastiontest.Option) (*bastiontest.SSHD, *target, *bastion.Dialer, *testenv.SyncBuffer) {
	t.Helper()
	s := bastiontest.Start(t, opts...)
	tg := newTCPTarget(t)
	cfg := s.BastionConfig()
	if edit != nil {
		edit(&cfg)
	}
	d, logs := newDialer(t, cfg)
	return s, tg, d, logs
}

// assertSSHConnections checks that d made want SSH connections so far.
func assertSSHConnections(t *testing.T, d *bastion.Dialer, want int) {
	t.Helper()
	if got := d.ConnectCount(); got != want {
		t.Errorf("SSH connections = %d, want %d", got, want)
	}
}

// target is a TCP (or unix) echo server standing in for a service behind the
// bastion; it counts the connections it accepted.
type target struct {
	ln       net.Listener
	accepted atomic.Int64
}

func newTarget(t *testing.T, network, addr string) *target {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	tg := &target{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tg.accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return tg
}

func newTCPTarget(t *testing.T) *target { return newTarget(t, "tcp", "127.0.0.1:0") }

func (tg *target) addr() string { return tg.ln.Addr().String() }

// silentTarget is a listener that never accepts by itself, so that
// assertNoConnection can tell whether anything connected to it.
type silentTarget struct {
	ln *net.TCPListener
}

func newSilentTarget(t *testing.T) *silentTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return &silentTarget{ln: ln.(*net.TCPListener)}
}

func (s *silentTarget) addr() string { return s.ln.Addr().String() }

// assertNoConnection fails if a connection is waiting in the listen queue:
// the kernel queues a connection as soon as its handshake completes, so a
// direct dial that already returned would be found here.
func (s *silentTarget) assertNoConnection(t *testing.T) {
	t.Helper()
	_ = s.ln.SetDeadline(time.Now().Add(100 * time.Millisecond))
	c, err := s.ln.Accept()
	if err == nil {
		c.Close()
		t.Fatalf("target %s received a connection: the dialer must never connect directly", s.addr())
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("accept: %v", err)
	}
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// echo round-trips msg over c.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := echoErr(c, msg); err != nil {
		t.Fatalf("echo through tunnel: %v", err)
	}
}

func echoErr(c net.Conn, msg string) error {
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return errors.New("echo mismatch: got " + string(buf))
	}
	return nil
}

// eventually polls cond every 10ms until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

func dial(t *testing.T, d *bastion.Dialer, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("DialContext(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// writeKey writes a fresh unencrypted ed25519 key and returns its path.
func writeKey(t *testing.T) string {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
