package testenv

import (
	"fmt"
	"testing"
	"time"
)

// Eventually polls cond every 20ms until it returns true, failing the test
// with the message if it has not within timeout. It replaces sleeping as a
// way to wait for asynchronous work.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, fmt.Sprintf(format, args...))
		}
		<-tick.C
	}
}
