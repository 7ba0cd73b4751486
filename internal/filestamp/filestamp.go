// Package filestamp tells whether files changed since they were last read,
// so that what is loaded from them can be loaded again: TLS certificates
// (internal/tlsfiles) and descriptor sets (internal/server).
//
// A file counts as changed when its modification time or its size
// changes, or when the name leads to another file: a file renamed over it,
// or a symbolic link that now points elsewhere. The last is how Kubernetes
// updates a ConfigMap or Secret volume: it writes the new files into a new
// directory and swaps the `..data` symbolic link to it in one rename, so
// every file of the volume changes at once.
package filestamp

import (
	"io/fs"
	"os"
)

// A Stamp is what a list of files looked like at one moment, in the list's
// order.
type Stamp []fs.FileInfo

// Take stats each file, following symbolic links. A file that cannot be
// stat'ed (missing, unreadable directory) is nil in the stamp, and differs
// from every file that can.
//
// Take the stamp before reading the files: a change made while they are
// read is then seen by the next Take rather than lost.
func Take(files []string) Stamp {
	s := make(Stamp, len(files))
	for i, f := range files {
		s[i], _ = os.Stat(f)
	}
	return s
}

// Changed returns the indexes of the files that differ between s and t,
// two stamps of the same list; none when they are the same.
func (s Stamp) Changed(t Stamp) []int {
	var out []int
	for i := range s {
		var other fs.FileInfo
		if i < len(t) {
			other = t[i]
		}
		if !same(s[i], other) {
			out = append(out, i)
		}
	}
	return out
}

// same reports whether a and b describe the same file, unchanged.
func same(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}
