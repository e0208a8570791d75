package testenv

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server of the test's own (the Debian package's binary)
// on a loopback port, without persistence: stopping it loses its keys,
// pausing it keeps them.
type Redis struct {
	// Addr is host:port.
	Addr string
	Port int
	// Password is the requirepass it was started with ("" for none).
	Password string
	// CAFile is the PEM file of the CA that signed its certificate, when
	// it serves TLS (RedisOptions.TLS); "" otherwise.
	CAFile string

	opts RedisOptions
	dir  string
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
	t    testing.TB
}

// RedisOptions say how StartRedisWith configures the server.
type RedisOptions struct {
	// Password, when set, is required of clients (requirepass).
	Password string
	// TLS serves TLS only, with a certificate for 127.0.0.1 and localhost
	// signed by a CA made for the test (Redis.CAFile).
	TLS bool
}

// StartRedis starts a plain redis-server for t; it is killed when t ends.
func StartRedis(t testing.TB) *Redis { return StartRedisWith(t, RedisOptions{}) }

// StartRedisWith starts a redis-server configured by o; it is killed when
// t ends.
func StartRedisWith(t testing.TB, o RedisOptions) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("testenv: no redis-server on PATH (apt-get install redis-server)")
	}
	r := &Redis{Port: freePort(t), Password: o.Password, opts: o, dir: t.TempDir(), bin: bin, t: t}
	r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port))
	if o.TLS {
		r.CAFile = writeTestCerts(t, r.dir)
	}
	t.Cleanup(r.kill)
	r.Start()
	return r
}

// Start starts the server (again, empty, on the same port) and waits until
// it answers.
func (r *Redis) Start() {
	r.t.Helper()
	args := []string{
		"--bind", "127.0.0.1", "--dir", r.dir, "--save", "", "--appendonly", "no",
		"--daemonize", "no", "--protected-mode", "no",
		"--logfile", filepath.Join(r.dir, "redis.log"),
	}
	if !r.opts.TLS {
		args = append(args, "--port", strconv.Itoa(r.Port))
	} else {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(r.Port),
			"--tls-cert-file", filepath.Join(r.dir, "server.pem"),
			"--tls-key-file", filepath.Join(r.dir, "server.key"),
			"--tls-ca-cert-file", r.CAFile, "--tls-auth-clients", "no")
	}
	if r.Password != "" {
		args = append(args, "--requirepass", r.Password)
	}
	cmd := exec.Command(r.bin, args...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("testenv: redis-server: %v", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(r.done)
	Eventually(r.t, 20*time.Second, func() bool {
		select {
		case <-r.done:
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("testenv: redis-server exited:\n%s", log)
		default:
		}
		return r.answers()
	}, "redis-server on %s answers", r.Addr)
}

// answers reports whether the server replies to PING (NOAUTH is a reply).
func (r *Redis) answers() bool {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return false
	}
	if r.opts.TLS {
		pool := x509.NewCertPool()
		pem, _ := os.ReadFile(r.CAFile)
		pool.AppendCertsFromPEM(pem)
		c = tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line != ""
}

// Stop kills the server at once; its keys are lost.
func (r *Redis) Stop() {
	r.t.Helper()
	r.kill()
}

func (r *Redis) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill() // works on a paused process too
	<-r.done
	r.cmd = nil
}

// Pause stops the server's process (SIGSTOP): connections stay open and
// new ones are accepted by the kernel, but nothing is answered until
// Resume, as with a server that hangs.
func (r *Redis) Pause() { r.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (r *Redis) Resume() { r.signal(syscall.SIGCONT) }

func (r *Redis) signal(sig syscall.Signal) {
	r.t.Helper()
	if r.cmd == nil {
		r.t.Fatal("testenv: redis-server is not running")
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		r.t.Fatalf("testenv: redis-server: %v: %v", sig, err)
	}
}

// String describes the server for test messages.
func (r *Redis) String() string { return fmt.Sprintf("redis-server on %s", r.Addr) }
