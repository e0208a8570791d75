package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Process is a program run for the test (a service's binary, say), its
// standard output and error in Output.
type Process struct {
	Cmd    *exec.Cmd
	Output SyncBuffer
	done   chan struct{}
	peak   float64
}

// StartProcess starts cmd for t; when t ends it is stopped as by Stop.
func StartProcess(t testing.TB, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.Output, &p.Output
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start %s: %v", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.Stop() })
	return p
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop asks the process to shut down (SIGTERM) unless it has ended, and
// waits until it has. Its error is the process's failure (Failure) when it
// did not exit 0.
func (p *Process) Stop() error {
	if !p.Exited() {
		p.PeakRSS()
		_ = p.Cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	if !p.Cmd.ProcessState.Success() {
		return p.Failure()
	}
	return nil
}

// Failure says how the process ended, with the last lines of its output.
func (p *Process) Failure() error {
	lines := strings.Split(strings.TrimSpace(p.Output.String()), "\n")
	return fmt.Errorf("%s: %v\n%s", p.Cmd.Path, p.Cmd.ProcessState, strings.Join(lines[max(0, len(lines)-6):], "\n"))
}

// PeakRSS is the highest peak resident set size (VmHWM, MiB) read from the
// running process so far, this reading included; Stop reads it once more.
// A Go program's child starts with its parent's ru_maxrss, so VmHWM, not
// getrusage, is the child's own.
func (p *Process) PeakRSS() float64 {
	if !p.Exited() {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
		_, hwm, _ := strings.Cut(string(status), "VmHWM:")
		kb, _ := strconv.ParseFloat(strings.Fields(hwm + " 0")[0], 64)
		p.peak = max(p.peak, kb/1024)
	}
	return p.peak
}
