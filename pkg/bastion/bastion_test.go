package bastion_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion/bastiontest"
)

func TestDialThroughBastionReusesClient(t *testing.T) {
	s, tg, d, logs := tunnel(t, nil)

	c1 := dial(t, d, tg.addr())
	echo(t, c1, "one")
	c2 := dial(t, d, tg.addr())
	echo(t, c2, "two")
	echo(t, c1, "one again")

	if got := d.ConnectCount(); got != 1 {
		t.Errorf("SSH connections = %d, want 1 shared client", got)
	}
	if got := tg.accepted.Load(); got != 2 {
		t.Errorf("target accepted %d connections, want 2", got)
	}
	if got := c1.RemoteAddr().String(); got != tg.addr() {
		t.Errorf("RemoteAddr = %q, want the target %q", got, tg.addr())
	}
	// sshd saw one login and opened both channels to the target.
	want := "target 127.0.0.1 port " + strings.TrimPrefix(tg.addr(), "127.0.0.1:")
	eventually(t, 5*time.Second, "sshd to log both direct-tcpip channels", func() bool {
		return strings.Count(s.Log(), want) == 2
	})
	if got := strings.Count(s.Log(), "Accepted publickey for "+s.User()); got != 1 {
		t.Errorf("sshd logged %d logins, want 1", got)
	}
	if got := strings.Count(logs.String(), "bastion connected"); got != 1 {
		t.Errorf("dialer logged %d connection lines, want 1:\n%s", got, logs)
	}
	if !strings.Contains(logs.String(), "bastion="+s.Addr) {
		t.Errorf("log lacks bastion=%s:\n%s", s.Addr, logs)
	}
}

func TestTunnelConnDeadlines(t *testing.T) {
	_, tg, d, _ := tunnel(t, nil)
	c := dial(t, d, tg.addr())

	// Nothing to read: the read deadline must fire (pgx relies on it to
	// cancel queries).
	if err := c.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	_, err := c.Read(make([]byte, 1))
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("Read after deadline = %v, want a timeout net.Error", err)
	}
	// The connection is still usable afterwards.
	echo(t, c, "still alive")
}

func TestConcurrentDialsShareOneClient(t *testing.T) {
	_, tg, d, _ := tunnel(t, nil)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := d.DialContext(ctx, "tcp", tg.addr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- echoErr(c, "hello")
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	assertSSHConnections(t, d, 1)
}

func TestUnixSocketThroughBastion(t *testing.T) {
	s := bastiontest.Start(t)
	sock := filepath.Join(t.TempDir(), "echo.sock")
	tg := newTarget(t, "unix", sock)
	d, _ := newDialer(t, s.BastionConfig())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		t.Fatalf("DialContext(unix): %v", err)
	}
	defer c.Close()
	echo(t, c, "over a unix socket")
	if tg.accepted.Load() != 1 {
		t.Errorf("unix target accepted %d connections, want 1", tg.accepted.Load())
	}
}

// A bastion whose host key known_hosts does not list is refused, every
// time, before anything is sent: a changed key (known_hosts lists another)
// and an unknown host (known_hosts lists none).
func TestUnverifiedHostKeyIsRefused(t *testing.T) {
	for _, tt := range []struct {
		name       string
		knownHosts func(*bastiontest.SSHD) string
		listsKeys  bool   // the knownhosts.KeyError lists the keys known_hosts has
		says       string // what the error says of the key
	}{
		{"changed", func(s *bastiontest.SSHD) string { return s.WrongKnownHostsFile(t) }, true, "CHANGED"},
		{"unknown", func(*bastiontest.SSHD) string { return bastiontest.EmptyKnownHostsFile(t) }, false, "not in known_hosts"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := bastiontest.Start(t)
			tg := newSilentTarget(t)
			cfg := s.BastionConfig()
			cfg.KnownHostsFile = tt.knownHosts(s)
			d, logs := newDialer(t, cfg)

			for range 2 { // refused every time, not just once
				_, err := d.DialContext(context.Background(), "tcp", tg.addr())
				if !errors.Is(err, bastion.ErrHostKey) {
					t.Fatalf("err = %v, want ErrHostKey", err)
				}
				if errors.Is(err, bastion.ErrUnreachable) {
					t.Errorf("host key error also wraps ErrUnreachable: %v", err)
				}
				t.Logf("error: %v", err)
				var keyErr *knownhosts.KeyError
				if !errors.As(err, &keyErr) || (len(keyErr.Want) > 0) != tt.listsKeys {
					t.Errorf("err does not wrap a knownhosts.KeyError (listing keys: %v): %v", tt.listsKeys, err)
				}
				for _, want := range []string{"host key", s.Addr, tt.says} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
			}
			tg.assertNoConnection(t)
			if d.ConnectCount() != 0 || d.HasClient() {
				t.Errorf("dialer kept a connection after a host key failure")
			}
			if got := strings.Count(logs.String(), "bastion connection failed"); got != 2 {
				t.Errorf("logged %d failure lines, want one per failure (2):\n%s", got, logs)
			}
			if strings.Contains(s.Log(), "Accepted publickey") {
				t.Errorf("client authenticated to a server whose host key it refused")
			}
		})
	}
}

func TestHostKeyAlgorithmsFollowKnownHosts(t *testing.T) {
	// sshd offers ECDSA and RSA host keys too, which the SSH library would
	// prefer; known_hosts only has the ed25519 one.
	s, tg, d, _ := tunnel(t, nil, bastiontest.WithExtraHostKeys())
	if got, want := d.HostKeyAlgorithms(), []string{"ssh-ed25519"}; !slices.Equal(got, want) {
		t.Errorf("HostKeyAlgorithms = %v, want %v", got, want)
	}
	echo(t, dial(t, d, tg.addr()), "ping")

	// With no entry for the host the library defaults stay in place.
	cfg := s.BastionConfig()
	cfg.KnownHostsFile = bastiontest.EmptyKnownHostsFile(t)
	d2, _ := newDialer(t, cfg)
	if got := d2.HostKeyAlgorithms(); got != nil {
		t.Errorf("HostKeyAlgorithms without entries = %v, want nil", got)
	}
}

func TestUnreachableBastion(t *testing.T) {
	tg := newSilentTarget(t)
	addr := closedPort(t)
	host, port, _ := net.SplitHostPort(addr)
	cfg := bastion.Config{
		Host:           host,
		KeyFile:        writeKey(t),
		KnownHostsFile: bastiontest.EmptyKnownHostsFile(t),
		DialTimeout:    2 * time.Second,
	}
	cfg.Port = atoi(t, port)
	d, logs := newDialer(t, cfg)

	_, err := d.DialContext(context.Background(), "tcp", tg.addr())
	if !errors.Is(err, bastion.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	t.Logf("error: %v", err)
	if errors.Is(err, bastion.ErrHostKey) {
		t.Errorf("unreachable error wraps ErrHostKey: %v", err)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the bastion %s", err, addr)
	}
	tg.assertNoConnection(t)
	if got := strings.Count(logs.String(), "bastion connection failed"); got != 1 {
		t.Errorf("logged %d failure lines, want 1:\n%s", got, logs)
	}
}

func TestHungBastionRespectsContextAndDialTimeout(t *testing.T) {
	s := bastiontest.Start(t)
	tg := newSilentTarget(t)
	s.Pause(t) // TCP connects (kernel backlog) but the handshake never answers
	defer s.Resume(t)

	cfg := s.BastionConfig()
	cfg.DialTimeout = 5 * time.Second
	d, _ := newDialer(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := d.DialContext(ctx, "tcp", tg.addr())
	if !errors.Is(err, bastion.ErrUnreachable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnreachable and context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("DialContext took %s, ctx allowed 300ms", elapsed)
	}

	cfg.DialTimeout = 300 * time.Millisecond
	d2, _ := newDialer(t, cfg)
	start = time.Now()
	_, err = d2.DialContext(context.Background(), "tcp", tg.addr())
	if !errors.Is(err, bastion.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("DialContext took %s, DialTimeout is 300ms", elapsed)
	}
	tg.assertNoConnection(t)
}

func TestBastionRestartReconnects(t *testing.T) {
	s, tg, d, logs := tunnel(t, nil)
	old := dial(t, d, tg.addr())
	echo(t, old, "before restart")

	s.Restart(t)

	if err := echoErr(old, "after restart"); err == nil {
		t.Errorf("connection opened before the bastion restart still works")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", tg.addr())
	if err != nil {
		t.Fatalf("DialContext after restart: %v", err)
	}
	defer c.Close()
	echo(t, c, "reconnected")
	assertSSHConnections(t, d, 2)
	for _, line := range []string{"bastion connection lost", "bastion reconnected"} {
		if got := strings.Count(logs.String(), line); got != 1 {
			t.Errorf("logged %q %d times, want once:\n%s", line, got, logs)
		}
	}
}

func TestDeadClientIsReplacedOnDial(t *testing.T) {
	// Dial immediately after the restart, racing the dialer noticing that
	// the connection died: either way the dial must succeed.
	s, tg, d, _ := tunnel(t, nil)
	echo(t, dial(t, d, tg.addr()), "first")
	for i := range 3 {
		s.Restart(t)
		echo(t, dial(t, d, tg.addr()), "after restart")
		if got := d.ConnectCount(); got != i+2 {
			t.Fatalf("SSH connections = %d, want %d", got, i+2)
		}
	}
}

func TestStoppedBastionDropsClient(t *testing.T) {
	s, tg, d, _ := tunnel(t, nil)
	c := dial(t, d, tg.addr())
	echo(t, c, "ping")

	s.Stop()
	eventually(t, 5*time.Second, "the dialer to drop its SSH client", func() bool { return !d.HasClient() })
	if err := echoErr(c, "ping"); err == nil {
		t.Errorf("tunnelled connection still works after the bastion stopped")
	}
	_, err := d.DialContext(context.Background(), "tcp", tg.addr())
	if !errors.Is(err, bastion.ErrUnreachable) {
		t.Fatalf("dial with the bastion down: err = %v, want ErrUnreachable", err)
	}
	if got := tg.accepted.Load(); got != 1 {
		t.Errorf("target accepted %d connections, want only the tunnelled one", got)
	}
}

func TestKeepaliveDetectsHungBastion(t *testing.T) {
	s, tg, d, logs := tunnel(t, func(cfg *bastion.Config) { cfg.KeepAlive = 200 * time.Millisecond })
	c := dial(t, d, tg.addr())
	echo(t, c, "ping")

	// A frozen server keeps TCP open, so only the keepalive can notice.
	s.Pause(t)
	eventually(t, 5*time.Second, "the keepalive to drop the SSH client", func() bool { return !d.HasClient() })
	if got := d.KeepaliveFailures(); got != 1 {
		t.Errorf("keepalive failures = %d, want 1", got)
	}
	if !strings.Contains(logs.String(), "keepalive unanswered") {
		t.Errorf("log does not explain the drop:\n%s", logs)
	}
	if err := echoErr(c, "ping"); err == nil {
		t.Errorf("tunnelled connection still works after its SSH client was dropped")
	}

	s.Resume(t)
	echo(t, dial(t, d, tg.addr()), "after resume")
	assertSSHConnections(t, d, 2)
}

func TestKeepaliveKeepsHealthyConnection(t *testing.T) {
	s, tg, d, _ := tunnel(t, func(cfg *bastion.Config) { cfg.KeepAlive = 50 * time.Millisecond })
	echo(t, dial(t, d, tg.addr()), "ping")
	// Wait until sshd has answered several keepalives.
	eventually(t, 5*time.Second, "sshd to receive keepalives", func() bool {
		return strings.Count(s.Log(), "keepalive@openssh.com") >= 3
	})
	if !d.HasClient() || d.KeepaliveFailures() != 0 || d.ConnectCount() != 1 {
		t.Errorf("healthy connection was dropped (client=%v failures=%d connects=%d)",
			d.HasClient(), d.KeepaliveFailures(), d.ConnectCount())
	}
}

func TestTargetRefusedKeepsClient(t *testing.T) {
	s := bastiontest.Start(t)
	d, _ := newDialer(t, s.BastionConfig())
	closed := closedPort(t)
	_, err := d.DialContext(context.Background(), "tcp", closed)
	if err == nil {
		t.Fatal("dial to a closed port through the bastion succeeded")
	}
	if errors.Is(err, bastion.ErrUnreachable) || errors.Is(err, bastion.ErrHostKey) {
		t.Errorf("refused target reported as a bastion failure: %v", err)
	}
	if !strings.Contains(err.Error(), closed) {
		t.Errorf("error %q does not name the target", err)
	}
	if !d.HasClient() || d.ConnectCount() != 1 {
		t.Errorf("a refused target must not discard the SSH connection")
	}
}

func TestCloseDialer(t *testing.T) {
	_, tg, d, _ := tunnel(t, nil)
	c := dial(t, d, tg.addr())
	echo(t, c, "ping")

	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := echoErr(c, "ping"); err == nil {
		t.Errorf("tunnelled connection works after Close")
	}
	if _, err := d.DialContext(context.Background(), "tcp", tg.addr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialContext after Close: err = %v, want net.ErrClosed", err)
	}
}

func TestUnsupportedNetwork(t *testing.T) {
	d, _ := newDialer(t, bastion.Config{Host: "bastion.invalid", KeyFile: writeKey(t), KnownHostsFile: bastiontest.EmptyKnownHostsFile(t)})
	if _, err := d.DialContext(context.Background(), "udp", "127.0.0.1:53"); err == nil {
		t.Fatal("udp dial succeeded")
	}
}

func TestAuthenticationFailure(t *testing.T) {
	s := bastiontest.Start(t)
	tg := newSilentTarget(t)
	cfg := s.BastionConfig()
	cfg.KeyFile = writeKey(t) // not in authorized_keys
	d, _ := newDialer(t, cfg)
	_, err := d.DialContext(context.Background(), "tcp", tg.addr())
	if err == nil {
		t.Fatal("dial with an unauthorized key succeeded")
	}
	t.Logf("error: %v", err)
	if errors.Is(err, bastion.ErrUnreachable) || errors.Is(err, bastion.ErrHostKey) {
		t.Errorf("authentication failure reported as %v", err)
	}
	for _, want := range []string{"ssh handshake", s.Addr, s.User(), "unable to authenticate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	tg.assertNoConnection(t)
}

func TestUserKeyTypes(t *testing.T) {
	cases := []struct {
		name string
		opts []bastiontest.Option
	}{
		{"ed25519-openssh", nil},
		{"ed25519-pkcs8-pem", []bastiontest.Option{bastiontest.WithPEMUserKey()}},
		{"rsa-openssh", []bastiontest.Option{bastiontest.WithRSAUserKey()}},
		{"rsa-pkcs1-pem", []bastiontest.Option{bastiontest.WithRSAUserKey(), bastiontest.WithPEMUserKey()}},
		{"ecdsa-openssh", []bastiontest.Option{bastiontest.WithECDSAUserKey()}},
		{"ecdsa-sec1-pem", []bastiontest.Option{bastiontest.WithECDSAUserKey(), bastiontest.WithPEMUserKey()}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, tg, d, _ := tunnel(t, nil, tc.opts...)
			echo(t, dial(t, d, tg.addr()), "ping")
		})
	}
}

func TestEncryptedUserKey(t *testing.T) {
	const passphrase = "correct horse battery staple"
	s := bastiontest.Start(t, bastiontest.WithEncryptedUserKey(passphrase))
	tg := newTCPTarget(t)

	t.Run("right passphrase", func(t *testing.T) {
		d, logs := newDialer(t, s.BastionConfig())
		echo(t, dial(t, d, tg.addr()), "ping")
		if strings.Contains(logs.String(), passphrase) {
			t.Errorf("log contains the passphrase")
		}
	})
	t.Run("missing passphrase", func(t *testing.T) {
		cfg := s.BastionConfig()
		cfg.KeyPassphrase = ""
		_, err := bastion.New(cfg, nil)
		if err == nil {
			t.Fatal("New accepted an encrypted key without passphrase")
		}
		for _, want := range []string{"encrypted", "BASTION_KEY_PASSPHRASE", s.KeyFile} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		assertNoSecrets(t, err, s.KeyFile, passphrase)
	})
	t.Run("wrong passphrase", func(t *testing.T) {
		const wrong = "hunter2-wrong-passphrase"
		cfg := s.BastionConfig()
		cfg.KeyPassphrase = wrong
		_, err := bastion.New(cfg, nil)
		if err == nil {
			t.Fatal("New accepted a wrong passphrase")
		}
		t.Logf("error: %v", err)
		if !strings.Contains(err.Error(), "wrong passphrase") {
			t.Errorf("error %q does not say the passphrase is wrong", err)
		}
		assertNoSecrets(t, err, s.KeyFile, passphrase, wrong)
	})
}

func TestPassphraseIgnoredForUnencryptedKey(t *testing.T) {
	_, tg, d, _ := tunnel(t, func(cfg *bastion.Config) { cfg.KeyPassphrase = "not needed" })
	echo(t, dial(t, d, tg.addr()), "ping")
}

// assertNoSecrets fails if err mentions any secret or any line of the key
// file's body.
func assertNoSecrets(t *testing.T, err error, keyFile string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error contains a secret: %q", err)
		}
	}
	key, rerr := os.ReadFile(keyFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	for _, line := range strings.Split(string(key), "\n") {
		if len(line) > 8 && !strings.HasPrefix(line, "-----") && strings.Contains(err.Error(), line) {
			t.Errorf("error contains key material: %q", err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t)
	known := bastiontest.EmptyKnownHostsFile(t)
	garbage := filepath.Join(dir, "garbage")
	const secretBody = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9n"
	if err := os.WriteFile(garbage, []byte("-----BEGIN OPENSSH PRIVATE KEY-----\n"+secretBody+"\n-----END OPENSSH PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		cfg  bastion.Config
		want []string
	}{
		{"no host", bastion.Config{KeyFile: key, KnownHostsFile: known}, []string{"BASTION_HOST"}},
		{"bad port", bastion.Config{Host: "h", Port: 70000, KeyFile: key, KnownHostsFile: known}, []string{"BASTION_PORT"}},
		{"no key", bastion.Config{Host: "h", KnownHostsFile: known}, []string{"PEM_FILE_LOCATION"}},
		{"missing key", bastion.Config{Host: "h", KeyFile: filepath.Join(dir, "nope"), KnownHostsFile: known}, []string{"PEM_FILE_LOCATION", "no such file"}},
		{"garbage key", bastion.Config{Host: "h", KeyFile: garbage, KnownHostsFile: known}, []string{"PEM_FILE_LOCATION", garbage}},
		{"missing known_hosts", bastion.Config{Host: "h", KeyFile: key, KnownHostsFile: filepath.Join(dir, "nope")}, []string{"BASTION_KNOWN_HOSTS", "no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bastion.New(tc.cfg, nil)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secretBody) {
				t.Errorf("error contains key material: %q", err)
			}
		})
	}
}

func TestDefaultKnownHostsUnderHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	_, err := bastion.New(bastion.Config{Host: "h", KeyFile: writeKey(t)}, nil)
	want := filepath.Join(home, ".ssh", "known_hosts")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want it to name %s", err, want)
	}
	if err := os.MkdirAll(filepath.Dir(want), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(want, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bastion.New(bastion.Config{Host: "h", KeyFile: writeKey(t)}, nil); err != nil {
		t.Fatalf("New with ~/.ssh/known_hosts: %v", err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
