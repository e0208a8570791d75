// Package bastiontest runs a real OpenSSH server (/usr/sbin/sshd) as a test
// bastion: it generates host and user keys in a temporary directory, writes
// an sshd_config that listens on 127.0.0.1 and allows TCP forwarding, and
// starts sshd as a child process that is killed when the test ends.
//
// On Debian/Ubuntu the server comes from the openssh-server package. Without
// it, Start skips the test, unless the environment variable CI is "true", in
// which case the test fails.
package bastiontest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bastion"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// SSHDPath is the OpenSSH server binary Start runs.
const SSHDPath = "/usr/sbin/sshd"

// privsepDir is the privilege separation directory sshd needs when run as
// root; Debian creates it from the service unit, which is not used here.
const privsepDir = "/run/sshd"

// startTimeout bounds how long Start waits for sshd to accept connections.
const startTimeout = 10 * time.Second

// KeyType selects the algorithm of the generated user key.
type KeyType string

// User key types.
const (
	Ed25519 KeyType = "ed25519"
	RSA     KeyType = "rsa"
	ECDSA   KeyType = "ecdsa"
)

// SSHD is a running test sshd. Its exported fields describe how to reach it
// and are fixed for its lifetime, across Restart, except HostKey, which
// ChangeHostKey replaces (together with the contents of KnownHostsFile).
type SSHD struct {
	// Addr is the address sshd listens on, "127.0.0.1:<Port>".
	Addr string
	// Host is the address's host, "127.0.0.1".
	Host string
	// Port is the port sshd listens on.
	Port int
	// KnownHostsFile is a known_hosts file listing HostKey for Addr.
	KnownHostsFile string
	// KeyFile is the user's private key, authorized for User().
	KeyFile string
	// KeyPassphrase is the passphrase KeyFile is encrypted with, or "".
	KeyPassphrase string
	// HostKeyFile is the server's ed25519 host private key.
	HostKeyFile string
	// HostKey is the public half of HostKeyFile.
	HostKey ssh.PublicKey
	// UserKey is the public half of KeyFile.
	UserKey ssh.PublicKey
	// Dir is the temporary directory holding all generated files.
	Dir string

	configFile string
	user       string
	log        *testenv.SyncBuffer

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been reaped
}

type options struct {
	keyType       KeyType
	passphrase    string
	pemFormat     bool
	extraHostKeys bool
}

// Option configures Start.
type Option func(*options)

// WithEncryptedUserKey writes the user key encrypted with passphrase, in
// OpenSSH format (aes256-ctr + bcrypt KDF, as ssh-keygen does).
func WithEncryptedUserKey(passphrase string) Option {
	return func(o *options) { o.passphrase = passphrase }
}

// WithUserKeyType selects the user key algorithm (default Ed25519).
func WithUserKeyType(t KeyType) Option {
	return func(o *options) { o.keyType = t }
}

// WithRSAUserKey is WithUserKeyType(RSA): a 2048-bit RSA user key.
func WithRSAUserKey() Option { return WithUserKeyType(RSA) }

// WithECDSAUserKey is WithUserKeyType(ECDSA): a P-256 ECDSA user key.
func WithECDSAUserKey() Option { return WithUserKeyType(ECDSA) }

// WithPEMUserKey writes the (unencrypted) user key in PEM format instead of
// OpenSSH format: PKCS#1 "RSA PRIVATE KEY" for RSA, SEC 1 "EC PRIVATE KEY"
// for ECDSA and PKCS#8 "PRIVATE KEY" for ed25519. It is ignored together
// with WithEncryptedUserKey.
func WithPEMUserKey() Option {
	return func(o *options) { o.pemFormat = true }
}

// WithExtraHostKeys makes sshd also offer ECDSA and RSA host keys, while
// KnownHostsFile still lists only the ed25519 one, as happens with real
// bastions whose known_hosts entry was recorded for a single key type.
func WithExtraHostKeys() Option {
	return func(o *options) { o.extraHostKeys = true }
}

// Start generates keys and an sshd_config in t.TempDir(), starts sshd on a
// free 127.0.0.1 port and waits until it accepts TCP connections. The server
// is stopped when the test ends. If sshd is not installed, the test is
// skipped, or failed when the environment variable CI is "true".
func Start(t testing.TB, opts ...Option) *SSHD {
	t.Helper()
	requireSSHD(t)
	o := options{keyType: Ed25519}
	for _, opt := range opts {
		opt(&o)
	}

	u, err := user.Current()
	if err != nil {
		t.Fatalf("bastiontest: current user: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(privsepDir, 0o755); err != nil {
			t.Fatalf("bastiontest: creating sshd privilege separation directory: %v", err)
		}
	}

	dir := t.TempDir()
	s := &SSHD{
		Host:          "127.0.0.1",
		Dir:           dir,
		KeyPassphrase: o.passphrase,
		user:          u.Username,
		log:           &testenv.SyncBuffer{},
		configFile:    filepath.Join(dir, "sshd_config"),
	}

	// Host keys.
	hostKey, hostPriv := mustEd25519(t)
	s.HostKey = hostKey
	s.HostKeyFile = filepath.Join(dir, "ssh_host_ed25519_key")
	writePrivateKey(t, s.HostKeyFile, hostPriv, false, "")
	hostKeyFiles := []string{s.HostKeyFile}
	if o.extraHostKeys {
		for name, key := range map[string]crypto.PrivateKey{
			"ssh_host_ecdsa_key": mustECDSA(t),
			"ssh_host_rsa_key":   mustRSA(t),
		} {
			path := filepath.Join(dir, name)
			writePrivateKey(t, path, key, false, "")
			hostKeyFiles = append(hostKeyFiles, path)
		}
	}

	// User key and authorized_keys.
	var userPriv crypto.PrivateKey
	switch o.keyType {
	case Ed25519:
		_, userPriv = mustEd25519(t)
	case RSA:
		userPriv = mustRSA(t)
	case ECDSA:
		userPriv = mustECDSA(t)
	default:
		t.Fatalf("bastiontest: unknown key type %q", o.keyType)
	}
	signer, err := ssh.NewSignerFromKey(userPriv)
	if err != nil {
		t.Fatalf("bastiontest: user key: %v", err)
	}
	s.UserKey = signer.PublicKey()
	s.KeyFile = filepath.Join(dir, "id_"+string(o.keyType))
	writePrivateKey(t, s.KeyFile, userPriv, o.pemFormat && o.passphrase == "", o.passphrase)
	authorizedKeys := filepath.Join(dir, "authorized_keys")
	writeFile(t, authorizedKeys, ssh.MarshalAuthorizedKey(s.UserKey), 0o600)

	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bastiontest: sshd output:\n%s", s.Log())
		}
	})
	t.Cleanup(s.Stop)

	// A free port can be taken by someone else before sshd binds it; retry
	// with another one in that case.
	var lastErr error
	for range 3 {
		s.Port = freePort(t)
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		writeFile(t, s.configFile, []byte(s.sshdConfig(hostKeyFiles, authorizedKeys)), 0o600)
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("bastiontest: %v\nsshd output:\n%s", lastErr, s.Log())
	}

	s.KnownHostsFile = filepath.Join(dir, "known_hosts")
	writeFile(t, s.KnownHostsFile, []byte(knownhosts.Line([]string{s.Addr}, s.HostKey)+"\n"), 0o600)
	return s
}

// requireSSHD skips or fails t when sshd is not installed.
func requireSSHD(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skipf("bastiontest: needs Linux (it manages sshd's processes through /proc), not %s", runtime.GOOS)
	}
	if _, err := os.Stat(SSHDPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("bastiontest: %s is required in CI (apt-get install openssh-server): %v", SSHDPath, err)
		}
		t.Skipf("bastiontest: %s not available (apt-get install openssh-server): %v", SSHDPath, err)
	}
}

// sshdConfig renders the server configuration. Only this file is read:
// nothing from /etc/ssh is included.
func (s *SSHD) sshdConfig(hostKeys []string, authorizedKeys string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "ListenAddress %s\n", s.Addr)
	for _, k := range hostKeys {
		fmt.Fprintf(&b, "HostKey %s\n", k)
	}
	fmt.Fprintf(&b, "PidFile %s\n", filepath.Join(s.Dir, "sshd.pid"))
	fmt.Fprintf(&b, "AuthorizedKeysFile %s\n", authorizedKeys)
	fmt.Fprintf(&b, "AllowUsers %s\n", s.user)
	b.WriteString(`AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
PermitOpen any
GatewayPorts no
X11Forwarding no
PermitTTY no
PermitUserRC no
StrictModes no
UsePAM no
UseDNS no
MaxStartups 100
LogLevel DEBUG1
`)
	return b.String()
}

// start launches sshd and waits until it accepts TCP connections.
func (s *SSHD) start() error {
	if out, err := exec.Command(SSHDPath, "-t", "-f", s.configFile).CombinedOutput(); err != nil {
		return fmt.Errorf("sshd -t rejected %s: %v: %s", s.configFile, err, out)
	}
	cmd := exec.Command(SSHDPath, "-D", "-e", "-f", s.configFile)
	cmd.Stdout = s.log
	cmd.Stderr = s.log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting sshd: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()

	deadline := time.Now().Add(startTimeout)
	for {
		c, err := net.DialTimeout("tcp", s.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("sshd did not accept connections on %s within %s: %v", s.Addr, startTimeout, err)
		}
		select {
		case <-exited:
			s.Stop()
			return fmt.Errorf("sshd exited before accepting connections on %s: %v", s.Addr, cmd.ProcessState)
		case <-time.After(10 * time.Millisecond): // poll interval
		}
	}
}

// Stop kills sshd and every per-connection process it forked, so that
// established SSH connections are cut as if the bastion went down. It is
// idempotent; the test's cleanup calls it too.
func (s *SSHD) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	pid := cmd.Process.Pid
	// Freeze the listener so it cannot fork while its children are
	// collected; connection processes call setsid(), so killing the
	// process group would miss them.
	_ = signal(pid, sigStop)
	children := descendants(pid)
	for _, c := range children {
		_ = signal(c, sigKill)
	}
	_ = cmd.Process.Kill()
	<-exited
	waitGone(children, 5*time.Second)
}

// Restart stops sshd and starts it again on the same port with the same
// host key and configuration: a bastion rebooting mid-run.
func (s *SSHD) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("bastiontest: restarting sshd: %v\nsshd output:\n%s", err, s.Log())
	}
}

// ChangeHostKey gives the server a new ed25519 host key, as when a bastion
// is rebuilt, and restarts it on the same port. HostKey and the contents of
// KnownHostsFile change to the new key, so a copy of KnownHostsFile taken
// before now fails verification with a key mismatch, and copying
// KnownHostsFile again fixes it (what an operator does after checking the
// new fingerprint). Call it from the test's goroutine: it is not safe to
// call concurrently with reads of HostKey.
func (s *SSHD) ChangeHostKey(t testing.TB) {
	t.Helper()
	hostKey, hostPriv := mustEd25519(t)
	s.Stop()
	writePrivateKey(t, s.HostKeyFile, hostPriv, false, "")
	s.HostKey = hostKey
	writeFile(t, s.KnownHostsFile, []byte(knownhosts.Line([]string{s.Addr}, s.HostKey)+"\n"), 0o600)
	if err := s.start(); err != nil {
		t.Fatalf("bastiontest: restarting sshd with a new host key: %v\nsshd output:\n%s", err, s.Log())
	}
}

// Pause freezes sshd and all its connection processes with SIGSTOP: TCP
// connections stay open but nothing answers, like a hung bastion or a
// silently dropped network path. Resume undoes it.
func (s *SSHD) Pause(t testing.TB) {
	t.Helper()
	s.signalAll(t, sigStop)
}

// Resume continues a paused sshd with SIGCONT.
func (s *SSHD) Resume(t testing.TB) {
	t.Helper()
	s.signalAll(t, sigCont)
}

func (s *SSHD) signalAll(t testing.TB, sig sysSignal) {
	t.Helper()
	s.mu.Lock()
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		t.Fatalf("bastiontest: sshd is not running")
	}
	pid := cmd.Process.Pid
	if err := signal(pid, sig); err != nil {
		t.Fatalf("bastiontest: signalling sshd: %v", err)
	}
	for _, c := range descendants(pid) {
		_ = signal(c, sig)
	}
}

// User returns the OS user to log in as: the user running the test (root
// in CI), whose login sshd allows with the generated key only.
func (s *SSHD) User() string { return s.user }

// Log returns everything sshd has written so far (LogLevel DEBUG1).
func (s *SSHD) Log() string { return s.log.String() }

// BastionConfig returns a bastion.Config for this server, using KeyFile,
// KeyPassphrase and KnownHostsFile.
func (s *SSHD) BastionConfig() bastion.Config {
	return bastion.Config{
		Host:           s.Host,
		Port:           s.Port,
		User:           s.user,
		KeyFile:        s.KeyFile,
		KeyPassphrase:  s.KeyPassphrase,
		KnownHostsFile: s.KnownHostsFile,
	}
}

// WrongKnownHostsFile writes a known_hosts file that lists a freshly
// generated ed25519 key, not the server's, for Addr, and returns its path:
// connecting with it must fail host key verification ("key mismatch").
func (s *SSHD) WrongKnownHostsFile(t testing.TB) string {
	t.Helper()
	wrong, _ := mustEd25519(t)
	path := filepath.Join(t.TempDir(), "known_hosts_wrong")
	writeFile(t, path, []byte(knownhosts.Line([]string{s.Addr}, wrong)+"\n"), 0o600)
	return path
}

// EmptyKnownHostsFile writes an empty known_hosts file and returns its path:
// every host is unknown with it.
func EmptyKnownHostsFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "known_hosts_empty")
	writeFile(t, path, nil, 0o600)
	return path
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("bastiontest: finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func mustEd25519(t testing.TB) (ssh.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("bastiontest: generating ed25519 key: %v", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatalf("bastiontest: %v", err)
	}
	return sshPub, priv
}

func mustRSA(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("bastiontest: generating RSA key: %v", err)
	}
	return k
}

func mustECDSA(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("bastiontest: generating ECDSA key: %v", err)
	}
	return k
}

// writePrivateKey writes key with mode 0600, in OpenSSH format (encrypted
// when passphrase is set) or, with pemFormat, in the classic PEM formats.
func writePrivateKey(t testing.TB, path string, key crypto.PrivateKey, pemFormat bool, passphrase string) {
	t.Helper()
	var block *pem.Block
	var err error
	switch {
	case passphrase != "":
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "bastiontest", []byte(passphrase))
	case !pemFormat:
		block, err = ssh.MarshalPrivateKey(key, "bastiontest")
	default:
		block, err = pemBlock(key)
	}
	if err != nil {
		t.Fatalf("bastiontest: encoding private key: %v", err)
	}
	writeFile(t, path, pem.EncodeToMemory(block), 0o600)
}

func pemBlock(key crypto.PrivateKey) (*pem.Block, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}, nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		return &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}, err
	case ed25519.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, err
	default:
		return nil, errors.New("unsupported key type")
	}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatalf("bastiontest: %v", err)
	}
}
