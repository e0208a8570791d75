package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"text/tabwriter"
)

// Usage writes the environment variables spec reads: name, default, meaning
// and the value currently set, with passwords and keys redacted.
func Usage(w io.Writer, spec any) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tCURRENT\tMEANING")
	for _, f := range fields(reflect.TypeOf(spec).Elem()) {
		def := f.Tag.Get("default")
		if f.Tag.Get("required") == "true" {
			def = "(required)"
		}
		if def == "" {
			def = "-"
		}
		cur, set := os.LookupEnv(f.Tag.Get("envconfig"))
		switch {
		case !set:
			cur = "-"
		case f.Tag.Get("secret") == "true":
			cur = "(set, hidden)"
		case f.Tag.Get("secret") == "url":
			cur = Redact(cur)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Tag.Get("envconfig"), def, cur, f.Tag.Get("desc"))
	}
	tw.Flush()
}

// fields lists the struct fields carrying an envconfig tag, flattening
// embedded structs in declaration order.
func fields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			out = append(out, fields(f.Type)...)
			continue
		}
		if f.Tag.Get("envconfig") != "" {
			out = append(out, f)
		}
	}
	return out
}

var (
	dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	urlPassword = regexp.MustCompile(`(://[^:/@]*:)([^@]*)@`)
)

// Redact hides the password in a connection string, in URL
// (postgres://user:secret@host/db, nats://user:secret@host) or keyword/value
// (host=... password=secret) form, so that it can be printed or logged.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		for k := range q {
			if k == "password" || k == "sslpassword" {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	dsn = urlPassword.ReplaceAllString(dsn, "${1}xxxxx@")
	return dsnPassword.ReplaceAllString(dsn, "${1}xxxxx")
}
