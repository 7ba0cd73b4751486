package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/proc"
	"github.com/grpcws/grpcws/internal/procstat"
)

// The hostile tests that need the real binary in a process of its own:
// those that measure its memory, descriptors and goroutines, which the
// test process's own would blur. docs/security.md names them.

// binDir holds the binary built for these tests; TestMain removes it.
var binDir string

// buildBinary builds the sidecar once, without the race detector, as it
// runs in production.
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "grpcws-test")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "grpcws")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// startBinary runs the built sidecar with the demo backend and a
// configuration of the limits given as YAML; it stops when the test ends.
func startBinary(t *testing.T, limits string) *proc.Sidecar {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "grpcws.yaml")
	if err := os.WriteFile(cfg, []byte("limits:\n"+limits), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := proc.StartSidecar(context.Background(), bin, io.Discard, "--demo", "--config", cfg, "--log-level", "error")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop(10 * time.Second) })
	return s
}

func envelope(flags byte, b []byte) []byte {
	out := make([]byte, 5, 5+len(b))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// TestDecompressionBomb sends, in each protocol of the HTTP gateway, a
// request of about 260 KB that inflates to 256 MiB: each is refused
// with RESOURCE_EXHAUSTED, and the sidecar's peak memory grows by no more
// than a small multiple of the 4 MiB message limit, one bomb at a time or
// four at once.
func TestDecompressionBomb(t *testing.T) {
	t.Parallel()
	s := startBinary(t, "  max_message_size: 4MiB\n")
	const limit = 4 << 20
	// A gzip stream of 256 members, each 1 MiB of zeros: readers inflate
	// them one after the other, as one body. The first begins with the
	// prefix of EchoRequest{message: "bomb"}.
	member := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	zeros := member(make([]byte, 1<<20))
	bomb := member([]byte{0x0a, 0x04, 'b', 'o', 'm', 'b'})
	for range 256 {
		bomb = append(bomb, zeros...)
	}

	h1 := &http.Client{Timeout: 30 * time.Second}
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Timeout: 30 * time.Second, Transport: h2c}
	type request struct {
		name   string
		client *http.Client
		path   string
		header map[string]string
		body   []byte
	}
	requests := []request{
		{"connect", h1, "Echo", map[string]string{"Content-Type": "application/proto", "Connect-Protocol-Version": "1", "Content-Encoding": "gzip"}, bomb},
		{"grpc-web", h1, "Echo", map[string]string{"Content-Type": "application/grpc-web+proto", "Grpc-Encoding": "gzip"}, envelope(1, bomb)},
		{"grpc", h2, "Echo", map[string]string{"Content-Type": "application/grpc", "Grpc-Encoding": "gzip", "Te": "trailers"}, envelope(1, bomb)},
		{"connect streaming", h1, "Ticker", map[string]string{"Content-Type": "application/connect+proto", "Connect-Content-Encoding": "gzip"}, envelope(1, bomb)},
	}
	post := func(r request) (*http.Response, []byte, error) {
		req, err := http.NewRequest(http.MethodPost, "http://"+s.Addr+"/examples.echo.v1.EchoService/"+r.path, bytes.NewReader(r.body))
		if err != nil {
			return nil, nil, err
		}
		for k, v := range r.header {
			req.Header.Set(k, v)
		}
		res, err := r.client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		return res, body, err
	}
	send := func(r request) {
		res, body, err := post(r)
		if err != nil {
			t.Errorf("%s: %v", r.name, err)
			return
		}
		refusal := "inflates past the limit of 4194304 bytes"
		all := fmt.Sprint(res.Header, res.Trailer, string(body))
		if !strings.Contains(all, refusal) || !(strings.Contains(all, "resource_exhausted") || strings.Contains(all, "Grpc-Status:[8]") || strings.Contains(all, "grpc-status:8")) {
			t.Errorf("%s: %d %s; want RESOURCE_EXHAUSTED %q", r.name, res.StatusCode, all, refusal)
		}
	}
	memory := func() (peak, heap int64) {
		var err error
		if peak, err = procstat.PeakRSS(s.Pid()); err != nil {
			t.Fatal(err)
		}
		m, err := s.Metrics(context.Background(), h1)
		if err != nil {
			t.Fatal(err)
		}
		return peak, int64(m["go_memstats_heap_sys_bytes"])
	}

	// Warm up: one good call in each protocol.
	for _, r := range requests {
		r.body = member([]byte{0x0a, 0x02, 'h', 'i'}) // EchoRequest{message: "hi"}
		if r.path == "Ticker" {
			r.body = member([]byte{0x10, 0x01}) // TickerRequest{count: 1}
		}
		if r.name != "connect" {
			r.body = envelope(1, r.body)
		}
		if _, _, err := post(r); err != nil {
			t.Fatalf("%s warm-up: %v", r.name, err)
		}
	}
	peak0, heap0 := memory()
	for _, r := range requests {
		send(r)
	}
	peak1, heap1 := memory()
	var wg sync.WaitGroup
	for _, r := range requests {
		wg.Go(func() { send(r) })
	}
	wg.Wait()
	peak2, heap2 := memory()
	t.Logf("peak RSS %d MiB, then %+.1f MiB after one bomb at a time, %+.1f MiB after four at once; heap from the OS %+.1f MiB, %+.1f MiB",
		peak0>>20, float64(peak1-peak0)/(1<<20), float64(peak2-peak1)/(1<<20), float64(heap1-heap0)/(1<<20), float64(heap2-heap1)/(1<<20))
	const bound = 8 * limit
	if grew := peak2 - peak0; grew > bound {
		t.Errorf("peak RSS grew by %d MiB; want at most %d MiB", grew>>20, bound>>20)
	}
	if grew := heap2 - heap0; grew > bound {
		t.Errorf("the heap grew by %d MiB; want at most %d MiB", grew>>20, bound>>20)
	}
}

// TestNeverEndingBodies opens 3,000 connections from one address, each
// with a request that announces 100,000 bytes and sends 4: those past the
// limit per address are refused at once, the rest are cut at the read
// timeout, and the sidecar's descriptors and goroutines return to where
// they were.
func TestNeverEndingBodies(t *testing.T) {
	t.Parallel()
	const (
		flood   = 3000
		perAddr = 50
		timeout = 8 * time.Second // long enough for the flood to be refused on a loaded machine first
	)
	s := startBinary(t, fmt.Sprintf("  max_connections_per_ip: %d\n  read_timeout: %v\n", perAddr, timeout))
	client := &http.Client{Timeout: 10 * time.Second}
	figures := func() (fds, goroutines int) {
		var err error
		if fds, err = procstat.FDs(s.Pid()); err != nil {
			t.Fatal(err)
		}
		m, err := s.Metrics(context.Background(), client)
		if err != nil {
			t.Fatal(err)
		}
		return fds, int(m["go_goroutines"])
	}
	fds0, goroutines0 := figures()

	type outcome struct {
		status int
		took   time.Duration
		err    error
	}
	outcomes := make(chan outcome, flood)
	var refused atomic.Int64
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
	var wg sync.WaitGroup
	start := time.Now()
	for range flood {
		wg.Go(func() {
			nc, err := dialer.Dial("tcp", s.Addr)
			if err != nil {
				outcomes <- outcome{err: err}
				return
			}
			defer nc.Close()
			begin := time.Now()
			fmt.Fprintf(nc, "POST /examples.echo.v1.EchoService/Echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n"+
				"Connect-Protocol-Version: 1\r\nContent-Length: 100000\r\n\r\nabcd")
			_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			res, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				outcomes <- outcome{err: err}
				return
			}
			res.Body.Close()
			if res.StatusCode == http.StatusTooManyRequests {
				refused.Add(1)
			}
			outcomes <- outcome{status: res.StatusCode, took: time.Since(begin)}
		})
	}
	// Once the others are refused, while the held ones wait for their
	// bodies, the sidecar holds about one descriptor each, not one per
	// request sent.
	var fdsDuring int
	for deadline := start.Add(timeout - time.Second); ; {
		if n := refused.Load(); n >= flood-perAddr {
			if fdsDuring, _ = figures(); fdsDuring <= fds0+2*perAddr {
				break
			}
		}
		if time.Now().After(deadline) {
			fdsDuring, _ = figures()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	close(outcomes)
	counts := map[int]int{}
	for o := range outcomes {
		if o.err != nil {
			t.Errorf("a request got no answer: %v", o.err)
			continue
		}
		counts[o.status]++
		if o.status == http.StatusGatewayTimeout && (o.took < timeout || o.took > timeout+5*time.Second) {
			t.Errorf("a held request was cut after %v; want about %v", o.took, timeout)
		}
	}
	t.Logf("%d requests in %v: %v by HTTP status; descriptors %d before, %d during", flood, time.Since(start).Round(time.Millisecond), counts, fds0, fdsDuring)
	if held := counts[http.StatusGatewayTimeout]; held == 0 || held > perAddr {
		t.Errorf("%d requests held until the read timeout; want 1 to %d", held, perAddr)
	}
	if held, refused := counts[http.StatusGatewayTimeout], counts[http.StatusTooManyRequests]; held+refused != flood {
		t.Errorf("%d held and %d refused; want all %d either", held, refused, flood)
	}
	if fdsDuring > fds0+2*perAddr {
		t.Errorf("%d descriptors during the flood, %d before; want at most %d more", fdsDuring, fds0, 2*perAddr)
	}
	var fds, goroutines int
	deadline := time.Now().Add(10 * time.Second)
	for {
		fds, goroutines = figures()
		if (fds <= fds0+5 && goroutines <= goroutines0+10) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if fds > fds0+5 || goroutines > goroutines0+10 {
		t.Errorf("after the flood: %d descriptors and %d goroutines; want back to about %d and %d", fds, goroutines, fds0, goroutines0)
	}
}
