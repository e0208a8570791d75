package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// pgProxy is a PostgreSQL wire-protocol proxy that times every round trip
// (from the client's first message of a request to the server's
// ReadyForQuery) and attributes it to the statement it ran. It stands in for
// pg_stat_statements, which this server does not preload, and sees what the
// product really sends: prepares, BEGIN/COMMIT, SET LOCAL, advisory locks.
// Times are round trips seen from the client side (server time plus a few
// tens of microseconds of loopback and proxy).
type pgProxy struct {
	name   string
	target string
	ln     net.Listener

	mu    sync.Mutex
	stats map[string]*stmtStat
	conns sync.WaitGroup
}

type stmtStat struct {
	Calls int64
	Total time.Duration
	Max   time.Duration
}

func startProxy(name, target string) (*pgProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &pgProxy{name: name, target: target, ln: ln, stats: map[string]*stmtStat{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			go func() {
				defer p.conns.Done()
				p.handle(c)
			}()
		}
	}()
	return p, nil
}

func (p *pgProxy) addr() string { return p.ln.Addr().String() }

func (p *pgProxy) close() { p.ln.Close() }

func (p *pgProxy) record(label string, d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats[label]
	if s == nil {
		s = &stmtStat{}
		p.stats[label] = s
	}
	s.Calls++
	s.Total += d
	s.Max = max(s.Max, d)
}

// pending is a request waiting for its ReadyForQuery.
type pending struct {
	label string
	start time.Time
}

type proxyConn struct {
	mu      sync.Mutex
	queue   []pending
	lastZ   time.Time
	stmts   map[string]string // prepared statement name → SQL
	portals map[string]string // portal → SQL
}

const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
)

func (p *pgProxy) handle(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	st := &proxyConn{stmts: map[string]string{}, portals: map[string]string{}}
	cr, sw := bufio.NewReaderSize(client, 64<<10), bufio.NewWriterSize(server, 64<<10)
	// Startup: refuse SSL and GSS encryption, pass the startup message on.
	for {
		var hdr [8]byte
		if _, err := io.ReadFull(cr, hdr[:4]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:4]))
		if n < 8 || n > 1<<20 {
			return
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(cr, body); err != nil {
			return
		}
		code := binary.BigEndian.Uint32(body[:4])
		if code == sslRequestCode || code == gssEncRequestCode {
			if _, err := client.Write([]byte{'N'}); err != nil {
				return
			}
			continue
		}
		sw.Write(hdr[:4])
		sw.Write(body)
		if sw.Flush() != nil {
			return
		}
		break
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.serverToClient(bufio.NewReaderSize(server, 64<<10), bufio.NewWriterSize(client, 64<<10), st)
		client.Close()
	}()
	p.clientToServer(cr, sw, st)
	server.Close()
	<-done
}

func readMsg(r *bufio.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[1:]))
	if n < 4 {
		return 0, nil, fmt.Errorf("bad message length %d", n)
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return hdr[0], body, nil
}

func writeMsg(w *bufio.Writer, typ byte, body []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	w.Write(hdr[:])
	_, err := w.Write(body)
	return err
}

func cstrings(b []byte, n int) []string {
	var out []string
	for len(out) < n {
		i := strings.IndexByte(string(b), 0)
		if i < 0 {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[:i]))
		b = b[i+1:]
	}
	for len(out) < n {
		out = append(out, "")
	}
	return out
}

func (p *pgProxy) clientToServer(r *bufio.Reader, w *bufio.Writer, st *proxyConn) {
	var (
		batchStart time.Time
		parsed     string
		executed   string
		closed     bool
	)
	for {
		typ, body, err := readMsg(r)
		if err != nil {
			return
		}
		now := time.Now()
		if batchStart.IsZero() {
			batchStart = now
		}
		switch typ {
		case 'Q':
			sql := cstrings(body, 1)[0]
			st.push(pending{label: normalize(sql), start: now})
			batchStart = time.Time{}
		case 'P':
			f := cstrings(body, 2)
			st.mu.Lock()
			st.stmts[f[0]] = f[1]
			st.mu.Unlock()
			parsed = f[1]
		case 'B':
			f := cstrings(body, 2)
			st.mu.Lock()
			st.portals[f[0]] = st.stmts[f[1]]
			st.mu.Unlock()
		case 'E':
			f := cstrings(body, 1)
			st.mu.Lock()
			executed = st.portals[f[0]]
			st.mu.Unlock()
		case 'C':
			closed = true
		case 'S':
			label := "(sync)"
			switch {
			case executed != "":
				label = normalize(executed)
			case parsed != "":
				label = "(prepare) " + normalize(parsed)
			case closed:
				label = "(deallocate prepared statements)"
			}
			st.push(pending{label: label, start: batchStart})
			batchStart, parsed, executed, closed = time.Time{}, "", "", false
		case 'X':
			_ = writeMsg(w, typ, body)
			_ = w.Flush()
			return
		}
		if err := writeMsg(w, typ, body); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func (p *pgProxy) serverToClient(r *bufio.Reader, w *bufio.Writer, st *proxyConn) {
	for {
		typ, body, err := readMsg(r)
		if err != nil {
			return
		}
		if typ == 'Z' {
			now := time.Now()
			if pe, ok := st.pop(); ok {
				from := pe.start
				st.mu.Lock()
				if st.lastZ.After(from) {
					from = st.lastZ
				}
				st.lastZ = now
				st.mu.Unlock()
				p.record(pe.label, now.Sub(from))
			}
		}
		if err := writeMsg(w, typ, body); err != nil {
			return
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

func (st *proxyConn) push(pe pending) {
	st.mu.Lock()
	st.queue = append(st.queue, pe)
	st.mu.Unlock()
}

func (st *proxyConn) pop() (pending, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.queue) == 0 {
		return pending{}, false
	}
	pe := st.queue[0]
	st.queue = st.queue[1:]
	return pe, true
}

var (
	reComment   = regexp.MustCompile(`--[^\n]*`)
	reSpace     = regexp.MustCompile(`\s+`)
	reTenant    = regexp.MustCompile(`"tenant_(?:[0-9a-f]{8}-[0-9a-f-]{27}|i-[0-9a-f]+|dev)"`)
	reRelList   = regexp.MustCompile(`<t>\.(?:"[^"]*"|[a-z_0-9]+)(?:, <t>\.(?:"[^"]*"|[a-z_0-9]+))+`)
	reLiteral   = regexp.MustCompile(`'[^']*'`)
	reUnionRest = regexp.MustCompile(`UNION ALL .*`)
)

// normalize turns a statement into its kind: comments and whitespace folded,
// the tenant's schema replaced by <t>, lists of the tenant's relations by
// <t>.<list>, literals other than short words by '?'.
func normalize(sql string) string {
	s := reComment.ReplaceAllString(sql, " ")
	s = strings.TrimSpace(reSpace.ReplaceAllString(s, " "))
	s = reTenant.ReplaceAllString(s, "<t>")
	s = reRelList.ReplaceAllString(s, "<t>.<list>")
	s = reUnionRest.ReplaceAllString(s, "UNION ALL …")
	s = reLiteral.ReplaceAllStringFunc(s, func(l string) string {
		if len(l) <= 22 && !strings.ContainsAny(l, "0123456789 :") {
			return l
		}
		return "'?'"
	})
	if len(s) > 150 {
		s = s[:150] + "…"
	}
	return s
}

// stmtRow is one line of a statement table.
type stmtRow struct {
	Source     string  `json:"source"`
	Statement  string  `json:"statement"`
	Calls      int64   `json:"calls"`
	PerTenant  float64 `json:"calls_per_tenant"`
	TotalSec   float64 `json:"total_seconds"`
	MeanMs     float64 `json:"mean_ms"`
	MaxMs      float64 `json:"max_ms"`
	MsPerTen   float64 `json:"ms_per_tenant"`
	ShareOfSrc float64 `json:"share_of_source_percent"`
}

// rows returns the proxy's statements, most total time first.
func (p *pgProxy) rows(tenants int) (out []stmtRow, total time.Duration, trips int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.stats {
		total += s.Total
		trips += s.Calls
	}
	for label, s := range p.stats {
		r := stmtRow{Source: p.name, Statement: label, Calls: s.Calls, TotalSec: s.Total.Seconds(),
			MeanMs: float64(s.Total.Microseconds()) / 1000 / float64(s.Calls), MaxMs: float64(s.Max.Microseconds()) / 1000}
		if tenants > 0 {
			r.PerTenant = float64(s.Calls) / float64(tenants)
			r.MsPerTen = float64(s.Total.Microseconds()) / 1000 / float64(tenants)
		}
		if total > 0 {
			r.ShareOfSrc = 100 * float64(s.Total) / float64(total)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TotalSec > out[j].TotalSec })
	return out, total, trips
}
