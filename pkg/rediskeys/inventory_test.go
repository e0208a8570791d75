package rediskeys_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tenantcleanup/tenant-cleanup/pkg/rediskeys"
)

// Inventory counts, in one SCAN, the keys of every prefix before a ':'
// that starts with tenant_, whatever it is (the caller validates it), and
// reads the two tenant sets.
func TestInventory(t *testing.T) {
	t.Parallel()
	_, s, c := setup(t)
	ctx := context.Background()
	seed(t, c, cleaned, 2500)
	seed(t, c, longer, 3)
	c.Set(ctx, "tenant_i-ab", "no colon: not a tenant's key", 0)
	c.Set(ctx, "tenant_[*]:x", "counted under its raw prefix", 0)
	c.Set(ctx, "celery:tenant_i-ab:x", "not a tenant prefix", 0)
	c.SAdd(ctx, rediskeys.GatedTenants, string(shorter))
	c.ZAdd(ctx, rediskeys.ActiveTenants, redis.Z{Score: 1, Member: string(shorter)}, redis.Z{Score: 2, Member: string(cleaned)})
	inv, err := s.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Keys[string(cleaned)] != 2500 || inv.Keys[string(longer)] != 3 || inv.Keys["tenant_[*]"] != 1 || len(inv.Keys) != 3 {
		t.Fatalf("keys %v", inv.Keys)
	}
	if inv.Count(string(shorter)) != 2 || inv.Count(string(cleaned)) != 2501 || inv.Count("tenant_i-abcd") != 0 {
		t.Fatalf("counts: %d, %d", inv.Count(string(shorter)), inv.Count(string(cleaned)))
	}
}
