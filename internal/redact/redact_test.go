package redact

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

func TestNATS(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://s3c@n1:4222", "nats://xxxxx@n1:4222"},
		{"nats://u:s3c@n1:4222", "nats://u:xxxxx@n1:4222"},
		{"s3c@n1:4222", "xxxxx@n1:4222"},
		{"n1:4222, s3c@n2:4222", "n1:4222, xxxxx@n2:4222"},
		{"nats://u:s3c1@n1,nats://s3c2@n2,nats://u:s3c3@n3", "nats://u:xxxxx@n1,nats://xxxxx@n2,nats://u:xxxxx@n3"},
		{"nats://u:@n1", "nats://u:xxxxx@n1"},
		{"nats://n1:4222?token=s3c", "nats://n1:4222?token=xxxxx"},
		{"nats://s3c:x%zz@n1", "nats://s3c:xxxxx@n1"}, // a user name is shown, even in a malformed URL
	}
	for _, tt := range tests {
		if got := NATS(tt.in); got != tt.want {
			t.Errorf("NATS(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestPostgresKeepsUserNames(t *testing.T) {
	// A PostgreSQL URL's userinfo without a password is a user name, not a
	// token.
	if got := Postgres("postgres://app@db/onyx"); got != "postgres://app@db/onyx" {
		t.Errorf("Postgres = %q", got)
	}
	if got := Any("postgres://app@db/onyx"); got != "postgres://app@db/onyx" {
		t.Errorf("Any = %q", got)
	}
}

// TestSecretsHideEveryForm: an error text may quote a secret raw, decoded,
// escaped or Go-quoted; all are hidden, and a URL quoted whole shows its
// redacted form.
func TestSecretsHideEveryForm(t *testing.T) {
	list := `nats://u:p%40ss"w0rd@n1:4222,tok+en/s3c@n2:4222`
	s := NATSSecrets(list)
	for _, text := range []string{
		`dial nats://u:p%40ss"w0rd@n1:4222 failed`,
		`auth with p@ss"w0rd failed`,
		`parse "nats://u:p%40ss\"w0rd@n1:4222": bad`,
		`token tok+en/s3c`,
		`token tok en/s3c`,
		`token tok%2Ben%2Fs3c`,
		`nats://tok+en/s3c@n2:4222 refused`,
	} {
		got := s.Hide(text)
		for _, secret := range []string{"w0rd", "s3c"} {
			if strings.Contains(got, secret) {
				t.Errorf("Hide(%q) = %q: shows %q", text, got, secret)
			}
		}
	}
	if got := s.Hide("dial tok+en/s3c@n2:4222 failed"); got != "dial xxxxx@n2:4222 failed" {
		t.Errorf("a whole URL is replaced by its redacted form, got %q", got)
	}
}

func TestSecretsError(t *testing.T) {
	s := NATSSecrets("nats://u:s3c%zz@n1:4222,nats://tok3n@n2:4222")
	sentinel := errors.New("sentinel")
	if err := s.Error(nil); err != nil {
		t.Errorf("Error(nil) = %v", err)
	}
	if err := s.Error(sentinel); err != sentinel {
		t.Errorf("an error without secrets must come back as is, got %v", err)
	}
	err := s.Error(fmt.Errorf("auth as tok3n: %w", sentinel))
	if strings.Contains(err.Error(), "tok3n") || !errors.Is(err, sentinel) {
		t.Errorf("Error = %v (errors.Is sentinel: %v)", err, errors.Is(err, sentinel))
	}
	bad := fmt.Sprintf("nats://u:s3c%s@n1:4222", "%zz") // invalid URL escape "%zz"
	_, perr := url.Parse(bad)
	err = s.Error(perr)
	var urlErr *url.Error
	if strings.Contains(err.Error(), "s3c") || strings.Contains(err.Error(), "zz") || !errors.As(err, &urlErr) {
		t.Errorf("a URL parse error: %v", err)
	}
	if !strings.Contains(err.Error(), "nats://u:xxxxx@n1:4222") {
		t.Errorf("a URL parse error should name the URL, redacted: %v", err)
	}
}
