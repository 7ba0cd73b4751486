// Package procstat reads a process's resource use from Linux's /proc, for
// the benchmark and the soak.
package procstat

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CPUTime returns the CPU time pid has used so far, summed over its
// threads, from the scheduler's nanosecond counters. Threads that exited
// take their time with them; the Go runtime keeps its threads, so over a
// measurement this is exact enough.
func CPUTime(pid int) (time.Duration, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return time.Duration(total), nil
}

// RSS returns the resident memory of pid in bytes.
func RSS(pid int) (int64, error) { return status(pid, "VmRSS:") }

// PeakRSS returns the most resident memory pid has had, in bytes.
func PeakRSS(pid int) (int64, error) { return status(pid, "VmHWM:") }

// status reads one size in kB from /proc/pid/status.
func status(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s for %d", strings.TrimSuffix(field, ":"), pid)
}

// FDs returns the number of open file descriptors of pid.
func FDs(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries), err
}
