package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/tenantcleanup/tenant-cleanup/internal/redact"
)

// OnyxDefaultShard is the default shard's name when neither
// ONYX_DB_DEFAULT_SHARD nor DATA_PLANE_SHARD_NAME names it (as in Onyx).
const OnyxDefaultShard = "default"

// shardKeys are the connection parts a shard of ONYX_DB_SHARDS may
// override, as Onyx accepts them.
var shardKeys = []string{"host", "port", "db", "user", "password"}

// Shard is one data-plane database of a sharded fleet.
type Shard struct {
	// Name is the shard's name (the key of ONYX_DB_SHARDS, or the default
	// shard's name).
	Name string
	// URL is DATA_PLANE_DATABASE_URL with the shard's overrides applied
	// (it holds the password: print it with redact.Postgres).
	URL string
	// Catalog is true for the shard holding the public tables and
	// public.tenant_shard (ONYX_DB_CATALOG_SHARD); Default for the shard of
	// a tenant without a tenant_shard row (ONYX_DB_DEFAULT_SHARD).
	Catalog, Default bool
}

// shardOverrides is one shard's object in ONYX_DB_SHARDS.
type shardOverrides map[string]string

// DefaultShard is the default shard's name: ONYX_DB_DEFAULT_SHARD, else
// DATA_PLANE_SHARD_NAME (its older alias), else "default". Empty counts as
// unset, as in Onyx.
func (d *DataPlane) DefaultShard() string {
	switch {
	case d.DefaultShardName != "":
		return d.DefaultShardName
	case d.ShardName != "":
		return d.ShardName
	}
	return OnyxDefaultShard
}

// CatalogShard is ONYX_DB_CATALOG_SHARD, else the default shard.
func (d *DataPlane) CatalogShard() string {
	if d.CatalogShardName != "" {
		return d.CatalogShardName
	}
	return d.DefaultShard()
}

// Shards returns the configured data-plane databases: the default shard
// (DATA_PLANE_DATABASE_URL) and every shard of ONYX_DB_SHARDS, the catalog
// shard first, then by name. Its errors name the variable at fault, as
// Onyx's do: ONYX_DB_SHARDS that is not a JSON object of objects, a shard
// with unknown keys or redefining the default shard, a catalog shard that
// is not configured, DATA_PLANE_SHARD_NAME naming another shard than
// ONYX_DB_DEFAULT_SHARD.
func (d *DataPlane) Shards() ([]Shard, error) {
	def := d.DefaultShard()
	if d.ShardName != "" && d.DefaultShardName != "" && d.ShardName != d.DefaultShardName {
		return nil, fmt.Errorf("DATA_PLANE_SHARD_NAME=%q and ONYX_DB_DEFAULT_SHARD=%q name different shards: "+
			"DATA_PLANE_SHARD_NAME is the older name of ONYX_DB_DEFAULT_SHARD; set one of them", d.ShardName, d.DefaultShardName)
	}
	overrides, err := parseShards(d.ShardsJSON, def)
	if err != nil {
		return nil, err
	}
	shards := []Shard{{Name: def, URL: d.DataPlaneURL, Default: true}}
	for _, name := range sortedKeys(overrides) {
		u, err := applyOverrides(d.DataPlaneURL, overrides[name])
		if err != nil {
			return nil, fmt.Errorf("ONYX_DB_SHARDS[%q]: %w", name, err)
		}
		shards = append(shards, Shard{Name: name, URL: u})
	}
	catalog := d.CatalogShard()
	i := slices.IndexFunc(shards, func(s Shard) bool { return s.Name == catalog })
	if i < 0 {
		return nil, fmt.Errorf("ONYX_DB_CATALOG_SHARD=%q is not a configured shard (known: %s)", catalog, strings.Join(names(shards), ", "))
	}
	shards[i].Catalog = true
	c := shards[i]
	shards = append(shards[:i], shards[i+1:]...)
	return append([]Shard{c}, shards...), nil
}

func names(shards []Shard) []string {
	var out []string
	for _, s := range shards {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// parseShards reads ONYX_DB_SHARDS as Onyx does: a JSON object of shard
// name → object of overrides among host, port, db, user, password (strings,
// or a number, as Onyx turns each into a string); the default shard is
// configured by DATA_PLANE_DATABASE_URL and must not be redefined. Empty
// (or blank) is no other shard.
func parseShards(raw, def string) (map[string]shardOverrides, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, nil
	}
	var top map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(raw))
	if err := dec.Decode(&top); err != nil || top == nil {
		var anyValue any
		if jerr := json.Unmarshal([]byte(raw), &anyValue); jerr != nil {
			return nil, fmt.Errorf("ONYX_DB_SHARDS is not valid JSON: %v", jerr)
		}
		return nil, fmt.Errorf("ONYX_DB_SHARDS must be a JSON object of shard name -> overrides, got %s", jsonKind(anyValue))
	}
	if dec.More() {
		return nil, errors.New("ONYX_DB_SHARDS is not valid JSON: data after the object")
	}
	out := make(map[string]shardOverrides, len(top))
	for _, name := range sortedKeys(top) {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(top[name], &obj); err != nil || obj == nil {
			return nil, fmt.Errorf("ONYX_DB_SHARDS[%q] must be an object of connection overrides", name)
		}
		if name == "" {
			return nil, errors.New("ONYX_DB_SHARDS has a shard with an empty name")
		}
		if name == def {
			return nil, fmt.Errorf("ONYX_DB_SHARDS must not redefine the default shard %q; configure it via "+
				"DATA_PLANE_DATABASE_URL (ONYX_DB_DEFAULT_SHARD names it)", def)
		}
		var unknown []string
		o := shardOverrides{}
		for _, k := range sortedKeys(obj) {
			if !slices.Contains(shardKeys, k) {
				unknown = append(unknown, strconv.Quote(k))
				continue
			}
			v, err := scalar(obj[k])
			if err != nil {
				return nil, fmt.Errorf("ONYX_DB_SHARDS[%q].%s: %v", name, k, err)
			}
			o[k] = v
		}
		if len(unknown) > 0 {
			return nil, fmt.Errorf("ONYX_DB_SHARDS[%q] has unknown keys: [%s] (known: %s)", name,
				strings.Join(unknown, ", "), strings.Join(shardKeys, ", "))
		}
		out[name] = o
	}
	return out, nil
}

// scalar is a JSON string or number as text.
func scalar(raw json.RawMessage) (string, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&n); err == nil {
		return n.String(), nil
	}
	return "", errors.New("must be a string or a number")
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "str"
	case float64:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// applyOverrides is base (a PostgreSQL URL or keyword/value string) with the
// parts o names replaced.
func applyOverrides(base string, o shardOverrides) (string, error) {
	if port, ok := o["port"]; ok {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %q is not a port number", port)
		}
	}
	lower := strings.ToLower(strings.TrimSpace(base))
	if !strings.HasPrefix(lower, "postgres://") && !strings.HasPrefix(lower, "postgresql://") {
		// keyword/value: a later keyword wins.
		var b strings.Builder
		b.WriteString(base)
		for _, k := range shardKeys {
			v, ok := o[k]
			if !ok {
				continue
			}
			key := map[string]string{"db": "dbname"}[k]
			if key == "" {
				key = k
			}
			b.WriteString(" " + key + "='" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'")
		}
		return b.String(), nil
	}
	u, err := url.Parse(strings.TrimSpace(base))
	if err != nil {
		return "", errors.New("DATA_PLANE_DATABASE_URL is not a valid URL")
	}
	if strings.Contains(u.Host, ",") && (o["host"] != "" || o["port"] != "") {
		return "", errors.New("DATA_PLANE_DATABASE_URL lists several hosts: give the shard a full host and port")
	}
	host, port := u.Hostname(), u.Port()
	if v, ok := o["host"]; ok {
		host = v
	}
	if v, ok := o["port"]; ok {
		port = v
	}
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	u.Host = host
	if port != "" {
		u.Host += ":" + port
	}
	if v, ok := o["db"]; ok {
		u.Path, u.RawPath = "/"+v, ""
	}
	user, pass, hasPass := "", "", false
	if u.User != nil {
		user = u.User.Username()
		pass, hasPass = u.User.Password()
	}
	if v, ok := o["user"]; ok {
		user = v
	}
	if v, ok := o["password"]; ok {
		pass, hasPass = v, true
	}
	switch {
	case hasPass:
		u.User = url.UserPassword(user, pass)
	case user != "":
		u.User = url.User(user)
	}
	return u.String(), nil
}

// Redacted is the shard as -h prints it: its name, role and URL without
// the password.
func (s Shard) Redacted() string {
	role := ""
	switch {
	case s.Catalog && s.Default:
		role = " (default, catalog)"
	case s.Catalog:
		role = " (catalog)"
	case s.Default:
		role = " (default)"
	}
	return s.Name + role + ": " + redact.Postgres(s.URL)
}
