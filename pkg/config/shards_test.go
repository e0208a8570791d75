package config

import (
	"bytes"
	"strings"
	"testing"
)

// TestShardsAsOnyxWritesThem: ONYX_DB_SHARDS, ONYX_DB_DEFAULT_SHARD and
// ONYX_DB_CATALOG_SHARD are read as Onyx reads them (overrides of the parts
// of the default shard's URL; numbers accepted for the port; empty is unset),
// and DATA_PLANE_SHARD_NAME still names the single shard.
func TestShardsAsOnyxWritesThem(t *testing.T) {
	base := "postgres://app:base-pw@db1:5432/onyx?sslmode=disable"
	tests := []struct {
		name                                  string
		legacy, shards, defaultShard, catalog string
		want                                  []Shard
	}{
		{name: "unset: one shard named default", want: []Shard{{Name: "default", URL: base, Catalog: true, Default: true}}},
		{name: "DATA_PLANE_SHARD_NAME names the one shard", legacy: "shard_1",
			want: []Shard{{Name: "shard_1", URL: base, Catalog: true, Default: true}}},
		{name: "empty values are unset", shards: "  ", defaultShard: "", catalog: "",
			want: []Shard{{Name: "default", URL: base, Catalog: true, Default: true}}},
		{name: "overrides", shards: `{"shard-b": {"host": "db2", "port": 6543, "db": "danswer"}, "shard-c": {"user": "u3", "password": "p@ss:w/rd"}}`,
			want: []Shard{
				{Name: "default", URL: base, Catalog: true, Default: true},
				{Name: "shard-b", URL: "postgres://app:base-pw@db2:6543/danswer?sslmode=disable"},
				{Name: "shard-c", URL: "postgres://u3:p%40ss%3Aw%2Frd@db1:5432/onyx?sslmode=disable"},
			}},
		{name: "catalog elsewhere", shards: `{"b": {"port": "5433"}}`, defaultShard: "a", catalog: "b",
			want: []Shard{
				{Name: "b", URL: "postgres://app:base-pw@db1:5433/onyx?sslmode=disable", Catalog: true},
				{Name: "a", URL: base, Default: true},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DataPlane{DataPlaneURL: base, ShardLayout: ShardLayout{ShardName: tt.legacy, ShardsJSON: tt.shards,
				DefaultShardName: tt.defaultShard, CatalogShardName: tt.catalog}}
			got, err := d.Shards()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("Shards() = %+v; want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("shard %d = %+v; want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestShardErrorsNameTheVariable: what Onyx refuses at startup is a
// configuration error here too, naming the variable.
func TestShardErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		name, shards, defaultShard, catalog, legacy string
		want                                        []string
	}{
		{name: "not JSON", shards: `{"b": `, want: []string{"ONYX_DB_SHARDS is not valid JSON"}},
		{name: "not an object", shards: `["b"]`, want: []string{"ONYX_DB_SHARDS must be a JSON object", "list"}},
		{name: "shard not an object", shards: `{"b": "db2"}`, want: []string{`ONYX_DB_SHARDS["b"] must be an object`}},
		{name: "unknown keys", shards: `{"b": {"hostname": "db2", "sslmode": "off"}}`,
			want: []string{`ONYX_DB_SHARDS["b"] has unknown keys`, `"hostname"`, `"sslmode"`}},
		{name: "redefined default", shards: `{"default": {"host": "db2"}}`,
			want: []string{"ONYX_DB_SHARDS must not redefine the default shard \"default\""}},
		{name: "redefined named default", shards: `{"a": {"host": "db2"}}`, defaultShard: "a",
			want: []string{"must not redefine the default shard \"a\""}},
		{name: "unknown catalog", shards: `{"b": {"host": "db2"}}`, catalog: "c",
			want: []string{`ONYX_DB_CATALOG_SHARD="c" is not a configured shard`, "known: b, default"}},
		{name: "unknown catalog without shards", catalog: "c", want: []string{`ONYX_DB_CATALOG_SHARD="c"`}},
		{name: "bad port", shards: `{"b": {"port": "x"}}`, want: []string{`ONYX_DB_SHARDS["b"]`, "port"}},
		{name: "nested value", shards: `{"b": {"host": {"x": 1}}}`, want: []string{`ONYX_DB_SHARDS["b"].host`}},
		{name: "legacy disagrees", legacy: "s1", defaultShard: "s2", want: []string{"DATA_PLANE_SHARD_NAME", "ONYX_DB_DEFAULT_SHARD"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setRequired(t)
			t.Setenv("ONYX_DB_SHARDS", tt.shards)
			t.Setenv("ONYX_DB_DEFAULT_SHARD", tt.defaultShard)
			t.Setenv("ONYX_DB_CATALOG_SHARD", tt.catalog)
			t.Setenv("DATA_PLANE_SHARD_NAME", tt.legacy)
			var c Cleaner
			err := Load(&c)
			if err == nil {
				t.Fatal("loaded; want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

// TestUsageShowsShardsWithoutPasswords: -h lists the shards and hides
// every password, in the variable and in the shards' URLs.
func TestUsageShowsShardsWithoutPasswords(t *testing.T) {
	setRequired(t)
	t.Setenv("DATA_PLANE_DATABASE_URL", "postgres://app:base-secret@db1/onyx")
	t.Setenv("ONYX_DB_SHARDS", `{"shard-b": {"host": "db2", "password": "shard-secret"}, "shard-c": {"port": 6000}}`)
	t.Setenv("ONYX_DB_CATALOG_SHARD", "shard-b")
	var buf bytes.Buffer
	Usage(&buf, &Cleaner{})
	out := buf.String()
	for _, secret := range []string{"base-secret", "shard-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("usage prints %s:\n%s", secret, out)
		}
	}
	for _, want := range []string{"ONYX_DB_SHARDS", "ONYX_DB_DEFAULT_SHARD", "ONYX_DB_CATALOG_SHARD",
		`"password":"xxxxx"`, "shard-b (catalog): postgres://app:xxxxx@db2/onyx", "default (default): postgres://app:xxxxx@db1/onyx",
		"shard-c: postgres://app:xxxxx@db1:6000/onyx"} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	t.Setenv("ONYX_DB_SHARDS", `{"b": {"password": "shard-secret"`)
	buf.Reset()
	Usage(&buf, &Cleaner{})
	if out := buf.String(); strings.Contains(out, "shard-secret") || !strings.Contains(out, "invalid: ONYX_DB_SHARDS is not valid JSON") {
		t.Errorf("usage with invalid ONYX_DB_SHARDS:\n%s", out)
	}
}
