package testbackend

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/internal/descset"
)

// WriteDescriptorSet writes files and their imports as a descriptor set, the
// way `buf build -o` does, to a file in the test's temporary directory, and
// returns its path.
func WriteDescriptorSet(t testing.TB, files ...protoreflect.FileDescriptor) string {
	t.Helper()
	b, err := descset.Marshal(files...)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "api.binpb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
