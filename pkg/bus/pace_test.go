package bus

import (
	"context"
	"testing"
	"time"
)

// Each shard's pacer of a replica reports under a key of its own
// (pace.<replica>.<shard>): shards whose names differ only in characters a
// key cannot hold ("a.b", "a_b", "a b") must not share one, or status shows
// one of them only and their writers delete each other's report (SetPace
// assumes "the replica is the key's only writer").
//
// (sanitizeKey turns every such character into '_': the shard part gets a
// hash of the name when sanitizing changed it.)
func TestPaceReportsOfShardsWithSimilarNamesAreKeptApart(t *testing.T) {
	b := newBus(t)
	ctx := context.Background()
	now := time.Now()
	for _, shard := range []string{"a.b", "a_b"} {
		if err := b.SetPace(ctx, PaceReport{By: "cleaner@host/1", Shard: shard, State: "running", At: now}); err != nil {
			t.Fatal(err)
		}
	}
	paces, err := b.Paces(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	var shards []string
	for _, p := range paces {
		shards = append(shards, p.Shard)
	}
	if len(paces) != 2 {
		t.Fatalf("pace reports of shards a.b and a_b of one replica: %q; want both", shards)
	}
}
