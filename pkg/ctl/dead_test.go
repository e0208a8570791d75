package ctl

import (
	"context"
	"fmt"
	"testing"

	"github.com/tenantcleanup/tenant-cleanup/pkg/bus"
	"github.com/tenantcleanup/tenant-cleanup/pkg/tenant"
)

func TestDeadListAndReplay(t *testing.T) {
	w := newWorld(t)
	stdout, _ := mustRun(t, 0, "dead", "list")
	contains(t, "dead list of nothing", stdout, "no dead letters")

	d := w.deadLetter(idA)
	stdout, _ = mustRun(t, 0, "dead", "list")
	if lineWith(stdout, fmt.Sprint(d.Seq), stamp(d.Time), "marker", idA, " 1 ", `relation "document" does not exist`, bus.SubjectCandidate) == "" {
		t.Errorf("dead list:\n%s", stdout)
	}
	contains(t, "dead list", stdout, "SEQ", "CONSUMER", "FAILURES", "REASON", "SUBJECT", "1 dead letter;")
	stdout, _ = mustRun(t, 0, "status", idA)
	contains(t, "status of a dead tenant", stdout, "dead: its message failed too often")

	// Replaying an unknown sequence fails; the real one is re-published and removed.
	_, stderr := mustRun(t, 1, "dead", "replay", "999")
	contains(t, "dead replay 999", stderr, "no dead letter 999 (tenantctl dead list shows them)")
	seq := w.streamLastSeq()
	stdout, _ = mustRun(t, 0, "dead", "replay", fmt.Sprint(d.Seq))
	contains(t, "dead replay", stdout, fmt.Sprintf("replayed dead letter %d (%s, consumer marker, 1 failures) to %s", d.Seq, idA, bus.SubjectCandidate))
	if w.streamLastSeq() != seq+1 {
		t.Errorf("dead replay did not re-publish the request")
	}
	stream, err := w.bus.JetStream().Stream(context.Background(), bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.GetLastMsgForSubject(context.Background(), bus.SubjectCandidate)
	if err != nil {
		t.Fatal(err)
	}
	if req, err := tenant.ParseRequest(msg.Data); err != nil || req.ID != idA || req.RequestedBy != "ops" {
		t.Errorf("replayed message %q: %+v, %v", msg.Data, req, err)
	}
	stdout, _ = mustRun(t, 0, "dead", "list")
	contains(t, "dead list after replay", stdout, "no dead letters")

	// The replayed request fails again (its cause was not fixed) and comes
	// back, with two more; --all replays every one.
	w.deadLetter(idB)
	w.deadLetter(idC)
	stdout, _ = mustRun(t, 0, "dead", "list")
	contains(t, "dead list", stdout, idA, idB, idC, "3 dead letters;")
	stdout, _ = mustRun(t, 0, "dead", "list", "-o", "csv")
	contains(t, "dead list -o csv", stdout, "seq,time,consumer,tenant_id,failures,reason,subject\n", idA)
	stdout, _ = mustRun(t, 0, "dead", "list", "-o", "json")
	contains(t, "dead list -o json", stdout, `"Tenant": "`+idB)
	_, stderr = mustRun(t, 2, "dead", "replay", "--all") // no terminal, no --force
	contains(t, "dead replay --all without a terminal", stderr, "--force", "nothing was replayed")
	stdout, _ = mustRun(t, 0, "dead", "replay", "--all", "--force")
	contains(t, "dead replay --all", stdout, idA, idB, idC, "replayed 3 dead letters")
	stdout, _ = mustRun(t, 0, "dead", "list")
	contains(t, "dead list after replay --all", stdout, "no dead letters")
	stdout, _ = mustRun(t, 0, "dead", "replay", "--all")
	contains(t, "dead replay --all of nothing", stdout, "no dead letters: nothing to replay")

	for _, args := range [][]string{{"dead"}, {"dead", "bogus"}, {"dead", "replay"}, {"dead", "replay", "x1"},
		{"dead", "replay", "--all", "3"}, {"dead", "list", "3"}} {
		mustRun(t, 2, args...)
	}
}
