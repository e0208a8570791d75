package testenv

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestProcessStopsAndSaysHowItFailed(t *testing.T) {
	// A program that exits 0 on SIGTERM, as the services do.
	p := StartProcess(t, exec.Command("sh", "-c", `trap 'exit 0' TERM; echo started; while :; do sleep 0.05; done`))
	Eventually(t, 5*time.Second, func() bool { return strings.Contains(p.Output.String(), "started") }, "the program's output")
	if p.Exited() || p.PeakRSS() <= 0 {
		t.Fatalf("running: exited %v, peak RSS %.2f MiB", p.Exited(), p.PeakRSS())
	}
	if err := p.Stop(); err != nil || !p.Exited() {
		t.Fatalf("Stop: %v (exited %v)", err, p.Exited())
	}
	failing := StartProcess(t, exec.Command("sh", "-c", "echo last words; exit 3"))
	Eventually(t, 5*time.Second, failing.Exited, "the failing program ends")
	if err := failing.Stop(); err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "last words") {
		t.Errorf("Stop of a program that exited 3: %v", err)
	}
}

func TestCopyDatabaseIsAFreshCopyDroppedAtTheEnd(t *testing.T) {
	var name string
	t.Run("copy", func(t *testing.T) {
		conn, err := pgx.Connect(context.Background(), CopyDatabase(t, "template1"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	admin, err := pgx.Connect(context.Background(), AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var left bool
	if err := admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&left); err != nil || left {
		t.Errorf("the copy %s is left after its test (%v)", name, err)
	}
}

func TestFreeAddrIsFree(t *testing.T) {
	l, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}
