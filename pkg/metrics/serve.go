package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"
)

// ReadyTimeout bounds one readiness check: a ready func that has not
// returned by then makes /readyz answer 503.
const ReadyTimeout = 2 * time.Second

// ShutdownTimeout bounds the graceful shutdown of the HTTP server once its
// context is cancelled.
const ShutdownTimeout = 5 * time.Second

// Serve listens on addr (HTTP_ADDR, e.g. ":9090") and serves NewHandler(m,
// ready, log) until ctx is cancelled, then shuts the server down gracefully
// (in-flight requests get ShutdownTimeout) and returns nil. It returns at
// once with an error when addr cannot be bound, and returns nil at once when
// addr is empty (HTTP off). To learn the bound address of ":0", listen
// yourself and call ServeListener.
func Serve(ctx context.Context, addr string, m *Metrics, ready func(context.Context) error, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, m, ready, log)
}

// ServeListener is Serve on a listener the caller opened (and whose Addr it
// therefore knows); it closes ln.
func ServeListener(ctx context.Context, ln net.Listener, m *Metrics, ready func(context.Context) error, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           NewHandler(m, ready, log),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving /metrics, /healthz and /readyz", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}

// NewHandler returns the handler Serve serves, for a caller that runs its
// own server:
//
//   - /metrics: m.Handler();
//   - /healthz: 200 "ok" (the process is alive and serving);
//   - /readyz: 200 "ready" when ready(ctx) returns nil within ReadyTimeout,
//     else 503 "not ready: <error>". The error text is passed through Redact
//     first (a URL's user:password, password=...), and is logged (redacted)
//     only when readiness changes, not on every probe. A nil ready is always
//     ready. Each check also sets the tenant_cleanup_ready gauge.
func NewHandler(m *Metrics, ready func(context.Context) error, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	var (
		mu   sync.Mutex
		last *bool // readiness at the last check; nil before the first
	)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		err := checkReady(r.Context(), ready)
		ok := err == nil
		m.setReady(ok)
		msg := ""
		if !ok {
			msg = Redact(err.Error())
		}
		mu.Lock()
		changed := last == nil || *last != ok
		last = &ok
		mu.Unlock()
		if changed {
			if ok {
				log.Info("ready")
			} else {
				log.Warn("not ready", "error", msg)
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", msg)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// checkReady runs ready with ReadyTimeout, and gives up at the deadline
// even if ready does not honour its context.
func checkReady(ctx context.Context, ready func(context.Context) error) error {
	if ready == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, ReadyTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("readiness check panicked: %v", p)
			}
		}()
		done <- ready(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("readiness check did not answer within %s", ReadyTimeout)
	}
}

var (
	urlUserinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^@/\s]+@`)
	keyValue    = regexp.MustCompile(`(?i)\b(password|passwd|pwd|passphrase|secret|token|sslkey)(\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)`)
)

// maxReason bounds the error text /readyz returns.
const maxReason = 512

// Redact removes what may be a secret from an error text: the user
// information of URLs (postgres://user:pass@host → postgres://REDACTED@host)
// and the values of password=, passphrase=, secret=, token= and the like.
// It also bounds the text to 512 bytes.
func Redact(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}REDACTED@")
	s = keyValue.ReplaceAllString(s, "${1}${2}REDACTED")
	if len(s) > maxReason {
		n := maxReason
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return s
}
