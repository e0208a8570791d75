package tenant

import (
	"fmt"
	"math"
	"time"
)

// StatusGatedAccess is the only control-plane application status a tenant may
// be cleaned in: its subscription lapsed and access is gated.
const StatusGatedAccess = "GATED_ACCESS"

// Facts is what the eligibility rule looks at, read fresh from both planes.
type Facts struct {
	// InControlPlane is false when the control plane has no tenant row.
	InControlPlane bool
	// Status is the control-plane application_status.
	Status string
	// CreatedAt is the control-plane created_at.
	CreatedAt time.Time
	// LastActivity is the later of the newest USER chat message and the newest
	// Craft build session; zero when the tenant never did either (or its
	// schema is gone).
	LastActivity time.Time
	// Problem, when set, says why the control-plane row cannot be judged (a
	// NULL status or created_at): such a tenant is never eligible.
	Problem string
}

// Verdict is the result of applying the eligibility rule.
type Verdict struct {
	Eligible bool
	// Reason says why a tenant is not eligible (empty when it is).
	Reason string
}

// MaxWindowDays is the longest inactivity window, in days, that a
// time.Duration holds (106,751 days, about 292 years).
const MaxWindowDays = int(math.MaxInt64 / int64(24*time.Hour))

// Window converts INACTIVE_DAYS into the inactivity window. It never
// overflows: a number of days that cannot be a window (below 1, or above
// MaxWindowDays; the configuration refuses both) gives the longest window,
// MaxWindowDays, under which no tenant is eligible. A longer window only
// makes fewer tenants eligible, so that is the safe side to err on.
func Window(inactiveDays int) time.Duration {
	if inactiveDays < 1 || inactiveDays > MaxWindowDays {
		inactiveDays = MaxWindowDays
	}
	return time.Duration(inactiveDays) * 24 * time.Hour
}

// Eligibility applies the contract's rule: the control-plane status is exactly
// GATED_ACCESS, the tenant was created before the window, and its last
// activity is before the window or absent.
func Eligibility(f Facts, now time.Time, window time.Duration) Verdict {
	cutoff := now.Add(-window)
	switch {
	case !f.InControlPlane:
		return Verdict{Reason: "no control-plane tenant row"}
	case f.Problem != "":
		return Verdict{Reason: f.Problem}
	case f.Status != StatusGatedAccess:
		return Verdict{Reason: fmt.Sprintf("control-plane status is %q, not %s", f.Status, StatusGatedAccess)}
	case !f.CreatedAt.Before(cutoff):
		return Verdict{Reason: fmt.Sprintf("created %s, inside the %s inactivity window",
			f.CreatedAt.UTC().Format(time.RFC3339), days(window))}
	case !f.LastActivity.IsZero() && !f.LastActivity.Before(cutoff):
		return Verdict{Reason: fmt.Sprintf("active %s, inside the %s inactivity window",
			f.LastActivity.UTC().Format(time.RFC3339), days(window))}
	}
	return Verdict{Eligible: true}
}

func days(d time.Duration) string {
	return fmt.Sprintf("%d-day", int(d/(24*time.Hour)))
}

// Drain is what the drained rule looks at.
type Drain struct {
	// SchemaExists is false once the tenant's schema is gone.
	SchemaExists bool
	// Pairs is the number of connector_credential_pair rows left.
	Pairs int64
	// Documents is the number of document rows left (counted up to a cap).
	Documents int64
}

// Drained reports whether Onyx's background deletion has finished with the
// tenant: no connector-credential pairs left and at most maxLeftoverDocs
// documents. A tenant whose schema is gone is drained.
func (d Drain) Drained(maxLeftoverDocs int64) bool {
	return !d.SchemaExists || (d.Pairs == 0 && d.Documents <= maxLeftoverDocs)
}

// CheckDelay is the backoff between drain checks: first after attempt 0,
// doubling from base each attempt, capped at max. A zero base (checks as soon
// as possible) still backs off from one second after the first check.
func CheckDelay(attempt int, base, limit time.Duration) time.Duration {
	if attempt <= 0 {
		return min(base, limit)
	}
	d := max(base, time.Second)
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
