package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/client"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/testbackend"
)

// The tests of this file run the multiplexed client against a real bridge
// and a real gRPC backend.

// upgrades counts the WebSocket handshakes that reach a handler, and which
// subprotocols they offered.
type upgrades struct {
	h http.Handler
	n atomic.Int32
}

func (u *upgrades) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") && strings.Contains(r.Header.Get("Sec-WebSocket-Protocol"), muxwire.Subprotocol) {
		u.n.Add(1)
	}
	u.h.ServeHTTP(w, r)
}

// startMux runs a backend and a bridge, and returns a multiplexed Conn to
// it and the handshake count.
func startMux(t *testing.T, bridgeOpts []bridge.Option, opts ...client.Option) (*testbackend.Backend, *client.Conn, *upgrades) {
	t.Helper()
	b := testbackend.Start(t)
	u := &upgrades{h: newHandler(t, b, nil, bridgeOpts...)}
	conn, _ := serve(t, u, append([]client.Option{client.WithMultiplexing()}, opts...)...)
	return b, conn, u
}

// pingPong sends n messages on a bidi stream, each after the answer to the
// one before, and checks the answers.
func pingPong(ctx context.Context, echo echov1.EchoServiceClient, tag string, n int) error {
	stream, err := echo.Bidi(ctx)
	if err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		msg := fmt.Sprintf("%s-%d", tag, i)
		if err := stream.Send(&echov1.BidiRequest{Message: msg}); err != nil {
			return fmt.Errorf("Send %d: %w", i, err)
		}
		res, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("Recv %d: %w", i, err)
		}
		if res.GetMessage() != msg || res.GetIndex() != int64(i) {
			return fmt.Errorf("answer %q #%d; want %q #%d", res.GetMessage(), res.GetIndex(), msg, i)
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("Recv after CloseSend = %v; want io.EOF", err)
	}
	return nil
}

// TestMuxBridgeOneSocket runs every kind of RPC at once, large messages
// included, and checks that they all share one WebSocket.
func TestMuxBridgeOneSocket(t *testing.T) {
	t.Parallel()
	b, conn, u := startMux(t, nil)
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)
	big := make([]byte, 3<<20) // over the stream window and the frame size: chunked, with credit flowing back
	for i := range big {
		big[i] = byte(i)
	}
	calls := map[string]func() error{
		"unary": func() error {
			res, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"})
			if err == nil && res.GetMessage() != "hi" {
				err = fmt.Errorf("Echo = %q", res.GetMessage())
			}
			return err
		},
		"large": func() error {
			res, err := echo.Echo(ctx, &echov1.EchoRequest{Payload: big})
			if err == nil && !slices.Equal(res.GetPayload(), big) {
				err = fmt.Errorf("Echo returned %d bytes, not the %d sent", len(res.GetPayload()), len(big))
			}
			return err
		},
		"server streaming": func() error {
			stream, err := echo.Ticker(ctx, &echov1.TickerRequest{Message: "t", Count: 20})
			if err != nil {
				return err
			}
			for i := int32(1); ; i++ {
				res, err := stream.Recv()
				if errors.Is(err, io.EOF) && i == 21 {
					return nil
				}
				if err != nil || res.GetIndex() != i {
					return fmt.Errorf("Recv = %v, %v; want index %d", res, err, i)
				}
			}
		},
		"client streaming": func() error {
			stream, err := echo.Upload(ctx)
			if err != nil {
				return err
			}
			for range 10 {
				if err := stream.Send(&echov1.UploadRequest{Chunk: []byte("abc")}); err != nil {
					return err
				}
			}
			res, err := stream.CloseAndRecv()
			if err == nil && (res.GetMessages() != 10 || res.GetBytes() != 30) {
				err = fmt.Errorf("CloseAndRecv = %v", res)
			}
			return err
		},
		"bidi": func() error { return pingPong(ctx, echo, "b", 10) },
	}
	var wg sync.WaitGroup
	for name, call := range calls {
		for i := range 4 {
			wg.Go(func() {
				if err := call(); err != nil {
					t.Errorf("%s #%d: %v", name, i, err)
				}
			})
		}
	}
	wg.Wait()
	if got := u.n.Load(); got != 1 {
		t.Errorf("%d WebSocket handshakes; want 1", got)
	}
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMuxBridgeConcurrentStreams runs 50 bidi streams at once on one
// socket.
func TestMuxBridgeConcurrentStreams(t *testing.T) {
	t.Parallel()
	b, conn, u := startMux(t, nil)
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if err := pingPong(ctx, echo, fmt.Sprint(i), 20); err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if got := u.n.Load(); got != 1 {
		t.Errorf("%d WebSocket handshakes; want 1", got)
	}
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMuxBridgeMaxStreams checks that streams over the bridge's
// MAX_CONCURRENT_STREAMS wait for a free one rather than fail.
func TestMuxBridgeMaxStreams(t *testing.T) {
	t.Parallel()
	_, conn, u := startMux(t, []bridge.Option{bridge.WithMuxLimits(2, 0)})
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			if _, err := echo.Echo(ctx, &echov1.EchoRequest{Delay: durationpb.New(20 * time.Millisecond)}); err != nil {
				t.Errorf("Echo %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if got := u.n.Load(); got != 1 {
		t.Errorf("%d WebSocket handshakes; want 1", got)
	}
}

// TestMuxBridgeStalledStream checks that a stream whose messages are not
// received does not slow another stream's ping-pong on the same socket.
func TestMuxBridgeStalledStream(t *testing.T) {
	t.Parallel()
	b, conn, _ := startMux(t, nil)
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)
	const rounds = 100

	start := time.Now()
	if err := pingPong(ctx, echo, "baseline", rounds); err != nil {
		t.Fatal(err)
	}
	baseline := time.Since(start)

	// A ticker that sends 16 KiB messages as fast as flow control lets it,
	// and a client that takes one and then none.
	stalledCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stalled, err := echo.Ticker(stalledCtx, &echov1.TickerRequest{Message: strings.Repeat("s", 16<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // its window fills

	start = time.Now()
	if err := pingPong(ctx, echo, "beside", rounds); err != nil {
		t.Fatal(err)
	}
	beside := time.Since(start)
	t.Logf("%d round trips: %v alone, %v beside a stalled stream", rounds, baseline, beside)
	if beside > 3*baseline+time.Second {
		t.Errorf("%d round trips took %v beside a stalled stream, %v alone", rounds, beside, baseline)
	}

	// The stalled stream was held back, not dropped: it goes on.
	for i := range 50 {
		res, err := stalled.Recv()
		if err != nil || res.GetIndex() != int32(i+2) {
			t.Fatalf("stalled Recv = %v, %v; want index %d", res.GetIndex(), err, i+2)
		}
	}
	cancel()
	if err := b.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMuxBridgePausedReceiver is TestPausedReceiver on a multiplexed
// Conn: a stream whose messages wait for RecvMsg holds back only itself,
// and the socket answers the bridge's pings meanwhile.
func TestMuxBridgePausedReceiver(t *testing.T) {
	t.Parallel()
	// A ping timeout that a loaded machine meets, and a pause of three.
	b, conn, _ := startMux(t, []bridge.Option{bridge.WithPing(20*time.Millisecond, 250*time.Millisecond)})
	stream, err := echov1.NewEchoServiceClient(conn).Ticker(testContext(t), &echov1.TickerRequest{Interval: durationpb.New(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(750 * time.Millisecond)
	for i := range 200 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv %d after a pause: %v", i, err)
		}
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
}

// TestToken checks WithToken and SetToken on both protocols: the backend
// sees the token of the moment an RPC started, and a stream keeps the
// token it started with.
func TestToken(t *testing.T) { forEachProtocol(t, testToken) }

func testToken(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, append(opts, client.WithToken("t1"))...)
	echo := echov1.NewEchoServiceClient(conn)
	call := func(tag string) {
		t.Helper()
		ctx := metadata.AppendToOutgoingContext(testContext(t), "x-call", tag)
		if _, err := echo.Echo(ctx, &echov1.EchoRequest{}); err != nil {
			t.Fatalf("Echo %s: %v", tag, err)
		}
	}
	call("first")
	long, err := echo.Bidi(metadata.AppendToOutgoingContext(testContext(t), "x-call", "long"))
	if err != nil {
		t.Fatal(err)
	}
	if err := long.Send(&echov1.BidiRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := long.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetToken("t2"); err != nil {
		t.Fatal(err)
	}
	call("second")
	if err := conn.SetToken(""); err != nil {
		t.Fatal(err)
	}
	call("third")
	if err := long.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := long.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv = %v; want io.EOF", err)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"first": {"Bearer t1"}, "long": {"Bearer t1"}, "second": {"Bearer t2"}, "third": nil}
	seen := 0
	for _, c := range b.Calls() {
		tag := c.MD.Get("x-call")
		if len(tag) != 1 {
			continue
		}
		seen++
		if got := c.MD.Get("authorization"); !slices.Equal(got, want[tag[0]]) {
			t.Errorf("call %s: authorization %q; want %q", tag[0], got, want[tag[0]])
		}
	}
	if seen != len(want) {
		t.Errorf("%d calls seen by the backend; want %d", seen, len(want))
	}
}

// TestMuxBridgeGoAway shuts a bridge down while a stream is open on it:
// new RPCs go to a new socket (here, to the next bridge) at once, and the
// open stream finishes on the old one.
func TestMuxBridgeGoAway(t *testing.T) {
	t.Parallel()
	b := testbackend.Start(t)
	old, next := newHandler(t, b, nil), newHandler(t, b, nil)
	var current atomic.Pointer[bridge.Handler]
	current.Store(old)
	u := &upgrades{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) })}
	conn, _ := serve(t, u, client.WithMultiplexing())
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)

	stream, err := echo.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&echov1.BidiRequest{Message: "before"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	current.Store(next)
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- old.Shutdown(ctx)
	}()
	// Wait for the GOAWAY to reach the client.
	deadline := time.Now().Add(5 * time.Second)
	for !conn.MuxDraining() {
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "after"}); err != nil {
		t.Fatalf("Echo after GOAWAY: %v", err)
	}
	if got := u.n.Load(); got != 2 {
		t.Errorf("%d WebSocket handshakes; want 2", got)
	}

	// The old stream finishes on the old socket.
	for _, msg := range []string{"during", "drain"} {
		if err := stream.Send(&echov1.BidiRequest{Message: msg}); err != nil {
			t.Fatal(err)
		}
		if res, err := stream.Recv(); err != nil || res.GetMessage() != msg {
			t.Fatalf("Recv on the draining socket = %v, %v; want %s", res, err, msg)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("Recv after CloseSend = %v; want io.EOF", err)
	}
	if err := await(t, shutdown); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{}); err != nil {
		t.Errorf("Echo after the old bridge shut down: %v", err)
	}
	if got := u.n.Load(); got != 2 {
		t.Errorf("%d WebSocket handshakes; want 2", got)
	}
}
