package tenant

import (
	"errors"
	"fmt"
	"time"
)

// ErrRefused is wrapped by every refusal: the tenant must not be marked or
// cleaned, now or on a retry of the same message. A consumer terminates such a
// message instead of retrying it.
var ErrRefused = errors.New("refused")

// RefusedError refuses one tenant with a reason an operator can act on.
// Outcome is OutcomeRefused, or OutcomeHeld for a tenant under a hold.
type RefusedError struct {
	ID      ID
	Reason  string
	Outcome Outcome
}

func (e *RefusedError) Error() string { return fmt.Sprintf("%s %s: %s", e.ID, e.Outcome, e.Reason) }

// Unwrap makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// Refuse returns a RefusedError.
func Refuse(id ID, format string, args ...any) error {
	return &RefusedError{ID: id, Reason: fmt.Sprintf(format, args...), Outcome: OutcomeRefused}
}

// RefuseHeld refuses a tenant because of an operator's hold.
func RefuseHeld(id ID, h Hold) error {
	return &RefusedError{ID: id, Reason: h.Describe(), Outcome: OutcomeHeld}
}

// ErrLater is wrapped by errors that mean "not now, try again after a while"
// without counting as a failure: a lock held by live traffic, another replica
// working on the same tenant.
var ErrLater = errors.New("try again later")

// LaterError asks for the message to be redelivered after Delay.
type LaterError struct {
	Delay  time.Duration
	Reason string
	Err    error
}

func (e *LaterError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s, retry in %s: %v", e.Reason, e.Delay, e.Err)
	}
	return fmt.Sprintf("%s, retry in %s", e.Reason, e.Delay)
}

// Unwrap makes errors.Is(err, ErrLater) true, and keeps the cause reachable.
func (e *LaterError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrLater, e.Err}
	}
	return []error{ErrLater}
}

// Later returns a LaterError.
func Later(delay time.Duration, reason string, cause error) error {
	return &LaterError{Delay: delay, Reason: reason, Err: cause}
}

// ErrUnavailable is wrapped by errors that mean a dependency (a database, the
// bastion, JetStream) could not be reached. Such a failure says nothing about
// the message: it is retried with backoff and never counts towards moving the
// message to the dead-letter stream.
var ErrUnavailable = errors.New("dependency unavailable")

// Unavailable wraps err as ErrUnavailable (nil stays nil).
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailableError{err}
}

type unavailableError struct{ err error }

func (e *unavailableError) Error() string   { return e.err.Error() }
func (e *unavailableError) Unwrap() []error { return []error{ErrUnavailable, e.err} }
