// Package bastion provides an SSH dialer that reaches network services (the
// control-plane PostgreSQL in particular) only through an SSH bastion host,
// the way the operators' original scripts did with "ssh -L".
//
// A [Dialer] keeps one shared SSH connection to the bastion, opened lazily on
// the first [Dialer.DialContext], kept alive with keepalive@openssh.com
// requests and re-established transparently after it dies. Every connection
// returned by DialContext is a "direct-tcpip" channel of that SSH connection:
// the dialer never connects to the target directly and never opens a local
// listening port.
//
// The bastion's host key is always verified against a known_hosts file; an
// unknown or changed key is refused with an error wrapping [ErrHostKey]. The
// file is read again before every connection attempt, so an operator who
// fixes it (after a bastion was rebuilt, say) does not have to restart the
// service: the next attempt uses the corrected file.
//
// Use it with pgx by setting the DialFunc of a pgconn.Config, together with a
// LookupFunc that returns the host unchanged so that the database host name is
// resolved by the bastion rather than locally:
//
//	cfg.DialFunc = d.DialContext
//	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) {
//		return []string{host}, nil
//	}
package bastion

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// Defaults applied by [New] to zero-valued [Config] fields.
const (
	DefaultPort           = 22
	DefaultUser           = "ec2-user"
	DefaultKnownHostsFile = "~/.ssh/known_hosts"
	DefaultKeepAlive      = 15 * time.Second
	DefaultDialTimeout    = 10 * time.Second
)

// keepaliveRequest is the global request OpenSSH clients send as
// ServerAliveInterval probes; servers answer it (with a failure reply), which
// proves the connection is alive.
const keepaliveRequest = "keepalive@openssh.com"

// minKeepaliveTimeout bounds how quickly an unanswered keepalive is treated as
// a dead connection, so that a tiny KeepAlive cannot cause spurious drops.
const minKeepaliveTimeout = time.Second

// ErrHostKey is wrapped by errors returned when the bastion's host key could
// not be verified: the host is not in the known_hosts file, its key changed
// (a possible man-in-the-middle attack) or the key is revoked. The
// underlying *knownhosts.KeyError or *knownhosts.RevokedError is wrapped too.
var ErrHostKey = errors.New("bastion host key verification failed")

// ErrUnreachable is wrapped by errors returned when the bastion could not be
// reached: the TCP connection failed, timed out or was cut during the SSH
// handshake. Authentication failures do not wrap it.
var ErrUnreachable = errors.New("bastion unreachable")

// Config describes how to reach the bastion. Another package fills it from the
// environment; the comments name the variables.
type Config struct {
	// Host is the bastion's host name or IP address (BASTION_HOST). Required.
	Host string
	// Port is the bastion's SSH port (BASTION_PORT); 0 means 22.
	Port int
	// User is the SSH user (BASTION_USER); empty means "ec2-user".
	User string
	// KeyFile is the path of the private key (PEM_FILE_LOCATION): ed25519,
	// RSA or ECDSA, in OpenSSH or PEM format, optionally encrypted. A leading
	// "~/" is expanded to the home directory.
	KeyFile string
	// KeyPassphrase decrypts an encrypted KeyFile (BASTION_KEY_PASSPHRASE).
	// It is ignored for an unencrypted key.
	KeyPassphrase string
	// KnownHostsFile is the OpenSSH known_hosts file the bastion's host key is
	// verified against (BASTION_KNOWN_HOSTS); empty means
	// "~/.ssh/known_hosts". A leading "~/" is expanded to the home directory.
	KnownHostsFile string
	// KeepAlive is the interval of keepalive@openssh.com requests on the SSH
	// connection; 0 means 15s. A keepalive left unanswered for twice the
	// interval (at least one second) marks the connection dead.
	KeepAlive time.Duration
	// DialTimeout bounds the TCP connect plus the SSH handshake to the
	// bastion; 0 means 10s.
	DialTimeout time.Duration
}

// Dialer opens connections through an SSH bastion. It is safe for
// concurrent use. Create it with [New] and release it with [Dialer.Close].
type Dialer struct {
	hostport       string // bastion address, host:port
	user           string
	knownHostsFile string
	keepAlive      time.Duration
	dialTimeout    time.Duration
	auth           []ssh.AuthMethod
	log            *slog.Logger

	// connecting is a one-slot semaphore serialising the establishment of
	// the shared SSH connection; unlike a mutex, waiting for it respects the
	// caller's context.
	connecting chan struct{}

	mu                sync.Mutex // guards the fields below
	sess              *session   // current SSH connection, nil when none
	closed            bool
	connects          int // successful SSH connections so far
	keepaliveFailures int // connections dropped because a keepalive failed
	// hostKeyAlgorithms are the algorithms derived from the known_hosts
	// file when it was last read.
	hostKeyAlgorithms []string
}

// session is one SSH connection to the bastion together with its monitors.
type session struct {
	client *ssh.Client
	done   chan struct{} // closed when the session is discarded
	once   sync.Once
}

// New validates cfg, reads the private key and the known_hosts file and
// returns a Dialer. It does not contact the bastion: the SSH connection is
// opened on the first DialContext. A nil log discards log output.
//
// The known_hosts file is read here only to report a missing or malformed
// file at start; every connection attempt reads it again.
//
// Errors name the offending file and environment variable but never contain
// key material or the passphrase.
func New(cfg Config, log *slog.Logger) (*Dialer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host := strings.TrimSpace(cfg.Host)
	if host == "" {
		return nil, errors.New("bastion: no bastion host configured (BASTION_HOST)")
	}
	port := cfg.Port
	if port == 0 {
		port = DefaultPort
	}
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("bastion: invalid port %d (BASTION_PORT)", cfg.Port)
	}
	user := cfg.User
	if user == "" {
		user = DefaultUser
	}
	keepAlive := cfg.KeepAlive
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	hostport := net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))

	keyFile, err := expandHome(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("bastion: private key file (PEM_FILE_LOCATION): %w", err)
	}
	signer, err := loadSigner(keyFile, cfg.KeyPassphrase)
	if err != nil {
		return nil, err
	}

	knownHostsFile := cfg.KnownHostsFile
	if knownHostsFile == "" {
		knownHostsFile = DefaultKnownHostsFile
	}
	knownHostsFile, err = expandHome(knownHostsFile)
	if err != nil {
		return nil, fmt.Errorf("bastion: known_hosts file (BASTION_KNOWN_HOSTS): %w", err)
	}
	_, hostKeyAlgorithms, err := loadKnownHosts(knownHostsFile, hostport)
	if err != nil {
		return nil, fmt.Errorf("bastion: reading known_hosts file (BASTION_KNOWN_HOSTS): %w", err)
	}

	d := &Dialer{
		hostport:       hostport,
		user:           user,
		knownHostsFile: knownHostsFile,
		keepAlive:      keepAlive,
		dialTimeout:    dialTimeout,
		auth:           []ssh.AuthMethod{ssh.PublicKeys(signer)},
		log:            log.With("bastion", hostport),
		connecting:     make(chan struct{}, 1),

		hostKeyAlgorithms: hostKeyAlgorithms,
	}
	return d, nil
}

// clientConfig reads the known_hosts file afresh and returns the SSH client
// configuration for one connection attempt. An unreadable or malformed file
// is a host key verification failure (wrapping ErrHostKey): the key cannot
// be verified, so nothing is sent to the bastion.
func (d *Dialer) clientConfig() (*ssh.ClientConfig, error) {
	callback, algos, err := loadKnownHosts(d.knownHostsFile, d.hostport)
	if err != nil {
		return nil, fmt.Errorf("%w for %s: cannot read known_hosts file (BASTION_KNOWN_HOSTS): %w", ErrHostKey, d.hostport, err)
	}
	d.mu.Lock()
	d.hostKeyAlgorithms = algos
	d.mu.Unlock()
	return &ssh.ClientConfig{
		User:              d.user,
		Auth:              d.auth,
		HostKeyCallback:   d.hostKeyChecker(callback),
		HostKeyAlgorithms: algos,
	}, nil
}

// DialContext connects to addr (for example "db.internal:5432") from the
// bastion, through the shared SSH connection, which it opens first if
// needed. network is "tcp", "tcp4", "tcp6" or "unix" (a socket path on the
// bastion). The host name in addr is resolved by the bastion, not locally.
//
// It never connects to addr directly. If the shared SSH connection turns out
// to be dead, it is discarded and the dial is retried once on a fresh one.
// ctx bounds the whole operation, including the SSH handshake.
//
// The returned net.Conn supports deadlines (pgx relies on them to cancel
// queries) and its RemoteAddr reports network and addr as given.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, fmt.Errorf("bastion: dial %s %s: unsupported network", network, addr)
	}
	for attempt := 0; ; attempt++ {
		s, fresh, err := d.session(ctx)
		if err != nil {
			return nil, err
		}
		ch, err := s.client.DialContext(ctx, network, addr)
		if err == nil {
			return newTunnelConn(ch, network, addr), nil
		}
		var rejected *ssh.OpenChannelError
		switch {
		case errors.As(err, &rejected):
			// The bastion is fine; it could not reach addr (or refused to).
			d.log.Warn("bastion could not open tunnel", "network", network, "target", addr, "err", err)
			return nil, fmt.Errorf("bastion: dial %s %s via %s: %w", network, addr, d.hostport, err)
		case ctx.Err() != nil:
			return nil, fmt.Errorf("bastion: dial %s %s via %s: %w", network, addr, d.hostport, ctx.Err())
		}
		// Anything else means the SSH connection itself is broken.
		d.discard(s, fmt.Sprintf("opening a channel failed: %v", err), false)
		if fresh || attempt > 0 {
			return nil, fmt.Errorf("%w: %s: dial %s %s: %w", ErrUnreachable, d.hostport, network, addr, err)
		}
	}
}

// Close closes the shared SSH connection, and with it every connection
// returned by DialContext, and makes later DialContext calls fail with an
// error wrapping net.ErrClosed. It is safe to call more than once.
func (d *Dialer) Close() error {
	d.mu.Lock()
	d.closed = true
	s := d.sess
	d.sess = nil
	d.mu.Unlock()
	if s != nil {
		d.discard(s, "dialer closed", false)
	}
	return nil
}

// session returns the current SSH connection, establishing one if there is
// none. fresh reports whether it was established by this call.
func (d *Dialer) session(ctx context.Context) (s *session, fresh bool, err error) {
	select {
	case d.connecting <- struct{}{}:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("bastion: waiting for the connection to %s: %w", d.hostport, ctx.Err())
	}
	defer func() { <-d.connecting }()

	d.mu.Lock()
	closed, s := d.closed, d.sess
	d.mu.Unlock()
	if closed {
		return nil, false, fmt.Errorf("bastion: dialer for %s closed: %w", d.hostport, net.ErrClosed)
	}
	if s != nil {
		return s, false, nil
	}

	client, err := d.connect(ctx)
	if err != nil {
		d.log.Warn("bastion connection failed", "err", err)
		return nil, false, err
	}
	s = &session{client: client, done: make(chan struct{})}

	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		client.Close()
		return nil, false, fmt.Errorf("bastion: dialer for %s closed: %w", d.hostport, net.ErrClosed)
	}
	d.sess = s
	d.connects++
	n := d.connects
	d.mu.Unlock()

	if n == 1 {
		d.log.Info("bastion connected", "user", d.user)
	} else {
		d.log.Info("bastion reconnected", "user", d.user, "connections", n)
	}
	go d.watch(s)
	go d.keepalive(s)
	return s, true, nil
}

// connect reads the known_hosts file, dials the bastion and performs the
// SSH handshake, the last two bounded by ctx and the dial timeout.
func (d *Dialer) connect(ctx context.Context) (*ssh.Client, error) {
	sshConfig, err := d.clientConfig()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.dialTimeout)
	defer cancel()

	var nd net.Dialer
	raw, err := nd.DialContext(ctx, "tcp", d.hostport)
	if err != nil {
		return nil, d.unreachable(ctx, err)
	}
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	// Cancelling ctx interrupts the handshake by expiring the deadline.
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })

	conn, chans, reqs, err := ssh.NewClientConn(raw, d.hostport, sshConfig)
	if !stop() && err == nil {
		// ctx ended just as the handshake completed; honour it.
		conn.Close()
		return nil, d.unreachable(ctx, ctx.Err())
	}
	if err != nil {
		raw.Close()
		var hk *hostKeyError
		if errors.As(err, &hk) {
			return nil, hk
		}
		if ctx.Err() != nil || isNetworkError(err) {
			return nil, d.unreachable(ctx, err)
		}
		return nil, fmt.Errorf("bastion: ssh handshake with %s as user %q failed: %w", d.hostport, d.user, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return ssh.NewClient(conn, chans, reqs), nil
}

// unreachable wraps err in ErrUnreachable, adding ctx's error when ctx ended.
func (d *Dialer) unreachable(ctx context.Context, err error) error {
	if deadline, ok := ctx.Deadline(); ok && ctx.Err() == nil && !time.Now().Before(deadline) {
		// A socket deadline derived from ctx fired a moment before ctx's
		// own timer; wait for it so the error reports the expiry.
		<-ctx.Done()
	}
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		return fmt.Errorf("%w: %s: %w (%w)", ErrUnreachable, d.hostport, err, ctxErr)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, d.hostport, err)
}

// isNetworkError reports whether a handshake error was caused by the
// transport (connection closed, reset or timed out) rather than by the SSH
// protocol (authentication, algorithm negotiation).
func isNetworkError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, os.ErrDeadlineExceeded)
}

// watch discards s when its SSH connection ends.
func (d *Dialer) watch(s *session) {
	err := s.client.Wait()
	reason := "connection closed"
	if err != nil && !errors.Is(err, io.EOF) {
		reason = fmt.Sprintf("connection closed: %v", err)
	}
	d.discard(s, reason, false)
}

// keepalive sends keepalive@openssh.com requests on s every d.keepAlive and
// discards s when one fails or stays unanswered for too long.
func (d *Dialer) keepalive(s *session) {
	timeout := max(2*d.keepAlive, minKeepaliveTimeout)
	ticker := time.NewTicker(d.keepAlive)
	defer ticker.Stop()
	reply := make(chan error, 1)
	for {
		select {
		case <-s.done:
			return
		case <-ticker.C:
		}
		go func() {
			_, _, err := s.client.SendRequest(keepaliveRequest, true, nil)
			reply <- err
		}()
		timer := time.NewTimer(timeout)
		select {
		case <-s.done:
			timer.Stop()
			return
		case err := <-reply:
			timer.Stop()
			if err != nil {
				d.discard(s, fmt.Sprintf("keepalive failed: %v", err), true)
				return
			}
		case <-timer.C:
			// Closing the client (in discard) unblocks SendRequest.
			d.discard(s, fmt.Sprintf("keepalive unanswered for %s", timeout), true)
			return
		}
	}
}

// discard closes s and forgets it, so that the next DialContext opens a new
// SSH connection. Only the first call for a session has an effect; it logs
// one line if s was the current connection.
func (d *Dialer) discard(s *session, reason string, keepaliveFailure bool) {
	s.once.Do(func() {
		close(s.done)
		d.mu.Lock()
		current := d.sess == s
		if current {
			d.sess = nil
		}
		if keepaliveFailure {
			d.keepaliveFailures++
		}
		closed := d.closed
		d.mu.Unlock()
		s.client.Close()
		if closed {
			d.log.Debug("bastion connection closed", "reason", reason)
		} else if current {
			d.log.Warn("bastion connection lost", "reason", reason)
		}
	})
}

// expandHome replaces a leading "~" or "~/" in path with the home directory.
func expandHome(path string) (string, error) {
	if path != "~" && !strings.HasPrefix(path, "~/") {
		return path, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expanding %q: %w", path, err)
	}
	return filepath.Join(home, strings.TrimPrefix(path, "~")), nil
}
