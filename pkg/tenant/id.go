// Package tenant holds the domain of tenant cleanup: the tenant id, parsed once
// at every boundary, the eligibility and drained rules, the outcomes a tenant
// can reach and the sentinel errors that tell a consumer what to do next. It
// imports only the standard library.
package tenant

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
)

// ID is a validated tenant id: the name of the tenant's schema on the data
// plane and its key everywhere else. The only way to get one is ParseID, so a
// value of this type is always safe to use as a schema name (quoted) or as a
// NATS subject token.
type ID string

// String returns the id as text.
func (id ID) String() string { return string(id) }

// maxIDLen is Postgres' identifier limit (NAMEDATALEN-1): a longer name could
// never be a schema, and would be silently truncated by the server.
const maxIDLen = 63

// idPattern accepts exactly the tenant ids Onyx creates: tenant_ + a lower-case
// UUID, tenant_i-<lower-case hex> and tenant_dev.
var idPattern = regexp.MustCompile(
	`^tenant_(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|i-[0-9a-f]+|dev)$`)

// ErrInvalidID is wrapped by every error ParseID returns.
var ErrInvalidID = errors.New("invalid tenant id")

// ParseID validates s as a tenant id. Anything that is not exactly a tenant id
// (public, pg_catalog, upper case, quotes, spaces, other schemas) is refused
// with an error that shows the input, quoted and shortened, and the expected form.
func ParseID(s string) (ID, error) {
	if len(s) <= maxIDLen && idPattern.MatchString(s) {
		return ID(s), nil
	}
	return "", fmt.Errorf("%w %s: want tenant_<lower-case uuid>, tenant_i-<lower-case hex> or tenant_dev",
		ErrInvalidID, QuoteInput(s))
}

// QuoteInput renders untrusted input for logs, errors and events: Go-quoted
// (control characters and quotes escaped) and cut to 80 bytes of input.
func QuoteInput(s string) string {
	const limit = 80
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + fmt.Sprintf("…(%d bytes)", len(s))
	}
	return strconv.Quote(s)
}
