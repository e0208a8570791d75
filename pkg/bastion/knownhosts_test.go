package bastion_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion/bastiontest"
)

// copyFile writes the contents of src to dst (in place, as an editor does).
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// ownKnownHosts returns an edit for tunnel that points the dialer at a copy
// of the bastion's known_hosts file, and the copy's path, for the test to
// edit.
func ownKnownHosts(t *testing.T) (known string, edit func(*bastion.Config)) {
	known = filepath.Join(t.TempDir(), "known_hosts")
	return known, func(cfg *bastion.Config) {
		copyFile(t, cfg.KnownHostsFile, known)
		cfg.KnownHostsFile = known
	}
}

// dialErr dials addr through d with a 10s bound and returns the error,
// closing the connection if there was none.
func dialErr(d *bastion.Dialer, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
	}
	return err
}

// An operator fixes a host key mismatch by editing known_hosts: the running
// dialer must pick the fix up on its next attempt, without a restart.
func TestBastionKnownHostsFixedWhileRunning(t *testing.T) {
	s := bastiontest.Start(t)
	tg := newTCPTarget(t)
	known := filepath.Join(t.TempDir(), "known_hosts")
	copyFile(t, s.WrongKnownHostsFile(t), known)
	cfg := s.BastionConfig()
	cfg.KnownHostsFile = known
	d, logs := newDialer(t, cfg)

	err := dialErr(d, tg.addr())
	if !errors.Is(err, bastion.ErrHostKey) {
		t.Fatalf("dial with the wrong key in known_hosts: err = %v, want ErrHostKey", err)
	}
	if !strings.Contains(err.Error(), "CHANGED") || !strings.Contains(err.Error(), s.Addr) {
		t.Errorf("error %q does not say the key of %s changed", err, s.Addr)
	}
	if tg.accepted.Load() != 0 || strings.Contains(s.Log(), "Accepted publickey") {
		t.Fatalf("something got through despite the host key mismatch")
	}

	// The operator puts the right key in place; same Dialer, no restart.
	copyFile(t, s.KnownHostsFile, known)
	c := dial(t, d, tg.addr())
	echo(t, c, "trusted now")
	assertSSHConnections(t, d, 1)
	if got := tg.accepted.Load(); got != 1 {
		t.Errorf("target accepted %d connections, want 1", got)
	}
	if !strings.Contains(logs.String(), "bastion connected") {
		t.Errorf("no connection logged:\n%s", logs)
	}
}

// The host key algorithms offered to the server follow the file too: with
// an empty file (unknown host) the library defaults apply, which would pick
// the server's ECDSA key; once the ed25519 line is added only ed25519 is
// asked for, and verification succeeds.
func TestBastionKnownHostsEntryAddedWhileRunning(t *testing.T) {
	known := bastiontest.EmptyKnownHostsFile(t)
	s, tg, d, _ := tunnel(t, func(cfg *bastion.Config) { cfg.KnownHostsFile = known }, bastiontest.WithExtraHostKeys())

	err := dialErr(d, tg.addr())
	if !errors.Is(err, bastion.ErrHostKey) || !strings.Contains(err.Error(), "not in known_hosts") {
		t.Fatalf("dial with an empty known_hosts: err = %v, want an unknown-host ErrHostKey", err)
	}
	if d.HostKeyAlgorithms() != nil {
		t.Errorf("HostKeyAlgorithms = %v with no entry, want nil", d.HostKeyAlgorithms())
	}

	copyFile(t, s.KnownHostsFile, known)
	echo(t, dial(t, d, tg.addr()), "known now")
	if got, want := d.HostKeyAlgorithms(), []string{"ssh-ed25519"}; !slices.Equal(got, want) {
		t.Errorf("HostKeyAlgorithms after the edit = %v, want %v", got, want)
	}
}

// A known_hosts file that disappears (or cannot be read) between connections
// is a clear host key error naming the file and the variable; nothing is
// sent to the bastion or the target, and restoring the file is enough.
func TestBastionKnownHostsUnreadableOnReconnect(t *testing.T) {
	known, edit := ownKnownHosts(t)
	s, tg, d, _ := tunnel(t, edit)
	echo(t, dial(t, d, tg.addr()), "first")

	if err := os.Remove(known); err != nil {
		t.Fatal(err)
	}
	s.Restart(t) // the next dial has to reconnect
	eventually(t, 5*time.Second, "the dialer to drop its SSH client", func() bool { return !d.HasClient() })
	logins := strings.Count(s.Log(), "Accepted publickey")

	for range 2 {
		err := dialErr(d, tg.addr())
		if !errors.Is(err, bastion.ErrHostKey) {
			t.Fatalf("dial without a known_hosts file: err = %v, want ErrHostKey", err)
		}
		if errors.Is(err, bastion.ErrUnreachable) {
			t.Errorf("an unreadable known_hosts reported as an unreachable bastion: %v", err)
		}
		t.Logf("error: %v", err)
		for _, want := range []string{"host key", s.Addr, "BASTION_KNOWN_HOSTS", known, "no such file"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	}
	if got := strings.Count(s.Log(), "Accepted publickey"); got != logins {
		t.Errorf("the dialer logged in to the bastion without a known_hosts file")
	}
	if got := tg.accepted.Load(); got != 1 {
		t.Errorf("target accepted %d connections, want only the first", got)
	}

	copyFile(t, s.KnownHostsFile, known)
	echo(t, dial(t, d, tg.addr()), "restored")
	assertSSHConnections(t, d, 2)
}

// The bastion is rebuilt with a new host key while the dialer is connected:
// the reconnection is refused as a changed key until the operator updates
// known_hosts, and then succeeds without restarting anything.
func TestBastionRebuiltWithNewHostKey(t *testing.T) {
	known, edit := ownKnownHosts(t)
	s, tg, d, _ := tunnel(t, edit)
	echo(t, dial(t, d, tg.addr()), "before")
	oldKey := s.HostKey

	s.ChangeHostKey(t)
	if string(s.HostKey.Marshal()) == string(oldKey.Marshal()) {
		t.Fatal("ChangeHostKey kept the old key")
	}
	eventually(t, 5*time.Second, "the dialer to drop its SSH client", func() bool { return !d.HasClient() })
	err := dialErr(d, tg.addr())
	if !errors.Is(err, bastion.ErrHostKey) || !strings.Contains(err.Error(), "CHANGED") {
		t.Fatalf("dial after the host key changed: err = %v, want a changed-key ErrHostKey", err)
	}
	if got := tg.accepted.Load(); got != 1 {
		t.Errorf("target accepted %d connections, want only the one before the change", got)
	}

	copyFile(t, s.KnownHostsFile, known)
	echo(t, dial(t, d, tg.addr()), "after the operator's fix")
	assertSSHConnections(t, d, 2)
}
