package filestamp_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/filestamp"
)

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestChanged changes files in each way the package notices, and in none.
func TestChanged(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		change func(t *testing.T, dir, file string)
		want   bool
	}{
		{"untouched", func(*testing.T, string, string) {}, false},
		{"read only", func(t *testing.T, _, file string) {
			if _, err := os.ReadFile(file); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"rewritten, same size, new time", func(t *testing.T, _, file string) {
			write(t, file, "tw0")
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(file, later, later); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"rewritten, same time, new size", func(t *testing.T, _, file string) {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			write(t, file, "longer")
			if err := os.Chtimes(file, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"renamed over, same size and time", func(t *testing.T, dir, file string) {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, "tmp")
			write(t, tmp, "two")
			if err := os.Chtimes(tmp, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, file); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"removed", func(t *testing.T, _, file string) {
			if err := os.Remove(file); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			file := filepath.Join(dir, "a")
			other := filepath.Join(dir, "b")
			write(t, file, "one")
			write(t, other, "other")
			files := []string{other, file}
			before := filestamp.Take(files)
			tt.change(t, dir, file)
			got := filestamp.Take(files).Changed(before)
			want := []int(nil)
			if tt.want {
				want = []int{1}
			}
			if !slices.Equal(got, want) {
				t.Errorf("Changed = %v; want %v", got, want)
			}
		})
	}
}

// TestSymlinkSwap updates a directory the way the kubelet updates a
// ConfigMap volume: the file is a link through ..data, and ..data is
// swapped to a new directory in one rename.
func TestSymlinkSwap(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, name, "api.binpb"), content)
		// The same size and time in both versions: only the file differs.
		old := time.Unix(1_700_000_000, 0)
		if err := os.Chtimes(filepath.Join(dir, name, "api.binpb"), old, old); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01_a", "first")
	if err := os.Symlink("..2026_01_01_a", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "api.binpb")
	if err := os.Symlink("..data/api.binpb", file); err != nil {
		t.Fatal(err)
	}
	before := filestamp.Take([]string{file})
	if before[0] == nil {
		t.Fatal("the file does not stat through its links")
	}
	if got := filestamp.Take([]string{file}).Changed(before); len(got) != 0 {
		t.Fatalf("Changed before the swap = %v; want none", got)
	}
	version("..2026_01_01_b", "secnd")
	if err := os.Symlink("..2026_01_01_b", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if got := filestamp.Take([]string{file}).Changed(before); !slices.Equal(got, []int{0}) {
		t.Errorf("Changed after the swap = %v; want [0]", got)
	}
}

func TestMissingFiles(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "missing")
	s := filestamp.Take([]string{missing})
	if s[0] != nil {
		t.Fatalf("a missing file stats as %v", s[0])
	}
	if got := filestamp.Take([]string{missing}).Changed(s); len(got) != 0 {
		t.Errorf("a file missing twice: Changed = %v; want none", got)
	}
	write(t, missing, "here now")
	if got := filestamp.Take([]string{missing}).Changed(s); !slices.Equal(got, []int{0}) {
		t.Errorf("a file that appeared: Changed = %v; want [0]", got)
	}
}
