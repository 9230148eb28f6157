package cliflag

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
)

// ErrVersion is what Parse returns after printing the version for
// -version; ExitCode turns it into exit code 0.
var ErrVersion = errors.New("version printed")

// buildVersion is this build's version: the main module's version as the Go
// toolchain recorded it (a release tag, or a pseudo-version when built from
// a git checkout), or "(devel)" when it recorded none. A "(devel)" build
// from a checkout adds its commit.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	return versionOf(bi)
}

func versionOf(bi *debug.BuildInfo) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	if v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " " + rev + dirty
	}
	return v
}

// VersionLine is the line -version prints: the command's name, its
// [Version] and the Go release that built it, such as
// "worker v0.4.0 (go1.26.0)".
func VersionLine(command string) string {
	return fmt.Sprintf("%s %s (%s)", command, buildVersion(), runtime.Version())
}
