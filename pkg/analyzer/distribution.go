package analyzer

import (
	"slices"
	"strings"
)

// Distribution summarises the documents per tenant of a set of tenants.
type Distribution struct {
	Tenants                         int
	Median, P75, P90, P95, P99, Max int64
}

// Documents returns the distribution of documents per tenant, computed as
// the original analyze script did: the value at index ⌊n·p⌋ of the counts
// sorted ascending (the median at index ⌊n/2⌋). Empty input gives zeros.
func Documents(tenants []Tenant) Distribution {
	counts := make([]int64, len(tenants))
	for i, t := range tenants {
		counts[i] = t.Activity.Documents
	}
	slices.Sort(counts)
	n := len(counts)
	if n == 0 {
		return Distribution{}
	}
	at := func(p float64) int64 { return counts[min(int(float64(n)*p), n-1)] }
	return Distribution{Tenants: n, Median: counts[n/2], P75: at(0.75), P90: at(0.90), P95: at(0.95), P99: at(0.99),
		Max: counts[n-1]}
}

// TopByDocuments returns up to n tenants with the most documents, most first
// (ties by tenant id).
func (r *Report) TopByDocuments(n int) []Tenant {
	out := slices.Clone(r.Tenants)
	slices.SortFunc(out, func(a, b Tenant) int {
		if a.Activity.Documents != b.Activity.Documents {
			if a.Activity.Documents > b.Activity.Documents {
				return -1
			}
			return 1
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	return out[:min(n, len(out))]
}

// WithoutDocuments returns the tenants with no documents, by tenant id.
func (r *Report) WithoutDocuments() []Tenant {
	return r.filter(func(t Tenant) bool { return t.Activity.Documents == 0 })
}

// WithoutUsers returns the tenants with no users, by tenant id.
func (r *Report) WithoutUsers() []Tenant {
	return r.filter(func(t Tenant) bool { return t.Activity.Users == 0 })
}

func (r *Report) filter(keep func(Tenant) bool) []Tenant {
	var out []Tenant
	for _, t := range r.Tenants { // already sorted by id
		if keep(t) {
			out = append(out, t)
		}
	}
	return out
}
