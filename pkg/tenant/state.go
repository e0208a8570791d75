package tenant

import "time"

// Phase is where a tenant is in the pipeline, as tenantctl status shows it.
type Phase string

// The phases. Cleaned is terminal.
const (
	PhaseRequested Phase = "requested"
	PhaseMarked    Phase = "marked"
	PhaseDraining  Phase = "draining"
	PhaseCleaned   Phase = "cleaned"
	PhaseRefused   Phase = "refused"
	PhaseStuck     Phase = "stuck"
	PhaseHeld      Phase = "held"
	PhaseDead      Phase = "dead"
)

// Final reports whether the phase is an end the pipeline reported: nothing
// more happens to the tenant unless it is requested again.
func (p Phase) Final() bool {
	return p == PhaseCleaned || p == PhaseRefused || p == PhaseStuck || p == PhaseDead
}

// Phases lists the phases in pipeline order.
var Phases = []Phase{PhaseRequested, PhaseMarked, PhaseDraining, PhaseHeld, PhaseStuck, PhaseRefused, PhaseDead, PhaseCleaned}

// State is the pipeline's record of one tenant, kept in JetStream.
type State struct {
	ID    ID    `json:"tenant_id"`
	Phase Phase `json:"phase"`
	// Since is when the tenant entered its phase; Updated its last change.
	Since       time.Time  `json:"since"`
	Updated     time.Time  `json:"updated"`
	Reason      string     `json:"reason,omitempty"`
	RequestedBy string     `json:"requested_by,omitempty"`
	MarkedAt    *time.Time `json:"marked_at,omitempty"`
	// NextCheckAt, DocumentsLeft and PairsLeft come from the last drain check.
	NextCheckAt   *time.Time `json:"next_check_at,omitempty"`
	DocumentsLeft *int64     `json:"documents_left,omitempty"`
	PairsLeft     *int64     `json:"pairs_left,omitempty"`
	CleanedAt     *time.Time `json:"cleaned_at,omitempty"`
}

// phaseOf maps an outcome to the phase it puts a tenant in; capped and
// paused leave a drained tenant draining (its check is retried).
var phaseOf = map[Outcome]Phase{
	OutcomeRequested: PhaseRequested,
	OutcomeMarked:    PhaseMarked,
	OutcomeDraining:  PhaseDraining,
	OutcomeCapped:    PhaseDraining,
	OutcomePaused:    PhaseDraining,
	OutcomeCleaned:   PhaseCleaned,
	OutcomeRefused:   PhaseRefused,
	OutcomeStuck:     PhaseStuck,
	OutcomeHeld:      PhaseHeld,
	OutcomeDead:      PhaseDead,
}

// Apply returns the state after ev. A cleaned tenant stays cleaned, and a
// request does not move a tenant back to requested when it is already being
// worked on or when a later outcome is recorded (a request is recorded after
// it is published, so the marker may have answered first); everything else
// follows the outcome.
func (s State) Apply(ev Event) State {
	next, ok := phaseOf[ev.Outcome]
	if !ok || ev.TenantID == "" {
		return s
	}
	if s.Phase == PhaseCleaned {
		return s
	}
	if next == PhaseRequested && (s.Phase == PhaseMarked || s.Phase == PhaseDraining || s.Phase == PhaseHeld ||
		ev.Time.Before(s.Updated)) {
		return s // being worked on, or an outcome of this request is recorded already
	}
	s.ID = ev.TenantID
	if s.Phase != next {
		s.Since = ev.Time
	}
	s.Phase = next
	s.Updated = ev.Time
	s.Reason = ev.Reason
	if ev.RequestedBy != "" {
		s.RequestedBy = ev.RequestedBy
	}
	if ev.MarkedAt != nil {
		s.MarkedAt = ev.MarkedAt
	}
	s.NextCheckAt, s.DocumentsLeft, s.PairsLeft = ev.NextCheckAt, ev.DocumentsLeft, ev.PairsLeft
	if next == PhaseCleaned {
		t := ev.Time
		s.CleanedAt = &t
	}
	return s
}

// Hold keeps a tenant from being marked or cleaned while it lasts.
type Hold struct {
	ID     ID     `json:"tenant_id"`
	Reason string `json:"reason"`
	// Until is when the hold ends by itself; nil means until it is removed.
	Until *time.Time `json:"until,omitempty"`
	By    string     `json:"by"`
	At    time.Time  `json:"at"`
}

// Active reports whether the hold is in force at now.
func (h Hold) Active(now time.Time) bool { return h.Until == nil || now.Before(*h.Until) }

// Describe says what the hold is, for refusals and status.
func (h Hold) Describe() string {
	s := "held by " + h.By + ": " + h.Reason
	if h.Until != nil {
		s += " (until " + h.Until.UTC().Format(time.RFC3339) + ")"
	}
	return s
}

// Pause records that cleaning is paused or capped, for status.
type Pause struct {
	// Kind is "capped" (a cleanup cap is reached) or "paused" (a replica's
	// circuit breaker is open).
	Kind   string    `json:"kind"`
	Reason string    `json:"reason"`
	Until  time.Time `json:"until"`
	By     string    `json:"by"`
}
