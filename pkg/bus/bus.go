// Package bus owns everything the services say to each other over NATS
// JetStream: the subjects and streams (defined here and nowhere else), the
// server version check, publishing requests, drain checks and events, and the
// consume loop that turns a handler's error into an acknowledgement verb.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantcleanup/tenant-cleanup/internal/redact"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// Subjects. SubjectCandidate is public API, and the only subject anybody
// outside the pipeline may publish to: operators publish bare tenant ids on
// it with `nats pub`. Everything else is the services' own (docs/bus.md).
const (
	SubjectCandidate      = "tenant.cleanup.candidate"
	subjectSchedulePrefix = "tenant.cleanup.schedule." // + tenant id: the one pending schedule of a tenant
	subjectDrainPrefix    = "tenant.cleanup.drain."    // + tenant id: a due drain check
	subjectEventPrefix    = "tenant.cleanup.event."    // + outcome
	subjectDeadPrefix     = "tenant.cleanup.dead."     // + consumer: messages that failed too often
)

// Streams and durable consumers (their configuration is in streams.go).
const (
	// StreamRequests holds the cleanup requests published on
	// SubjectCandidate until the marker has handled them (work-queue
	// retention). It is the only stream a message from outside can reach,
	// and it honours no header that could touch another message.
	StreamRequests = "TENANT_CLEANUP_REQUESTS"
	// StreamWork holds the pipeline's own work: drain-check schedules and due
	// drain checks (consumed by cleaner). Work-queue retention: a message is
	// gone once acknowledged.
	StreamWork = "TENANT_CLEANUP"
	// StreamEvents keeps outcome events for EventRetention (and within a
	// size bound).
	StreamEvents = "TENANT_CLEANUP_EVENTS"
	// StreamDead keeps messages that failed too often, with the reason,
	// until an operator replays or discards them (tenantctl dead).
	StreamDead = "TENANT_CLEANUP_DEAD"

	ConsumerMarker  = "marker"
	ConsumerCleaner = "cleaner"
)

// EventRetention is how long outcome events are kept.
const EventRetention = 30 * 24 * time.Hour

// RefusedStateTTL is how long the state of a refused tenant is kept after
// its last refusal (anybody may request any id, so these would otherwise
// accumulate).
const RefusedStateTTL = 24 * time.Hour

// ScheduleSubject is the subject of the tenant's pending drain-check schedule.
func ScheduleSubject(id tenant.ID) string { return subjectSchedulePrefix + string(id) }

// DrainSubject is the subject a tenant's drain check is delivered on.
func DrainSubject(id tenant.ID) string { return subjectDrainPrefix + string(id) }

// EventSubject is the subject events of one outcome are published on.
func EventSubject(o tenant.Outcome) string { return subjectEventPrefix + string(o) }

// EventSubjects matches every event subject; DrainSubjects every drain subject.
const (
	EventSubjects = subjectEventPrefix + ">"
	DrainSubjects = subjectDrainPrefix + "*"
)

// MinServerVersion is the oldest nats-server with message scheduling.
const MinServerVersion = "2.12.0"

// Options configure Connect.
type Options struct {
	// Name identifies the client to the server (service name).
	Name string
	// Creds is the path of a NATS credentials file (user JWT and nkey
	// seed), NkeySeed the path of an nkey seed file; empty: not used. Their
	// contents, like the secrets in the URL, never appear in logs or errors.
	Creds, NkeySeed string
	// Replicas of the streams; 1 for a single server, 3 for a cluster.
	Replicas int
	// NoUpdate creates missing streams and buckets but leaves existing ones
	// as they are (tenantctl: it must not change what the services set up).
	NoUpdate bool
	// RefusedStateTTL overrides RefusedStateTTL (tests; at least 1s).
	RefusedStateTTL time.Duration
	Log             *slog.Logger
}

// Bus is a connection to JetStream with the streams in place. Whatever
// vanishes later (a stream, a bucket, a consumer) it recreates when it next
// needs it.
type Bus struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	work       jetstream.Stream
	dead       jetstream.Stream
	state      jetstream.KeyValue
	failures   jetstream.KeyValue
	name       string
	log        *slog.Logger
	noUpdate   bool
	replicas   int
	refusedTTL time.Duration
	heal       healer
	loops      loops
	// OnReport, when set, is called with every reported event (metrics).
	OnReport func(tenant.Event)
}

// Connect connects to the server at url, refuses a server without message
// scheduling, and creates or updates the streams and buckets (moving the
// requests an older version kept in the work stream to their own stream).
// The connection reconnects by itself for as long as the process runs.
func Connect(ctx context.Context, url string, opts Options) (*Bus, error) {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Replicas < 1 {
		opts.Replicas = 1
	}
	secrets := redact.NATSSecrets(url)
	auth, err := authOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(url), err)
	}
	nc, err := nats.Connect(url, append(auth,
		nats.Name(opts.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS; reconnecting", "error", secrets.Hide(err.Error()))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "server", redactURL(c.ConnectedUrl())) }),
		// Instead of nats.go's default, which prints to stderr.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Warn("NATS error", "error", secrets.Hide(err.Error()))
		}),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURL(url), secrets.Error(err))
	}
	if err := checkVersion(nc.ConnectedServerVersion()); err != nil {
		nc.Close()
		return nil, fmt.Errorf("NATS server at %s: %w", redactURL(nc.ConnectedUrl()), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	b := &Bus{nc: nc, js: js, name: opts.Name, log: log, noUpdate: opts.NoUpdate, replicas: opts.Replicas,
		refusedTTL: opts.RefusedStateTTL, heal: healer{recreated: make(chan struct{})}}
	if b.refusedTTL <= 0 {
		b.refusedTTL = RefusedStateTTL
	}
	if err := b.ensure(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// Close drains nothing and closes the connection.
func (b *Bus) Close() { b.nc.Close() }

// Connected reports whether the connection is up.
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

// Ready says why the bus cannot do its work, or nil when it can: the
// connection is up and every consume loop running on it is consuming (its
// consumer exists and answers). For readiness probes.
func (b *Bus) Ready() error {
	if !b.nc.IsConnected() {
		return errors.New("not connected")
	}
	return b.loops.ready()
}

// JetStream exposes the JetStream context for tests and tools.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn exposes the core NATS connection for tests and tools.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// redactURL hides the secrets of every URL of a NATS URL list (url may be
// a comma-separated list): the password of user:password@, and a bare
// TOKEN@ (a token, an nkey or a JWT) whole. Connect logs and returns URLs
// only through it, and connection errors through redact.Secrets.
func redactURL(url string) string { return redact.NATS(url) }

// ErrServerTooOld is wrapped when the NATS server lacks message scheduling.
var ErrServerTooOld = errors.New("nats-server too old")

// checkVersion refuses servers older than MinServerVersion.
func checkVersion(v string) error {
	if !versionAtLeast(v, MinServerVersion) {
		return fmt.Errorf("%w: server version is %s, but tenant cleanup needs %s or newer (JetStream message scheduling); "+
			"run a newer nats-server", ErrServerTooOld, v, MinServerVersion)
	}
	return nil
}

func versionAtLeast(have, want string) bool {
	parse := func(v string) [3]int {
		var out [3]int
		v = strings.TrimPrefix(v, "v")
		if i := strings.IndexAny(v, "-+"); i >= 0 {
			v = v[:i]
		}
		for i, part := range strings.SplitN(v, ".", 3) {
			out[i], _ = strconv.Atoi(part)
		}
		return out
	}
	h, w := parse(have), parse(want)
	for i := range h {
		if h[i] != w[i] {
			return h[i] > w[i]
		}
	}
	return true
}

// DrainPending reports whether a drain check for the tenant is scheduled or
// due (delivered but not yet acknowledged).
func (b *Bus) DrainPending(ctx context.Context, id tenant.ID) (bool, error) {
	for _, subj := range []string{ScheduleSubject(id), DrainSubject(id)} {
		err := b.healed(ctx, func() error { _, err := b.work.GetLastMsgForSubject(ctx, subj); return err })
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, fmt.Errorf("look up pending drain check of %s: %w", id, unavailable(err))
		}
	}
	return false, nil
}
