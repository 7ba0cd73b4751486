package version_test

import (
	"strings"
	"testing"

	"github.com/grpcws/grpcws/internal/version"
)

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		info version.Info
		want string
	}{
		{"release", version.Info{Version: "v1.4.0", GoVersion: "go1.26.0"}, "v1.4.0 go1.26.0"},
		{"checkout", version.Info{Version: "(devel)", Revision: "0feb0c2a1b3c4d5e6f708192a3b4c5d6e7f80910", Time: "2026-03-02T10:00:00Z", GoVersion: "go1.26.0"},
			"(devel) 0feb0c2a1b3c 2026-03-02T10:00:00Z go1.26.0"},
		{"modified checkout", version.Info{Version: "(devel)", Revision: "0feb0c2", Modified: true},
			"(devel) 0feb0c2 (modified)"},
		{"nothing known", version.Info{}, "unknown version"},
	}
	for _, tt := range tests {
		if got := tt.info.String(); got != tt.want {
			t.Errorf("%s: %q; want %q", tt.name, got, tt.want)
		}
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	// A test binary has build information, with the toolchain's version.
	if got := version.Get(); !strings.HasPrefix(got.GoVersion, "go1.") {
		t.Errorf("Get() = %+v; want the Go version at least", got)
	}
}
