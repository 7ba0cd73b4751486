// Package version tells which build of grpcws is running, from what the Go
// toolchain records in the binary: the module's version, and the commit it
// was built from when it was built in a git checkout.
package version

import (
	"runtime/debug"
	"strings"
)

// Info describes the build.
type Info struct {
	// Version is the module's version: a tag such as "v1.4.0" when built
	// with `go install module@version`, "(devel)" or a pseudo-version when
	// built from a checkout, "" when unknown.
	Version string
	// Revision is the commit built from, when known; Time its commit time
	// (RFC 3339); Modified whether the checkout had uncommitted changes.
	Revision string
	Time     string
	Modified bool
	// GoVersion is the toolchain that built the binary: "go1.26.0".
	GoVersion string
}

// Get reads the build information of the running binary.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{}
	}
	info := Info{Version: bi.Main.Version, GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is i in one line: "v1.4.0", or "(devel) 0feb0c2a1b3c (modified)
// 2026-03-02T10:00:00Z", then the Go version.
func (i Info) String() string {
	parts := []string{i.Version}
	if i.Version == "" {
		parts[0] = "unknown version"
	}
	if i.Revision != "" {
		rev := i.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if i.Modified {
			rev += " (modified)"
		}
		parts = append(parts, rev)
	}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	if i.GoVersion != "" {
		parts = append(parts, i.GoVersion)
	}
	return strings.Join(parts, " ")
}
