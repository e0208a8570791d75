package rediskeys

import (
	"context"
	"fmt"
	"strings"
)

// Inventory is what Redis holds of every tenant, read in one pass: the
// tenants that have anything there, without a SCAN of the whole keyspace
// per tenant. Tenant ids are kept as stored, valid or not: the caller
// validates them (tenant.ParseID) before any use.
type Inventory struct {
	// Keys counts, by the text before their first ':', the keys that
	// start with "tenant_" and hold a ':'. A key that SCAN returns twice
	// (it may, while the server resizes its table) is counted twice: the
	// counts are for people; what is removed is decided by prefix.
	Keys map[string]int64
	// Gated and Active are the members of cloud:gated_tenants and
	// cloud:active_tenants.
	Gated, Active map[string]bool
}

// Count is what the inventory holds of one tenant id: keys and memberships.
func (inv Inventory) Count(id string) int64 {
	n := inv.Keys[id]
	if inv.Gated[id] {
		n++
	}
	if inv.Active[id] {
		n++
	}
	return n
}

// Inventory scans the database once (SCAN MATCH tenant_*, COUNT ScanCount)
// and the two tenant sets (SSCAN, ZSCAN).
func (s *Store) Inventory(ctx context.Context) (Inventory, error) {
	inv := Inventory{Keys: map[string]int64{}, Gated: map[string]bool{}, Active: map[string]bool{}}
	// No set of the keys seen: its memory would grow with the keyspace.
	err := s.scan(ctx, "tenant_", func(page []string) error {
		for _, k := range page {
			if id, _, ok := strings.Cut(k, ":"); ok {
				inv.Keys[id]++
			}
		}
		return nil
	})
	if err != nil {
		return inv, fmt.Errorf("list the tenants' Redis keys: %w", err)
	}
	for _, set := range []struct {
		name    string
		members map[string]bool
		sorted  bool
	}{{GatedTenants, inv.Gated, false}, {ActiveTenants, inv.Active, true}} {
		var cursor uint64
		for {
			sctx, cancel := context.WithTimeout(ctx, s.timeout)
			var (
				page []string
				next uint64
				err  error
			)
			if set.sorted {
				page, next, err = s.client.ZScan(sctx, set.name, cursor, "", ScanCount).Result()
			} else {
				page, next, err = s.client.SScan(sctx, set.name, cursor, "", ScanCount).Result()
			}
			if err != nil {
				err = s.kind(sctx, "scan "+set.name, err)
				cancel()
				return inv, fmt.Errorf("list the members of %s: %w", set.name, err)
			}
			cancel()
			step := 1
			if set.sorted {
				step = 2 // member, score
			}
			for i := 0; i < len(page); i += step {
				set.members[page[i]] = true
			}
			if next == 0 {
				break
			}
			cursor = next
		}
	}
	return inv, nil
}

// Describe names the server and database, for operators' output.
func (s *Store) Describe() string {
	return fmt.Sprintf("Redis %s db %d", s.cfg.Addr(), s.cfg.DB)
}
