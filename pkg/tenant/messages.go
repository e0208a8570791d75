package tenant

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// Request asks for one tenant to be cleaned up. On the wire it is either a
// JSON object ({"tenant_id": "...", "requested_by": "..."}) or, as operators
// publish it by hand, the bare tenant id.
type Request struct {
	ID          ID        `json:"tenant_id"`
	RequestedBy string    `json:"requested_by,omitempty"`
	RequestedAt time.Time `json:"requested_at,omitzero"`
}

// maxRequestBytes bounds what ParseRequest looks at; a larger body is refused
// unread.
const maxRequestBytes = 4096

// ParseRequest decodes a request body. A body that is not a valid request is
// an error wrapping ErrInvalidID; it never yields a Request.
func ParseRequest(body []byte) (Request, error) {
	if len(body) > maxRequestBytes {
		return Request{}, fmt.Errorf("%w: request of %d bytes (at most %d)", ErrInvalidID, len(body), maxRequestBytes)
	}
	if !bytes.HasPrefix(body, []byte("{")) {
		id, err := ParseID(string(body))
		return Request{ID: id, RequestedBy: "nats"}, err
	}
	var raw struct {
		ID          string    `json:"tenant_id"`
		RequestedBy string    `json:"requested_by"`
		RequestedAt time.Time `json:"requested_at"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return Request{}, fmt.Errorf("%w: request is not valid JSON: %v", ErrInvalidID, err)
	}
	id, err := ParseID(raw.ID)
	if err != nil {
		return Request{}, err
	}
	return Request{ID: id, RequestedBy: CleanText(raw.RequestedBy, maxRequestedBy), RequestedAt: raw.RequestedAt}, nil
}

// maxRequestedBy bounds who-requested texts, in bytes.
const maxRequestedBy = 200

// CleanRequester makes a who-requested text safe (CleanText) and short
// enough for a request.
func CleanRequester(s string) string { return CleanText(s, maxRequestedBy) }

// DrainCheck is the delayed message the marker schedules and the cleaner
// consumes: check whether the tenant is drained, then clean it or check
// again. It names the tenant and nothing else the cleaner relies on: who
// requested it, when it was marked and what it held then come from the
// pipeline's own record of the marking, never from the message.
type DrainCheck struct {
	ID ID `json:"tenant_id"`
	// Attempt counts drain checks done so far; it only drives the backoff.
	Attempt int `json:"attempt"`
}

// ParseDrainCheck decodes a drain check and validates its tenant id.
func ParseDrainCheck(body []byte) (DrainCheck, error) {
	var dc DrainCheck
	var raw struct {
		ID string `json:"tenant_id"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return DrainCheck{}, fmt.Errorf("%w: drain check is not valid JSON: %v", ErrInvalidID, err)
	}
	if _, err := ParseID(raw.ID); err != nil {
		return DrainCheck{}, err
	}
	if err := json.Unmarshal(body, &dc); err != nil {
		return DrainCheck{}, fmt.Errorf("%w: drain check is not valid JSON: %v", ErrInvalidID, err)
	}
	dc.Attempt = min(max(dc.Attempt, 0), 1000)
	return dc, nil
}

// Outcome is what happened to a tenant at one step; events are published on
// tenant.cleanup.event.<outcome>.
type Outcome string

// The outcomes, in pipeline order.
const (
	OutcomeRequested Outcome = "requested" // published as a cleanup candidate
	OutcomeMarked    Outcome = "marked"    // index attempts cancelled, pairs DELETING, drain check scheduled
	OutcomeDraining  Outcome = "draining"  // drain check: not drained yet, checked again later
	OutcomeCleaned   Outcome = "cleaned"   // schema, public rows and control-plane rows deleted, ledger written
	OutcomeRefused   Outcome = "refused"   // left in place, with the reason
	OutcomeStuck     Outcome = "stuck"     // not drained within DRAIN_TIMEOUT, left in place
	OutcomeHeld      Outcome = "held"      // under an operator's hold: not marked or cleaned while it lasts
	OutcomeCapped    Outcome = "capped"    // drained, waiting: the hourly or daily cleanup cap is reached
	OutcomePaused    Outcome = "paused"    // drained, waiting: the circuit breaker paused cleaning
	OutcomeDead      Outcome = "dead"      // its message failed too often and moved to the dead-letter stream
)

// Event reports one outcome for one tenant.
type Event struct {
	// TenantID is empty only for a refused request whose id was invalid;
	// Input then holds the offending input, quoted and shortened.
	TenantID      ID         `json:"tenant_id"`
	Input         string     `json:"input,omitempty"`
	Outcome       Outcome    `json:"outcome"`
	Reason        string     `json:"reason,omitempty"`
	RequestedBy   string     `json:"requested_by,omitempty"`
	MarkedAt      *time.Time `json:"marked_at,omitempty"`
	PairsLeft     *int64     `json:"pairs_left,omitempty"`
	DocumentsLeft *int64     `json:"documents_left,omitempty"`
	NextCheckAt   *time.Time `json:"next_check_at,omitempty"`
	Service       string     `json:"service"`
	Time          time.Time  `json:"time"`
}
