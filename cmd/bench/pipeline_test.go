package main

import (
	"slices"
	"testing"
)

func TestKeepBestRoundKeepsOneResultPerReplicaCount(t *testing.T) {
	var res []*pipelineResult
	res = keepBestRound(res, &pipelineResult{Cleaners: 1, PerMinute: 509})
	res = keepBestRound(res, &pipelineResult{Cleaners: 2, PerMinute: 522})
	res = keepBestRound(res, &pipelineResult{Cleaners: 1, PerMinute: 381}) // slower: the first stays
	res = keepBestRound(res, &pipelineResult{Cleaners: 2, PerMinute: 530}) // faster: replaces
	if len(res) != 2 {
		t.Fatalf("%d results, want one per number of cleaners (2)", len(res))
	}
	one, two := res[0], res[1]
	if one.Cleaners != 1 || one.PerMinute != 509 || !slices.Equal(one.RoundsPerMinute, []float64{509, 381}) {
		t.Errorf("1 cleaner: kept %+v, want 509 tenants/min with rounds [509 381]", *one)
	}
	if two.Cleaners != 2 || two.PerMinute != 530 || !slices.Equal(two.RoundsPerMinute, []float64{522, 530}) {
		t.Errorf("2 cleaners: kept %+v, want 530 tenants/min with rounds [522 530]", *two)
	}
}
