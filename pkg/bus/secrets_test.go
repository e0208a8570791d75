package bus_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/config"
	"github.com/tenantcleanup/tenant-cleanup/pkg/service"
	"github.com/tenantcleanup/tenant-cleanup/pkg/testenv"
)

// authServer is an embedded nats-server with JetStream that requires
// authentication, restartable on the same port and store.
type authServer struct {
	t    *testing.T
	opts server.Options
	srv  *server.Server
	port int
}

func startAuthServer(t *testing.T, auth func(*server.Options)) *authServer {
	t.Helper()
	a := &authServer{t: t, port: -1, opts: server.Options{
		ServerName: "auth", Host: "127.0.0.1", JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	}}
	auth(&a.opts)
	a.start()
	t.Cleanup(a.shutdown)
	return a
}

func (a *authServer) start() {
	a.t.Helper()
	opts := a.opts
	opts.Port = a.port
	s, err := server.NewServer(&opts)
	if err != nil {
		a.t.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		a.t.Fatal("nats-server did not start")
	}
	a.srv = s
	a.port = s.Addr().(*net.TCPAddr).Port
}

func (a *authServer) shutdown() {
	if a.srv != nil {
		a.srv.Shutdown()
		a.srv.WaitForShutdown()
		a.srv = nil
	}
}

func (a *authServer) restart() {
	a.t.Helper()
	a.shutdown()
	a.start()
}

// deadPort is a loopback port nobody listens on.
func deadPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// noSecrets fails the test when out holds any of the secrets.
func noSecrets(t *testing.T, what, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s shows the secret %q:\n%s", what, s, out)
		}
	}
}

// An nkey user of the tests (a seed made for them, trusted by nothing else).
const (
	testUserSeed = "SUAMBBUMVPAGEODKLRPCIJF5BSZNHBVFXWH2VLD5TDVJCPIZKCIXRRRJDM"
	testUserPub  = "UBNYH54KNJ7TGDLARAAL3O5D2HTWAO245TAIALNRLXNUV2BIC5HOLO44"
)

// TestSecretsStayOutOfLogsErrorsAndHelp connects to real nats-servers that
// require a token, a user and password, an nkey, and a credentials file,
// through URL lists with secrets in every URL; restarts the server so that
// the client logs its reconnection; fails to connect in the ways an
// operator can get wrong; and prints a service's -h. No secret may appear
// in the logs, the errors or the help.
func TestSecretsStayOutOfLogsErrorsAndHelp(t *testing.T) {
	dir := t.TempDir()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, []byte(testUserSeed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	credsFile, credsSecrets, operator := operatorSetup(t, dir)

	tests := []struct {
		name    string
		auth    func(*server.Options)
		url     func(port, dead int) string
		opts    bus.Options
		secrets []string
		shown   string // in the reconnect log line
	}{{
		name: "token",
		auth: func(o *server.Options) { o.Authorization = "tok-S3CRET-a1" },
		url: func(port, dead int) string {
			return fmt.Sprintf("nats://tok-S3CRET-dead@127.0.0.1:%d, nats://tok-S3CRET-a1@127.0.0.1:%d", dead, port)
		},
		secrets: []string{"tok-S3CRET-a1", "tok-S3CRET-dead", "S3CRET"},
		shown:   "nats://xxxxx@127.0.0.1:",
	}, {
		name: "user and password",
		auth: func(o *server.Options) { o.Users = []*server.User{{Username: "alice", Password: "pw-S3CRET-b2"}} },
		url: func(port, dead int) string {
			return fmt.Sprintf("nats://bob:pw-S3CRET-dead@127.0.0.1:%d,nats://alice:pw-S3CRET-b2@127.0.0.1:%d", dead, port)
		},
		secrets: []string{"pw-S3CRET-b2", "pw-S3CRET-dead", "S3CRET"},
		shown:   "nats://alice:xxxxx@127.0.0.1:",
	}, {
		name:    "nkey seed file",
		auth:    func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: testUserPub}} },
		url:     func(port, _ int) string { return fmt.Sprintf("nats://127.0.0.1:%d", port) },
		opts:    bus.Options{NkeySeed: seedFile},
		secrets: []string{testUserSeed, testUserSeed[:20]},
		shown:   "nats://127.0.0.1:",
	}, {
		name:    "credentials file",
		auth:    operator,
		url:     func(port, _ int) string { return fmt.Sprintf("nats://127.0.0.1:%d", port) },
		opts:    bus.Options{Creds: credsFile},
		secrets: credsSecrets,
		shown:   "nats://127.0.0.1:",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startAuthServer(t, tt.auth)
			url := tt.url(srv.port, deadPort(t))
			logs := &testenv.SyncBuffer{}
			opts := tt.opts
			opts.Name, opts.Log = "secrets-test", slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx := context.Background()
			b, err := bus.Connect(ctx, url, opts)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			t.Cleanup(b.Close)
			if _, err := b.JetStream().AccountInfo(ctx); err != nil {
				t.Fatalf("JetStream through the authenticated connection: %v", err)
			}

			srv.restart()
			testenv.Eventually(t, 20*time.Second, func() bool {
				return strings.Contains(logs.String(), "reconnected to NATS")
			}, "the client logs its reconnection")
			out := logs.String()
			noSecrets(t, "the log", out, tt.secrets)
			if !strings.Contains(out, `"server":"`+tt.shown) {
				t.Errorf("the reconnect log does not name the server as %s…:\n%s", tt.shown, out)
			}
			t.Logf("log:\n%s", out)

			// The ways to get the connection wrong, each with the secrets in
			// the configuration.
			wrong := []struct {
				name, url string
				opts      bus.Options
			}{
				{"no server listening", tt.url(deadPort(t), deadPort(t)), tt.opts},
				{"wrong token", fmt.Sprintf("nats://S3CRET-wrong-token@127.0.0.1:%d", srv.port), bus.Options{}},
				{"wrong password", fmt.Sprintf("nats://alice:S3CRET-wrong-pw@127.0.0.1:%d", srv.port), bus.Options{}},
				{"malformed token", fmt.Sprintf("nats://S3CRET bad token@127.0.0.1:%d", srv.port), bus.Options{}},
				{"malformed password", fmt.Sprintf("nats://alice:S3CRET%%zz@127.0.0.1:%d,nats://127.0.0.1:1", srv.port), bus.Options{}}, // "invalid URL escape "%zz""
			}
			for _, w := range wrong {
				w.opts.Name, w.opts.Log = "secrets-test", opts.Log
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				b, err := bus.Connect(cctx, w.url, w.opts)
				cancel()
				if err == nil {
					b.Close()
					t.Errorf("%s: connected", w.name)
					continue
				}
				noSecrets(t, w.name+": the error", err.Error(), append(tt.secrets, "S3CRET", "%zz"))
				t.Logf("%s: %v", w.name, err)
			}
			noSecrets(t, "the log", logs.String(), append(tt.secrets, "S3CRET"))

			// -h of a service with these settings.
			t.Setenv("NATS_URL", url)
			t.Setenv("NATS_CREDS", tt.opts.Creds)
			t.Setenv("NATS_NKEY_SEED", tt.opts.NkeySeed)
			var help bytes.Buffer
			if _, err := service.Flags("cleaner", "cleans", &config.Cleaner{}, []string{"-h"}, &help, nil); !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("-h: %v", err)
			}
			noSecrets(t, "-h", help.String(), tt.secrets)
			if !strings.Contains(help.String(), "NATS_URL") {
				t.Errorf("-h lacks NATS_URL:\n%s", help.String())
			}
		})
	}
}

// operatorSetup builds a NATS operator, an account with JetStream and a user
// of it, writes the user's credentials file, and returns its path, the
// secrets in it, and the server options that trust the operator.
func operatorSetup(t *testing.T, dir string) (string, []string, func(*server.Options)) {
	t.Helper()
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	if oc, err = jwt.DecodeOperatorClaims(ojwt); err != nil {
		t.Fatal(err)
	}
	skp, _ := nkeys.CreateAccount() // the system account JetStream needs
	spub, _ := skp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	useed, _ := ukp.Seed()
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "user.creds")
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		t.Fatal(err)
	}
	jwtParts := strings.Split(ujwt, ".")
	return path, []string{string(useed), string(useed[:20]), ujwt, jwtParts[1], jwtParts[2]}, func(o *server.Options) {
		resolver := &server.MemAccResolver{}
		if err := errors.Join(resolver.Store(apub, ajwt), resolver.Store(spub, sjwt)); err != nil {
			t.Fatal(err)
		}
		o.TrustedOperators = []*jwt.OperatorClaims{oc}
		o.AccountResolver = resolver
		o.SystemAccount = spub
	}
}
