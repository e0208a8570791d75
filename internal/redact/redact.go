// Package redact hides the secrets of connection strings, PostgreSQL URLs and
// keyword/value strings, and comma-separated NATS URL lists, so that they can be
// printed (-h), logged and returned in errors. It errs on the side of hiding
// too much: in a string that does not parse, everything that might be a
// secret is masked.
//
// It imports only the standard library, so that pkg/config and pkg/bus share
// one implementation.
package redact

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Mask replaces every hidden secret.
const Mask = "xxxxx"

// NATS hides the secrets in every URL of a comma-separated NATS URL list,
// read as nats.Connect reads it: of user:password@ the password, and a
// userinfo without a password (a token, an nkey, a JWT) entirely. A list
// element without a scheme is a NATS URL too (tok@host:4222).
func NATS(urls string) string {
	out, _ := nats(urls)
	return out
}

// NATSSecrets returns the secrets of a NATS URL list, for hiding them in
// texts that quote them in other ways (error messages).
func NATSSecrets(urls string) *Secrets {
	_, secrets := nats(urls)
	return secrets
}

func nats(urls string) (string, *Secrets) {
	parts := strings.Split(urls, ",")
	secrets := &Secrets{}
	for i, p := range parts {
		masked, s := maskURL(p, true)
		if masked != p {
			// The URL as a whole, as nats.go quotes it: trimmed, with the
			// scheme it adds when there is none.
			raw, red := strings.TrimSpace(p), strings.TrimSpace(masked)
			secrets.urls = append(secrets.urls, [2]string{raw, red})
			if !strings.Contains(raw, "://") {
				secrets.urls = append(secrets.urls, [2]string{"nats://" + raw, "nats://" + red})
			}
		}
		parts[i] = masked
		secrets.add(s...)
	}
	return strings.Join(parts, ","), secrets
}

// Postgres hides the passwords of a PostgreSQL connection string, as pgx
// reads it: a URL (postgres:// or postgresql://; the password of its
// userinfo and password-like query parameters) or keyword/value
// (password=…, sslpassword=…, quoted or not).
func Postgres(dsn string) string {
	if isPostgresURL(dsn) {
		out, _ := maskURL(dsn, false)
		return out
	}
	return maskKeywords(dsn)
}

// Any hides the secrets of a connection string of any of the kinds above:
// a PostgreSQL URL or keyword/value string as Postgres does, anything else
// as a NATS URL list.
func Any(s string) string {
	if isPostgresURL(s) || keywordForm.MatchString(s) {
		return Postgres(s)
	}
	return NATS(s)
}

var (
	// keywordForm is how a keyword/value connection string begins.
	keywordForm = regexp.MustCompile(`^\s*[A-Za-z_]+\s*=`)
	// keywordPassword is a password-like keyword and its value: single or
	// double quoted with backslash escapes (up to the end when the quote is
	// not closed), or unquoted up to the next unescaped white space.
	keywordPassword = regexp.MustCompile(`(?i)([a-z_]*(?:password|passwd|secret|token)\s*=\s*)` +
		`('(?:[^'\\]|\\[\s\S])*(?:'|$)|"(?:[^"\\]|\\[\s\S])*(?:"|$)|(?:[^\s\\]|\\[\s\S])*\\?)`)
)

func isPostgresURL(s string) bool {
	s = strings.ToLower(strings.TrimSpace(s))
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

func maskKeywords(s string) string {
	return keywordPassword.ReplaceAllString(s, "${1}"+Mask)
}

// maskURL masks the secrets of one URL and returns them. tokens: a
// userinfo without a password is a secret (NATS) rather than a user name
// (PostgreSQL).
func maskURL(s string, tokens bool) (string, []string) {
	start := len(s) - len(strings.TrimLeft(s, " \t")) // keep the blanks of "a, b"
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	rest := s[start:]
	var secrets []string
	var b strings.Builder
	b.WriteString(s[:start])

	// The userinfo ends at the last '@' of the authority when a PostgreSQL
	// URL parses, else at the last '@' anywhere: a malformed URL is masked
	// widely rather than not enough. NATS URLs have nothing after the
	// authority that could hold an '@', so a NATS URL is always read so: a
	// token with a '/' in it (tok/en@host) is not the host "tok".
	authority := rest
	if !tokens && wellFormed(s) {
		if end := strings.IndexAny(rest, "/?#"); end >= 0 {
			authority = rest[:end]
		}
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		userinfo := rest[:at]
		user, password, hasPassword := strings.Cut(userinfo, ":")
		switch {
		case hasPassword:
			b.WriteString(user + ":" + Mask)
			secrets = append(secrets, password)
			secrets = append(secrets, pieces(password)...)
		case tokens:
			b.WriteString(Mask)
			secrets = append(secrets, userinfo)
			secrets = append(secrets, pieces(userinfo)...)
		default:
			b.WriteString(userinfo)
		}
		rest = rest[at:]
	}

	q := strings.IndexByte(rest, '?')
	if q < 0 {
		b.WriteString(rest)
		return b.String(), secrets
	}
	b.WriteString(rest[:q+1])
	query, fragment, hasFragment := strings.Cut(rest[q+1:], "#")
	for i, pair := range strings.Split(query, "&") {
		if i > 0 {
			b.WriteByte('&')
		}
		key, value, hasValue := strings.Cut(pair, "=")
		if hasValue && secretKey(key) {
			b.WriteString(key + "=" + Mask)
			secrets = append(secrets, value)
			continue
		}
		b.WriteString(pair)
	}
	if hasFragment {
		b.WriteString("#" + fragment)
	}
	return b.String(), secrets
}

// pieces are the parts of a secret that a client may take for a host, a
// port or a path when the secret holds '/', '?', '#' or ':' (and quote in
// an error), four bytes or longer.
func pieces(secret string) []string {
	var out []string
	for p := range strings.FieldsFuncSeq(secret, func(r rune) bool { return strings.ContainsRune("/?#:", r) }) {
		if len(p) >= 4 && p != secret {
			out = append(out, p)
		}
	}
	return out
}

// wellFormed reports whether s parses as a URL with a host.
func wellFormed(s string) bool {
	u, err := url.Parse(strings.TrimSpace(s))
	return err == nil && u.Opaque == "" && u.Host != ""
}

// secretKey reports whether a query parameter holds a secret
// (password, sslpassword, token, …), however its name is encoded.
func secretKey(key string) bool {
	if k, err := url.QueryUnescape(key); err == nil {
		key = k
	}
	key = strings.ToLower(key)
	for _, s := range []string{"password", "passwd", "secret", "token"} {
		if strings.Contains(key, s) {
			return true
		}
	}
	return false
}

// Secrets are the secrets of a connection string, for hiding them in texts
// that may quote them in any form.
type Secrets struct {
	urls    [][2]string // whole URLs and their redacted form
	secrets []string    // longest first
}

// add adds secrets in the forms they take when decoded or quoted, skipping
// empty ones, and keeps them longest first, so that a secret is hidden
// before a shorter one inside it.
func (s *Secrets) add(secrets ...string) {
	add := func(v string) {
		if v != "" && !slices.Contains(s.secrets, v) {
			s.secrets = append(s.secrets, v)
		}
	}
	for _, v := range secrets {
		forms := []string{v, strings.TrimSpace(v)}
		if d, err := url.PathUnescape(v); err == nil {
			forms = append(forms, d)
		}
		if d, err := url.QueryUnescape(v); err == nil {
			forms = append(forms, d)
		}
		for _, f := range forms {
			add(f)
			add(strings.TrimSuffix(strings.TrimPrefix(strconv.Quote(f), `"`), `"`))
			add(url.PathEscape(f))
			add(url.QueryEscape(f))
		}
	}
	slices.SortStableFunc(s.secrets, func(a, b string) int { return len(b) - len(a) })
}

// Hide replaces every URL holding secrets with its redacted form, then every
// remaining secret with Mask.
func (s *Secrets) Hide(text string) string {
	for _, u := range s.urls {
		text = strings.ReplaceAll(text, u[0], u[1])
	}
	for _, v := range s.secrets {
		text = strings.ReplaceAll(text, v, Mask)
	}
	return text
}

// Error returns err with the secrets hidden from its text (nil for nil, err
// itself when its text holds none). An error parsing a URL says only which
// URL (redacted): its details may quote a piece of a secret ("invalid URL
// escape"). errors.Is and errors.As still see err.
func (s *Secrets) Error(err error) error {
	if err == nil {
		return nil
	}
	if urlErr, ok := errors.AsType[*url.Error](err); ok {
		return &hidden{msg: fmt.Sprintf("invalid URL %q (details not shown: they may quote a secret)", NATS(urlErr.URL)), err: err}
	}
	if msg := s.Hide(err.Error()); msg != err.Error() {
		return &hidden{msg: msg, err: err}
	}
	return err
}

type hidden struct {
	msg string
	err error
}

func (h *hidden) Error() string { return h.msg }
func (h *hidden) Unwrap() error { return h.err }

// Shards hides the passwords of ONYX_DB_SHARDS (a JSON object of shard name
// → connection overrides): every "password" value is masked. Text that is
// not such an object is hidden whole.
func Shards(raw string) string {
	var shards map[string]map[string]any
	if err := json.Unmarshal([]byte(raw), &shards); err != nil {
		return "(set, not a JSON object of objects: hidden)"
	}
	for _, o := range shards {
		for k := range o {
			if secretKey(k) || strings.EqualFold(k, "password") {
				o[k] = Mask
			}
		}
	}
	b, err := json.Marshal(shards)
	if err != nil {
		return "(set, hidden)"
	}
	return string(b)
}
