// Package buildinfo holds the version and commit of the binaries, stamped at
// build time by the Makefile:
//
//	go build -ldflags "-X github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo.version=v1.2.3 \
//	  -X github.com/tenantcleanup/tenant-cleanup/pkg/buildinfo.commit=abc1234"
//
// Unstamped (go run, go test) the version is "devel" and the commit is the
// one the Go toolchain recorded, if any.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Stamped by -ldflags -X; empty when not.
var (
	version string
	commit  string
)

// Version is the release version of this binary, "devel" when not stamped.
func Version() string {
	if version == "" {
		return "devel"
	}
	return version
}

// Commit is the git commit this binary was built from: stamped, else the
// toolchain's vcs.revision (with "-dirty" for a modified tree), else
// "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, dirty := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
		if rev != "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if dirty {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// String is the line --version prints: "NAME VERSION (commit COMMIT, goX.Y)".
func String(name string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", name, Version(), Commit(), runtime.Version())
}
