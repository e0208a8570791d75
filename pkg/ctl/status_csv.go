package ctl

import (
	"strconv"

	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// exampleID is the tenant id of the help's examples.
const exampleID = "tenant_0aef62e7-9fbf-4bb6-8894-f1441fca6745"

// tenantCSVHeader is the header of status TENANT_ID -o csv.
var tenantCSVHeader = []string{"tenant_id", "known", "phase", "since", "reason", "requested_by", "hold", "hold_active", "cleaned_at"}

func (v tenantView) csv() []string {
	text := tenant.SpreadsheetSafe
	out := []string{string(v.TenantID), strconv.FormatBool(v.Known), "", "", "", "", "", "", ""}
	if s := v.State; s != nil {
		out[2], out[3], out[4], out[5] = string(s.Phase), stamp(s.Since), text(s.Reason), text(s.RequestedBy)
	}
	if h := v.Hold; h != nil {
		out[6], out[7] = text(h.Reason), strconv.FormatBool(h.Active)
	}
	if l := v.Ledger; l != nil {
		out[8] = stamp(l.CleanedAt)
	}
	return out
}

// phaseCSVHeader is the header of status -o csv.
var phaseCSVHeader = []string{"phase", "tenants", "oldest_tenant", "oldest_since"}

func (v fleetView) phaseCSV() [][]string {
	var rows [][]string
	for _, p := range v.Phases {
		since := ""
		if p.OldestSince != nil {
			since = stamp(*p.OldestSince)
		}
		rows = append(rows, []string{string(p.Phase), strconv.Itoa(p.Tenants), string(p.Oldest), since})
	}
	return rows
}
