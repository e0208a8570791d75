package config

import (
	"fmt"
	"io"
	"os"
	"reflect"
	"text/tabwriter"

	"github.com/tenantcleanup/tenant-cleanup/internal/redact"
)

// Usage writes the environment variables spec reads: name, default, meaning
// with the allowed range, and the value currently set, with passwords,
// tokens and keys redacted.
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
		case f.Tag.Get("secret") == "postgres":
			cur = redact.Postgres(cur)
		case f.Tag.Get("secret") == "shards":
			cur = redact.Shards(cur)
		case f.Tag.Get("secret") == "nats":
			cur = redact.NATS(cur)
		case f.Tag.Get("secret") != "":
			cur = Redact(cur)
		}
		desc := f.Tag.Get("desc")
		if r := rangeText(f); r != "" {
			desc += " (" + r + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Tag.Get("envconfig"), def, cur, desc)
	}
	tw.Flush()
	printShards(w, spec)
}

// printShards lists the data-plane shards spec would use, passwords hidden
// (nothing when spec reads no data plane).
func printShards(w io.Writer, spec any) {
	v := reflect.ValueOf(spec).Elem()
	if v.Kind() != reflect.Struct {
		return
	}
	var d DataPlane
	found := false
	for _, f := range fields(v.Type()) {
		switch f.Tag.Get("envconfig") {
		case "DATA_PLANE_DATABASE_URL":
			d.DataPlaneURL, found = os.Getenv("DATA_PLANE_DATABASE_URL"), true
		case "DATA_PLANE_SHARD_NAME":
			d.ShardName = os.Getenv("DATA_PLANE_SHARD_NAME")
		case "ONYX_DB_SHARDS":
			d.ShardsJSON = os.Getenv("ONYX_DB_SHARDS")
		case "ONYX_DB_DEFAULT_SHARD":
			d.DefaultShardName = os.Getenv("ONYX_DB_DEFAULT_SHARD")
		case "ONYX_DB_CATALOG_SHARD":
			d.CatalogShardName = os.Getenv("ONYX_DB_CATALOG_SHARD")
		}
	}
	if !found {
		return
	}
	fmt.Fprintln(w, "\nData-plane shards (from the variables above):")
	shards, err := d.Shards()
	if err != nil {
		fmt.Fprintf(w, "  invalid: %s\n", redact.Any(err.Error()))
		return
	}
	for _, s := range shards {
		fmt.Fprintf(w, "  %s\n", s.Redacted())
	}
}

// fields lists the struct fields carrying an envconfig tag, flattening
// embedded structs in declaration order. Each field's Index is its path
// from t (for reflect.Value.FieldByIndex).
func fields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for _, g := range fields(f.Type) {
				g.Index = append([]int{i}, g.Index...)
				out = append(out, g)
			}
			continue
		}
		if f.Tag.Get("envconfig") != "" {
			out = append(out, f)
		}
	}
	return out
}

// Redact hides the secrets of a connection string so that it can be printed
// or logged: the password of a PostgreSQL URL (postgres://user:secret@host/db,
// ?password=secret) or keyword/value string (password=secret,
// password='se cret'), and in every URL of a comma-separated NATS URL list
// the password of user:secret@ and a bare TOKEN@ (a token, an nkey or a JWT).
func Redact(s string) string { return redact.Any(s) }
