package main

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSeqTracker(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		n                        int
		in                       []int
		distinct, dup, reordered int
	}{
		{"in order", 3, []int{1, 2, 3}, 3, 0, 0},
		{"gap", 3, []int{1, 3}, 2, 0, 0},
		{"twice", 3, []int{1, 2, 2, 3}, 3, 1, 0},
		{"swapped", 3, []int{2, 1, 3}, 3, 0, 1},
		{"beyond n", 2, []int{1, 2, 3}, 2, 1, 0},
		{"zero", 2, []int{0, 1}, 1, 1, 0},
	}
	for _, tt := range tests {
		var s seqTracker
		s.init(tt.n)
		for _, i := range tt.in {
			s.add(i)
		}
		if s.distinct != tt.distinct || s.dup != tt.dup || s.reordered != tt.reordered {
			t.Errorf("%s: distinct %d, dup %d, reordered %d; want %d, %d, %d", tt.name, s.distinct, s.dup, s.reordered, tt.distinct, tt.dup, tt.reordered)
		}
	}
}

func TestRSSLimit(t *testing.T) {
	t.Parallel()
	const mib = 1 << 20
	for _, tt := range []struct{ baseline, peak, want int64 }{
		{20 * mib, 60 * mib, 70 * mib},    // 50 MiB
		{80 * mib, 100 * mib, 160 * mib},  // twice the baseline
		{20 * mib, 1000 * mib, 120 * mib}, // a tenth of the peak
	} {
		if got := rssLimit(tt.baseline, tt.peak); got != tt.want {
			t.Errorf("rssLimit(%d MiB, %d MiB) = %d MiB; want %d MiB", tt.baseline/mib, tt.peak/mib, got/mib, tt.want/mib)
		}
	}
}

func TestParseOptions(t *testing.T) {
	t.Parallel()
	o, err := parseOptions([]string{"-streams", "10000", "-duration", "10m"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.sources != 5 || o.maxLife != 60*time.Second || o.seed == 0 {
		t.Errorf("defaults: %d sources, max life %v, seed %d; want 5, 1m0s, not 0", o.sources, o.maxLife, o.seed)
	}
	for _, args := range [][]string{
		{"-streams", "0"}, {"-streams", "20000"}, {"-duration", "0s"}, {"-kill-every", "-1s"}, {"-drop", "2"}, {"extra"},
	} {
		if _, err := parseOptions(args, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) succeeded", args)
		}
	}
}

// startBridge serves the soak's backend and an in-process bridge in front
// of it, and returns the bridge's URL.
func startBridge(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{CheckChunk: checkSequence})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	h, err := bridge.NewHandler([]bridge.Service{{
		Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"),
		Conn: cc,
	}}, bridge.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
}

// TestUploadChecksSequence sends the soak backend's Upload chunks in order
// and out of order.
func TestUploadChecksSequence(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{CheckChunk: checkSequence})
	go s.Serve(lis)
	defer s.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t)
	for _, tt := range []struct {
		name string
		seqs []uint64
		code codes.Code
	}{
		{"in order", []uint64{1, 2, 3}, codes.OK},
		{"gap", []uint64{1, 3}, codes.DataLoss},
		{"twice", []uint64{1, 1}, codes.DataLoss},
	} {
		up, err := echov1.NewEchoServiceClient(cc).Upload(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, seq := range tt.seqs {
			if err := up.Send(&echov1.UploadRequest{Chunk: binary.BigEndian.AppendUint64(nil, seq)}); err != nil {
				break // the backend failed the RPC; CloseAndRecv has the status
			}
		}
		res, err := up.CloseAndRecv()
		if status.Code(err) != tt.code {
			t.Errorf("%s: %v; want %v", tt.name, err, tt.code)
		}
		if tt.code == codes.OK && res.GetMessages() != int64(len(tt.seqs)) {
			t.Errorf("%s: counted %d; want %d", tt.name, res.GetMessages(), len(tt.seqs))
		}
	}
}

// TestRunStream runs each kind of RPC through an in-process bridge, then
// drops one of each kind in each way.
func TestRunStream(t *testing.T) {
	t.Parallel()
	url := startBridge(t)
	d := newDialers(2)
	ctx := testContext(t)
	for k := range kinds {
		p := plan{id: int64(k) + 1, kind: k, life: 300 * time.Millisecond, msgs: 3, interval: 50 * time.Millisecond, payload: 32}
		r := runStream(ctx, d, url, p)
		if r.end == nil || r.end.GetCode() != 0 || r.close != 1000 || r.lost+r.dup+r.reordered > 0 || len(r.protocol) > 0 || r.dropped {
			t.Errorf("%s: %s; want OK, nothing lost", kindNames[k], describe(r))
		}
	}
	for k := range kinds {
		for m := dropReset; m < dropModes; m++ {
			p := plan{id: 100 + int64(k)*10 + int64(m), kind: k, life: time.Second, msgs: 10, interval: 100 * time.Millisecond,
				drop: m, dropAt: 150 * time.Millisecond}
			r := runStream(ctx, d, url, p)
			if !r.dropped || r.hung || r.dup+r.reordered > 0 || len(r.protocol) > 0 {
				t.Errorf("%s dropped by %s: %s; want dropped, nothing duplicated or reordered", kindNames[k], dropNames[m], describe(r))
			}
		}
	}
}

// TestRunMuxStream runs each kind of RPC as a stream of one multiplexed
// socket through an in-process bridge, then cancels one of each kind, and
// drops the socket under RPCs of every kind in each way.
func TestRunMuxStream(t *testing.T) {
	t.Parallel()
	url := startBridge(t)
	pool := newMuxPool(newDialers(2), url, 1)
	defer pool.close()
	ctx := testContext(t)
	for k := range kinds {
		p := plan{id: int64(k) + 1, kind: k, life: 300 * time.Millisecond, msgs: 3, interval: 50 * time.Millisecond, payload: 32}
		r := runMuxStream(ctx, pool, 0, p)
		if r.end == nil || r.end.GetCode() != 0 || r.lost+r.dup+r.reordered > 0 || len(r.protocol) > 0 || r.dropped {
			t.Errorf("%s: %s; want OK, nothing lost", kindNames[k], describe(r))
		}
	}
	for k := range kinds {
		p := plan{id: 10 + int64(k), kind: k, life: time.Second, msgs: 10, interval: 100 * time.Millisecond, drop: dropReset, dropAt: 150 * time.Millisecond}
		r := runMuxStream(ctx, pool, 0, p)
		if !r.dropped || r.drop != dropCancel || r.hung || r.dup+r.reordered > 0 || len(r.protocol) > 0 {
			t.Errorf("%s cancelled: %s; want dropped by CANCEL, nothing duplicated or reordered", kindNames[k], describe(r))
		}
	}
	for m := dropReset; m < dropModes; m++ {
		results := make(chan result, kinds)
		for k := range kinds {
			p := plan{id: 100 + int64(m)*10 + int64(k), kind: k, life: 2 * time.Second, msgs: 20, interval: 100 * time.Millisecond}
			go func() { results <- runMuxStream(ctx, pool, 0, p) }()
		}
		time.Sleep(300 * time.Millisecond)
		sock, err := pool.get(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		sock.drop(m)
		for range kinds {
			r := <-results
			if !r.dropped || r.drop != m || r.hung || r.dup+r.reordered > 0 || len(r.protocol) > 0 {
				t.Errorf("%s on a socket dropped by %s: %s; want dropped, nothing duplicated or reordered", kindNames[r.kind], dropNames[m], describe(r))
			}
		}
	}
	// The pool dials a new socket for the next RPC.
	r := runMuxStream(ctx, pool, 0, plan{id: 1000, kind: bidi, life: 300 * time.Millisecond, msgs: 3, interval: 50 * time.Millisecond})
	if r.end.GetCode() != 0 || r.end == nil {
		t.Errorf("after the drops: %s; want OK", describe(r))
	}
	pool.mu.Lock()
	defer pool.mu.Unlock()
	if pool.dials != 1+int(dropModes-1) || pool.brokenN != 0 {
		t.Errorf("%d sockets dialled, %d breaches; want %d, 0", pool.dials, pool.brokenN, 1+int(dropModes-1))
	}
}
