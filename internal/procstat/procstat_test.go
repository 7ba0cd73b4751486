package procstat

import (
	"os"
	"testing"
	"time"
)

func TestReaders(t *testing.T) {
	pid := os.Getpid()
	before, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn a little CPU: the counter must move.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := CPUTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 10*time.Millisecond {
		t.Errorf("CPU time grew by %v over 50ms of spinning; want at least 10ms", after-before)
	}
	mem, err := RSS(pid)
	if err != nil || mem < 1<<20 {
		t.Errorf("RSS = %d, %v; want at least 1 MiB", mem, err)
	}
	if peak, err := PeakRSS(pid); err != nil || peak < mem {
		t.Errorf("PeakRSS = %d, %v; want at least RSS, %d", peak, err, mem)
	}
	n, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if m, _ := FDs(pid); m != n+1 {
		t.Errorf("FDs = %d after opening a file, %d before; want one more", m, n)
	}
}
