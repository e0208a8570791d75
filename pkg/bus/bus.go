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

// Subjects. SubjectCandidate is public API: operators publish bare tenant ids
// on it with `nats pub`.
const (
	SubjectCandidate      = "tenant.cleanup.candidate"
	subjectSchedulePrefix = "tenant.cleanup.schedule." // + tenant id: the one pending schedule of a tenant
	subjectDrainPrefix    = "tenant.cleanup.drain."    // + tenant id: a due drain check
	subjectEventPrefix    = "tenant.cleanup.event."    // + outcome
	subjectDeadPrefix     = "tenant.cleanup.dead."     // + consumer: messages that failed too often
)

// Streams and durable consumers.
const (
	// StreamWork holds the work: candidates (consumed by marker), drain-check
	// schedules and due drain checks (consumed by cleaner). Work-queue
	// retention: a message is gone once acknowledged.
	StreamWork = "TENANT_CLEANUP"
	// StreamEvents keeps every outcome event for EventRetention.
	StreamEvents = "TENANT_CLEANUP_EVENTS"
	// StreamDead keeps messages that failed too often, with the reason,
	// until an operator replays or discards them (tenantctl dead).
	StreamDead = "TENANT_CLEANUP_DEAD"

	ConsumerMarker  = "marker"
	ConsumerCleaner = "cleaner"
)

// Tunables of the streams.
const (
	// DedupWindow is how long the server remembers a Nats-Msg-Id: the
	// analyzer publishes each eligible tenant at most once per window, so
	// that consecutive passes do not re-publish a tenant that is draining.
	DedupWindow = 7 * 24 * time.Hour
	// EventRetention is how long outcome events are kept.
	EventRetention = 30 * 24 * time.Hour
)

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
	Log      *slog.Logger
}

// Bus is a connection to JetStream with the streams in place.
type Bus struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	work     jetstream.Stream
	dead     jetstream.Stream
	state    jetstream.KeyValue
	failures jetstream.KeyValue
	name     string
	log      *slog.Logger
	noUpdate bool
	// OnReport, when set, is called with every reported event (metrics).
	OnReport func(tenant.Event)
}

// Connect connects to the server at url, refuses a server without message
// scheduling, and creates or updates the streams. The connection reconnects
// by itself for as long as the process runs.
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
	b := &Bus{nc: nc, js: js, name: opts.Name, log: log, noUpdate: opts.NoUpdate}
	if err := b.ensureStreams(ctx, opts.Replicas); err != nil {
		nc.Close()
		return nil, err
	}
	if err := b.ensureBuckets(ctx, opts.Replicas); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// Close drains nothing and closes the connection.
func (b *Bus) Close() { b.nc.Close() }

// Connected reports whether the connection is up (for readiness).
func (b *Bus) Connected() bool { return b.nc.IsConnected() }

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

func (b *Bus) ensureStreams(ctx context.Context, replicas int) error {
	work, err := b.stream(ctx, jetstream.StreamConfig{
		Name:              StreamWork,
		Description:       "tenant cleanup: candidates, drain-check schedules and due drain checks",
		Subjects:          []string{SubjectCandidate, subjectSchedulePrefix + "*", DrainSubjects},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		Duplicates:        DedupWindow,
		AllowMsgSchedules: true,
		AllowRollup:       true,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", StreamWork, err)
	}
	// An old server ignores settings it does not know: believe only what it
	// reports back.
	if info := work.CachedInfo(); info == nil || !info.Config.AllowMsgSchedules {
		return fmt.Errorf("%w: stream %s: the server did not enable message scheduling; it needs nats-server %s or newer",
			ErrServerTooOld, StreamWork, MinServerVersion)
	}
	b.work = work
	if _, err := b.stream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "tenant cleanup: outcome events",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      EventRetention,
	}); err != nil {
		return fmt.Errorf("create stream %s: %w", StreamEvents, err)
	}
	b.dead, err = b.stream(ctx, jetstream.StreamConfig{
		Name:        StreamDead,
		Description: "tenant cleanup: messages that failed too often (tenantctl dead list|replay)",
		Subjects:    []string{subjectDeadPrefix + ">"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", StreamDead, err)
	}
	return nil
}

// stream creates or updates a stream (or, with NoUpdate, creates it only
// when missing).
func (b *Bus) stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if !b.noUpdate {
		return b.js.CreateOrUpdateStream(ctx, cfg)
	}
	s, err := b.js.CreateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return b.js.Stream(ctx, cfg.Name)
	}
	return s, err
}

// bucket creates or updates a KV bucket (or, with NoUpdate, creates it only
// when missing).
func (b *Bus) bucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if !b.noUpdate {
		return b.js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	kv, err := b.js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		return b.js.KeyValue(ctx, cfg.Bucket)
	}
	return kv, err
}

// DrainPending reports whether a drain check for the tenant is scheduled or
// due (delivered but not yet acknowledged).
func (b *Bus) DrainPending(ctx context.Context, id tenant.ID) (bool, error) {
	for _, subj := range []string{ScheduleSubject(id), DrainSubject(id)} {
		_, err := b.work.GetLastMsgForSubject(ctx, subj)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, fmt.Errorf("look up pending drain check of %s: %w", id, unavailable(err))
		}
	}
	return false, nil
}
