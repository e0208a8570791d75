package testenv

import (
	"fmt"
	"os"
	"testing"
)

// Outside is a testing.TB for a program that uses these helpers outside
// `go test` (cmd/bench): Fatal, Fatalf and Errorf panic with a Failure,
// which Try turns back into an error, and its cleanups run, last first, at
// Close. Only the methods below may be called (the helpers here call no
// other).
type Outside struct {
	testing.TB // nil
	cleanups   []func()
}

// Failure is what an Outside's Fatal panics with.
type Failure string

func (f Failure) Error() string { return string(f) }

// Helper does nothing.
func (t *Outside) Helper() {}

// Failed is false: a failure panics.
func (t *Outside) Failed() bool { return false }

// Cleanup registers f to run at Close.
func (t *Outside) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

// Fatal panics with a Failure.
func (t *Outside) Fatal(args ...any) { panic(Failure(fmt.Sprint(args...))) }

// Fatalf panics with a Failure.
func (t *Outside) Fatalf(format string, args ...any) { panic(Failure(fmt.Sprintf(format, args...))) }

// Errorf panics with a Failure: a program has no test to go on with.
func (t *Outside) Errorf(format string, args ...any) { panic(Failure(fmt.Sprintf(format, args...))) }

// Logf writes to standard error.
func (t *Outside) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// TempDir is a new temporary directory, removed at Close.
func (t *Outside) TempDir() string {
	dir, err := os.MkdirTemp("", "tenant-cleanup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Close runs the cleanups, last registered first.
func (t *Outside) Close() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

// Scope calls fn with an Outside of its own, closed when fn returns or
// panics: what fn starts ends with it.
func Scope(fn func(t *Outside)) {
	t := &Outside{}
	defer t.Close()
	fn(t)
}

// Try calls fn and returns the Failure it panicked with as an error; any
// other panic goes on.
func Try(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(Failure)
			if !ok {
				panic(r)
			}
			err = f
		}
	}()
	fn()
	return nil
}
