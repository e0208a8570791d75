package ctl

import (
	"time"

	"github.com/tenantcleanup/tenant-cleanup/pkg/analyzer"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

// reportView is report -o json.
type reportView struct {
	At           time.Time             `json:"at"`
	InactiveDays int                   `json:"inactive_days"`
	Tenants      []reportTenantView    `json:"tenants"`
	Candidates   int                   `json:"candidates"`
	Unreadable   []analyzer.Unreadable `json:"unreadable"`
}

// reportTenantView is one tenant of report -o json with its verdict.
type reportTenantView struct {
	TenantID       tenant.ID  `json:"tenant_id"`
	SchemaExists   bool       `json:"schema_exists"`
	InControlPlane bool       `json:"in_control_plane"`
	Status         string     `json:"status"`
	Documents      int64      `json:"documents"`
	Users          int64      `json:"users"`
	LastActivity   *time.Time `json:"last_activity"`
	Eligible       bool       `json:"eligible"`
	Reason         string     `json:"reason,omitempty"`
	Group          string     `json:"group"`
}

func newTenantVerdict(t analyzer.Tenant, inactiveDays int) reportTenantView {
	v := reportTenantView{TenantID: t.ID, SchemaExists: t.SchemaExists, InControlPlane: t.InControlPlane, Status: t.Status,
		Documents: t.Activity.Documents, Users: t.Activity.Users, Eligible: t.Eligible, Reason: t.Reason,
		Group: analyzer.GroupLabel(t.Group, inactiveDays)}
	if l := t.Activity.Last(); !l.IsZero() {
		l = l.UTC()
		v.LastActivity = &l
	}
	return v
}

func newReportView(r *analyzer.Report) reportView {
	v := reportView{At: r.At.UTC(), InactiveDays: r.InactiveDays, Tenants: []reportTenantView{}, Candidates: len(r.Candidates()),
		Unreadable: r.Unreadable}
	for _, t := range r.Tenants {
		v.Tenants = append(v.Tenants, newTenantVerdict(t, r.InactiveDays))
	}
	return v
}
