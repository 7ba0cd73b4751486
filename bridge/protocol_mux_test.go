package bridge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/muxtest"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// bigWindows are client settings under which the bridge never waits for a
// grant: for tests that are not about flow control.
var bigWindows = &muxwire.Settings{
	StreamWindow: 1 << 30, ConnWindow: 1 << 30,
	MaxFrameSize: 16 << 10, MaxWSMessage: 1 << 20,
}

func (f *fixture) mux(t *testing.T, ctx context.Context, settings *muxwire.Settings, subprotocols ...string) *muxtest.Conn {
	t.Helper()
	return muxtest.Dial(t, ctx, f.url, nil, settings, subprotocols...)
}

// TestMuxEveryKind runs one RPC of each kind, and one failing, on one
// connection at once.
func TestMuxEveryKind(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	if c.Settings != muxwire.DefaultSettings() {
		t.Errorf("bridge settings %+v; want the defaults", c.Settings)
	}
	md := metadata.Pairs("x-echo-k", "v", "x-test-id", t.Name())
	c.Send(t, ctx,
		muxtest.Open(t, 1, echoRoute, md, ""),
		muxtest.Data(1, mustMarshal(t, &echov1.EchoRequest{Message: "grüß dich"}), true),
		muxtest.Open(t, 3, tickerRoute, nil, ""),
		muxtest.Data(3, mustMarshal(t, &echov1.TickerRequest{Message: "t", Count: 3, Interval: durationpb.New(time.Millisecond)}), true),
		muxtest.Open(t, 5, uploadRoute, nil, ""),
		muxtest.Data(5, mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("ab")}), true),
		muxtest.Data(5, mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("cde")}), true),
		muxtest.EndSend(5),
		muxtest.Open(t, 7, bidiRoute, nil, ""),
		muxtest.Data(7, mustMarshal(t, &echov1.BidiRequest{Message: "one"}), true),
		muxtest.Open(t, 9, echoRoute, nil, "10S"),
		muxtest.Data(9, mustMarshal(t, &echov1.EchoRequest{Fail: &echov1.Failure{Code: int32(codes.NotFound), Message: "nicht gefunden"}}), true),
	)
	echo := c.WaitEnd(t, ctx, 1)
	if echo.Status.Code() != codes.OK || len(echo.Messages) != 1 {
		t.Fatalf("Echo: %v with %d messages", echo.Status, len(echo.Messages))
	}
	var res echov1.EchoResponse
	if err := proto.Unmarshal(echo.Messages[0], &res); err != nil || res.GetMessage() != "grüß dich" {
		t.Errorf("Echo answered %v (%v)", &res, err)
	}
	if got := echo.Headers.Get("x-echo-k"); len(got) != 1 || got[0] != "v" {
		t.Errorf("Echo headers %v", echo.Headers)
	}
	if got := echo.Trailers.Get("x-echo-k"); len(got) != 1 || got[0] != "v" {
		t.Errorf("Echo trailers %v", echo.Trailers)
	}
	if ticker := c.WaitEnd(t, ctx, 3); ticker.Status.Code() != codes.OK || len(ticker.Messages) != 3 {
		t.Errorf("Ticker: %v with %d messages", ticker.Status, len(ticker.Messages))
	}
	upload := c.WaitEnd(t, ctx, 5)
	var up echov1.UploadResponse
	if len(upload.Messages) != 1 || proto.Unmarshal(upload.Messages[0], &up) != nil || up.GetMessages() != 2 || up.GetBytes() != 5 {
		t.Errorf("Upload: %v, %v", upload.Status, &up)
	}
	// The bidi stream is still open: another message, then the half-close.
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(7).Messages) == 1 }) {
		t.Fatal("Bidi: no answer to the first message")
	}
	c.Send(t, ctx, muxtest.Data(7, mustMarshal(t, &echov1.BidiRequest{Message: "two"}), true), muxtest.EndSend(7))
	if bidi := c.WaitEnd(t, ctx, 7); bidi.Status.Code() != codes.OK || len(bidi.Messages) != 2 {
		t.Errorf("Bidi: %v with %d messages", bidi.Status, len(bidi.Messages))
	}
	failed := c.WaitEnd(t, ctx, 9)
	if failed.Status.Code() != codes.NotFound || failed.Status.Message() != "nicht gefunden" || len(failed.Status.Details()) != 1 {
		t.Errorf("failing Echo: %v with details %v", failed.Status, failed.Status.Details())
	}
	tagged := 0
	for _, call := range f.backend.Calls() {
		if got := call.MD.Get("x-test-id"); len(got) == 1 && got[0] == t.Name() {
			tagged++
			if call.Method != "/examples.echo.v1.EchoService/Echo" || call.MD.Get("x-echo-k")[0] != "v" {
				t.Errorf("backend saw %s with %v", call.Method, call.MD)
			}
		}
	}
	if tagged != 1 {
		t.Errorf("%d backend calls with the stream's metadata; want 1 (metadata is per stream)", tagged)
	}
	if err := c.CloseErr(); err != nil {
		t.Errorf("the connection ended: %v", err)
	}
}

// TestMuxRefusedStreams: a stream refused for its route, its metadata, its
// deadline or the stream limit ends alone; the connection goes on.
func TestMuxRefusedStreams(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithMuxLimits(2, 0))
	c := f.mux(t, ctx, bigWindows)
	c.Send(t, ctx,
		muxtest.Open(t, 1, "no.such.Method", nil, ""),
		muxtest.Open(t, 3, echoRoute, metadata.Pairs("grpc-status", "0"), ""),
		muxtest.Open(t, 5, echoRoute, nil, "soon"),
		muxtest.Open(t, 7, tickerRoute, nil, ""),
		muxtest.Data(7, mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(10 * time.Millisecond)}), true),
		muxtest.Open(t, 9, tickerRoute, nil, ""),
		muxtest.Data(9, mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(10 * time.Millisecond)}), true),
		muxtest.Open(t, 11, echoRoute, nil, ""),
	)
	for _, tt := range []struct {
		id   uint32
		code codes.Code
		msg  string
	}{
		{1, codes.Unimplemented, `grpcws: no route named "no.such.Method"`},
		{3, codes.InvalidArgument, `"grpc-status"`},
		{5, codes.InvalidArgument, "timeout"},
		{11, codes.ResourceExhausted, "at most 2 at once"},
	} {
		s := c.WaitEnd(t, ctx, tt.id)
		if s.Status.Code() != tt.code || !strings.Contains(s.Status.Message(), tt.msg) {
			t.Errorf("stream %d: %v; want %v containing %q", tt.id, s.Status, tt.code, tt.msg)
		}
	}
	// The two tickers run on; once one is cancelled there is room again.
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(7).Messages) > 2 && len(c.Stream(9).Messages) > 2 }) {
		t.Fatal("the tickers stopped")
	}
	c.Send(t, ctx, muxtest.Cancel(7))
	var last muxtest.Stream
	for id := uint32(13); id < 40; id += 2 {
		c.Send(t, ctx, muxtest.Open(t, id, echoRoute, nil, ""), muxtest.Data(id, nil, true))
		if last = c.WaitEnd(t, ctx, id); last.Status.Code() == codes.OK {
			break
		}
	}
	if last.Status.Code() != codes.OK {
		t.Errorf("after the cancel: %v; want OK", last.Status)
	}
	if err := c.CloseErr(); err != nil {
		t.Errorf("the connection ended: %v", err)
	}
}

// TestMuxProtocolErrors: each framing error closes the connection with its
// code and a reason, and cancels the backend streams.
func TestMuxProtocolErrors(t *testing.T) {
	t.Parallel()
	open := func(t *testing.T, id uint32) []byte { return muxtest.Open(t, id, bidiRoute, nil, "") }
	for _, tt := range []struct {
		name   string
		frames func(t *testing.T) [][]byte
		code   websocket.StatusCode
		reason string
	}{
		{"malformed", func(*testing.T) [][]byte { return [][]byte{{0, 0, 5, 2, 0, 0, 0, 0, 1, 1}} }, 1002, "malformed frame"},
		{"unknown type", func(*testing.T) [][]byte { return [][]byte{muxwire.AppendFrame(nil, 0x42, 0, 0, nil)} }, 1002, "unknown frame type 0x42"},
		{"reused id", func(t *testing.T) [][]byte { return [][]byte{open(t, 3), open(t, 3)} }, 1002, "stream id 3 reused"},
		{"lower id", func(t *testing.T) [][]byte { return [][]byte{open(t, 5), open(t, 3)} }, 1002, "stream id 3 reused"},
		{"never opened", func(t *testing.T) [][]byte { return [][]byte{open(t, 1), muxtest.Data(3, nil, true)} }, 1002, "stream 3 never opened"},
		{"window never opened", func(t *testing.T) [][]byte { return [][]byte{muxtest.Window(9, 1)} }, 1002, "stream 9 never opened"},
		{"data on stream 0", func(*testing.T) [][]byte { return [][]byte{muxtest.Data(0, nil, true)} }, 1002, "DATA on stream 0"},
		{"frame too big", func(t *testing.T) [][]byte { return [][]byte{open(t, 1), muxtest.Data(1, make([]byte, 20<<10), true)} }, 1002, "over MAX_FRAME_SIZE"},
		{"zero window", func(*testing.T) [][]byte {
			return [][]byte{muxwire.AppendFrame(nil, muxwire.TypeWindow, 0, 0, []byte{0, 0, 0, 0})}
		}, 1002, "out of range"},
		{"window overflow", func(*testing.T) [][]byte { return [][]byte{muxtest.Window(0, muxwire.MaxWindow)} }, 1002, "past"},
		{"client sends END", func(t *testing.T) [][]byte {
			return [][]byte{open(t, 1), muxwire.AppendFrame(nil, muxwire.TypeEnd, 0, 1, nil)}
		}, 1002, "may not send END"},
		{"late SETTINGS", func(t *testing.T) [][]byte {
			return [][]byte{open(t, 1), muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, nil)}
		}, 1002, "SETTINGS must come once"},
		{"bad OPEN", func(*testing.T) [][]byte {
			return [][]byte{muxwire.AppendFrame(nil, muxwire.TypeOpen, 0, 1, []byte{0xff})}
		}, 1002, "OPEN payload"},
		{"short PING", func(*testing.T) [][]byte {
			return [][]byte{muxwire.AppendFrame(nil, muxwire.TypePing, 0, 0, []byte{1})}
		}, 1002, "PING"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			f := newFixture(t)
			c := f.mux(t, ctx, nil)
			_ = c.TrySend(ctx, tt.frames(t)...)
			code, reason := c.WaitClose(t, ctx)
			if code != tt.code || !strings.Contains(reason, tt.reason) {
				t.Errorf("closed with %d %q; want %d containing %q", code, reason, tt.code, tt.reason)
			}
			if err := f.backend.WaitIdle(ctx); err != nil {
				t.Errorf("backend streams left open: %v", err)
			}
		})
	}
	t.Run("text message", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := newFixture(t).mux(t, ctx, nil)
		_ = c.WS.Write(ctx, websocket.MessageText, []byte("hello"))
		if code, _ := c.WaitClose(t, ctx); code != 1003 {
			t.Errorf("closed with %d; want 1003", code)
		}
	})
}

// TestMuxStreamErrors: errors of one stream's messages end that stream.
func TestMuxStreamErrors(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithMaxMessageSize(1<<10))
	c := f.mux(t, ctx, bigWindows)
	c.Send(t, ctx,
		muxtest.Open(t, 1, echoRoute, nil, ""), muxtest.EndSend(1),
		muxtest.Open(t, 3, uploadRoute, nil, ""), muxtest.EndSend(3), muxtest.Data(3, nil, true),
		muxtest.Open(t, 5, echoRoute, nil, ""), muxtest.Message(5, make([]byte, 2<<10), 512),
		muxtest.Open(t, 7, echoRoute+"+json", nil, ""), muxtest.Data(7, []byte(`{"message": 5}`), true),
		muxtest.Open(t, 9, echoRoute+"+json", nil, ""), muxtest.Data(9, []byte(`{"message": "json ✓"}`), true),
	)
	for _, tt := range []struct {
		id   uint32
		code codes.Code
		msg  string
	}{
		{1, codes.InvalidArgument, "end of send before the request"},
		{3, codes.InvalidArgument, "message after end of send"},
		{5, codes.ResourceExhausted, "larger than 1024 bytes"},
		{7, codes.InvalidArgument, "not a valid examples.echo.v1.EchoRequest in JSON"},
	} {
		s := c.WaitEnd(t, ctx, tt.id)
		if s.Status.Code() != tt.code || !strings.Contains(s.Status.Message(), tt.msg) {
			t.Errorf("stream %d: %v; want %v containing %q", tt.id, s.Status, tt.code, tt.msg)
		}
	}
	if s := c.WaitEnd(t, ctx, 9); s.Status.Code() != codes.OK || len(s.Messages) != 1 || !bytes.Contains(s.Messages[0], []byte(`"json ✓"`)) {
		t.Errorf("JSON stream: %v, %q", s.Status, s.Messages)
	}
}

// TestMuxLargeMessages: a 3 MiB message each way, in chunks that respect
// the windows, while a ping-pong stream on the same connection goes on.
func TestMuxLargeMessages(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithMuxWindows(64<<10, 256<<10))
	c := f.mux(t, ctx, bigWindows)
	if c.Settings.StreamWindow != 64<<10 || c.Settings.ConnWindow != 256<<10 {
		t.Fatalf("bridge settings %+v", c.Settings)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	req := mustMarshal(t, &echov1.EchoRequest{Payload: big})
	c.Send(t, ctx, muxtest.Open(t, 1, echoRoute, nil, ""))
	// The windows are far smaller: send in steps, as the bridge grants.
	sent := 0
	allowed := func(c *muxtest.Conn) int {
		return int(min(int64(c.Settings.StreamWindow)+c.Granted(1), int64(c.Settings.ConnWindow)+c.Granted(0))) - sent
	}
	for sent < len(req) {
		if !c.Wait(ctx, func(c *muxtest.Conn) bool { return allowed(c) > 0 }) {
			t.Fatalf("no grant after %d bytes", sent)
		}
		n := min(len(req)-sent, allowed(c), 16<<10)
		c.Send(t, ctx, muxtest.Data(1, req[sent:sent+n], sent+n == len(req)))
		sent += n
	}
	s := c.WaitEnd(t, ctx, 1)
	var res echov1.EchoResponse
	if s.Status.Code() != codes.OK || len(s.Messages) != 1 || proto.Unmarshal(s.Messages[0], &res) != nil || !bytes.Equal(res.GetPayload(), big) {
		t.Fatalf("Echo of 3 MiB: %v, %d messages", s.Status, len(s.Messages))
	}
	if s.Chunks < len(s.Messages[0])/(16<<10) {
		t.Errorf("the answer came in %d DATA frames; want chunks of at most 16 KiB", s.Chunks)
	}
	if c.Granted(1) < int64(len(req))-64<<10 || c.Granted(0) < int64(len(req))-256<<10 {
		t.Errorf("granted %d on the stream and %d on the connection for %d bytes", c.Granted(1), c.Granted(0), len(req))
	}
}

// TestMuxStalledStream: a stream whose client grants nothing stops at its
// window; another stream on the same connection keeps going; the stalled
// one ends with UNAVAILABLE after the write timeout.
func TestMuxStalledStream(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithWriteTimeout(time.Second))
	const window = 64 << 10
	c := f.mux(t, ctx, &muxwire.Settings{StreamWindow: window, ConnWindow: 1 << 30, MaxFrameSize: 16 << 10, MaxWSMessage: 1 << 20})
	// Stream 1 asks for 64 answers of 16 KiB: 1 MiB, 16 times its window.
	c.Send(t, ctx, muxtest.Open(t, 1, tickerRoute, nil, ""),
		muxtest.Message(1, mustMarshal(t, &echov1.TickerRequest{Message: strings.Repeat("x", 16<<10), Count: 64}), 16<<10))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return c.Stream(1).Bytes >= window-16<<10 }) {
		t.Fatal("the stalled stream got nothing")
	}
	// Stream 3 ping-pongs meanwhile, granting as it reads.
	c.Send(t, ctx, muxtest.Open(t, 3, bidiRoute, nil, ""))
	for i := range 20 {
		c.Send(t, ctx, muxtest.Data(3, mustMarshal(t, &echov1.BidiRequest{Message: fmt.Sprint(i)}), true))
		if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(3).Messages) == i+1 }) {
			t.Fatalf("ping-pong %d: no answer while stream 1 is stalled", i)
		}
		c.Send(t, ctx, muxtest.Window(3, uint32(len(c.Stream(3).Messages[i]))))
	}
	if got := c.Stream(1).Bytes; got > window {
		t.Errorf("the stalled stream got %d bytes, over its %d window", got, window)
	}
	s := c.WaitEnd(t, ctx, 1)
	if s.Status.Code() != codes.Unavailable || !strings.Contains(s.Status.Message(), "took no data") {
		t.Errorf("stalled stream ended with %v; want UNAVAILABLE, no data taken", s.Status)
	}
	c.Send(t, ctx, muxtest.EndSend(3))
	if s := c.WaitEnd(t, ctx, 3); s.Status.Code() != codes.OK {
		t.Errorf("ping-pong stream: %v", s.Status)
	}
}

// TestMuxCancel: CANCEL ends the backend's stream; the bridge sends
// nothing more for it.
func TestMuxCancel(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	c.Send(t, ctx, muxtest.Open(t, 1, tickerRoute, nil, ""),
		muxtest.Data(1, mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(5 * time.Millisecond)}), true))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(1).Messages) >= 2 }) {
		t.Fatal("no ticks")
	}
	c.Send(t, ctx, muxtest.Cancel(1))
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	calls := f.backend.Calls()
	if len(calls) != 1 || calls[0].CtxErr != context.Canceled {
		t.Fatalf("backend calls %+v; want one, cancelled", calls)
	}
	n := len(c.Stream(1).Messages)
	c.Send(t, ctx, muxtest.Ping([8]byte{7}))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Pongs()) == 1 }) {
		t.Fatal("no PING ACK")
	}
	if s := c.Stream(1); s.Ended || len(s.Messages) > n+1 {
		t.Errorf("after CANCEL: ended %v, %d messages (then %d)", s.Ended, len(s.Messages), n)
	}
}

// TestMuxRapidReset: a client that opens and cancels streams in a loop is
// cut off with 1008, at a bounded cost.
func TestMuxRapidReset(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithMuxLimits(0, 50))
	c := f.mux(t, ctx, bigWindows)
	var err error
	id := uint32(1)
	for ; id < 2000 && err == nil; id += 2 {
		err = c.TrySend(ctx, muxtest.Open(t, id, tickerRoute, nil, ""), muxtest.Cancel(id))
	}
	code, reason := c.WaitClose(t, ctx)
	if code != 1008 || !strings.Contains(reason, "too many streams cancelled or refused") {
		t.Errorf("closed with %d %q; want 1008", code, reason)
	}
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(f.backend.Calls()); n > 60 {
		t.Errorf("the backend saw %d streams; the bucket holds 50", n)
	}
}

// TestMuxToken: streams opened after a TOKEN frame carry the new token;
// one opened before keeps the handshake's.
func TestMuxToken(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows, v1wire.TokenEntry("first"))
	echo := func(id uint32, md metadata.MD) {
		c.Send(t, ctx, muxtest.Open(t, id, echoRoute, md, ""), muxtest.Data(id, nil, true))
		if s := c.WaitEnd(t, ctx, id); s.Status.Code() != codes.OK {
			t.Fatalf("stream %d: %v", id, s.Status)
		}
	}
	echo(1, metadata.Pairs("x-n", "1"))
	c.Send(t, ctx, muxtest.Token("second"))
	echo(3, metadata.Pairs("x-n", "3"))
	echo(5, metadata.Pairs("x-n", "5", "authorization", "Bearer own"))
	c.Send(t, ctx, muxtest.Token(""))
	echo(7, metadata.Pairs("x-n", "7"))
	want := map[string]string{"1": "Bearer first", "3": "Bearer second", "5": "Bearer own", "7": ""}
	for _, call := range f.backend.Calls() {
		n := call.MD.Get("x-n")[0]
		got := strings.Join(call.MD.Get("authorization"), ",")
		if got != want[n] {
			t.Errorf("stream %s: authorization %q; want %q", n, got, want[n])
		}
	}
}

// TestMuxDrain: Shutdown sends GOAWAY, refuses new streams, lets the open
// one finish, then closes with 1001.
func TestMuxDrain(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	c.Send(t, ctx, muxtest.Open(t, 1, bidiRoute, nil, ""), muxtest.Data(1, mustMarshal(t, &echov1.BidiRequest{Message: "a"}), true))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(1).Messages) == 1 }) {
		t.Fatal("no answer")
	}
	shut := make(chan error, 1)
	go func() { shut <- f.handler.Shutdown(ctx) }()
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { _, ok := c.GoAway(); return ok }) {
		t.Fatal("no GOAWAY")
	}
	if last, _ := c.GoAway(); last != 1 {
		t.Errorf("GOAWAY names stream %d; want 1", last)
	}
	c.Send(t, ctx, muxtest.Open(t, 3, echoRoute, nil, ""), muxtest.Data(3, nil, true))
	if s := c.WaitEnd(t, ctx, 3); s.Status.Code() != codes.Unavailable {
		t.Errorf("a stream after GOAWAY: %v; want UNAVAILABLE", s.Status)
	}
	// The open stream goes on, and ends as it likes.
	c.Send(t, ctx, muxtest.Data(1, mustMarshal(t, &echov1.BidiRequest{Message: "b"}), true), muxtest.EndSend(1))
	if s := c.WaitEnd(t, ctx, 1); s.Status.Code() != codes.OK || len(s.Messages) != 2 {
		t.Errorf("the open stream: %v with %d messages", s.Status, len(s.Messages))
	}
	if code, _ := c.WaitClose(t, ctx); code != websocket.StatusGoingAway {
		t.Errorf("closed with %d; want 1001", code)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestMuxClose: Close ends every stream with UNAVAILABLE and its status.
func TestMuxClose(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	for id := uint32(1); id <= 9; id += 2 {
		c.Send(t, ctx, muxtest.Open(t, id, tickerRoute, nil, ""),
			muxtest.Data(id, mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(10 * time.Millisecond)}), true))
	}
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(9).Messages) > 0 }) {
		t.Fatal("no ticks")
	}
	f.handler.Close()
	for id := uint32(1); id <= 9; id += 2 {
		if s := c.WaitEnd(t, ctx, id); s.Status.Code() != codes.Unavailable || s.Status.Message() != "grpcws: bridge shutting down" {
			t.Errorf("stream %d: %v", id, s.Status)
		}
	}
	if code, _ := c.WaitClose(t, ctx); code != websocket.StatusGoingAway {
		t.Errorf("closed with %d; want 1001", code)
	}
}

// TestMuxBackendDown: the backend stops with 50 streams open on one
// connection: every stream ends with UNAVAILABLE, and the connection stays
// open.
func TestMuxBackendDown(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	const n = 50
	var frames [][]byte
	for i := range n {
		id := uint32(2*i + 1)
		frames = append(frames, muxtest.Open(t, id, tickerRoute, nil, ""),
			muxtest.Data(id, mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(20 * time.Millisecond)}), true))
	}
	c.Send(t, ctx, frames...)
	if !c.Wait(ctx, func(c *muxtest.Conn) bool {
		for i := range n {
			if len(c.Stream(uint32(2*i+1)).Messages) == 0 {
				return false
			}
		}
		return true
	}) {
		t.Fatal("not every stream ticked")
	}
	f.backend.Stop()
	for i := range n {
		if s := c.WaitEnd(t, ctx, uint32(2*i+1)); s.Status.Code() != codes.Unavailable {
			t.Errorf("stream %d: %v; want UNAVAILABLE", 2*i+1, s.Status)
		}
	}
	c.Send(t, ctx, muxtest.Ping([8]byte{1}))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Pongs()) == 1 }) || c.CloseErr() != nil {
		t.Errorf("the connection did not survive: %v", c.CloseErr())
	}
}

// TestMuxBatching: answers ready at the same moment share WebSocket
// messages.
func TestMuxBatching(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	const n = 100
	var frames [][]byte
	for i := range n {
		id := uint32(2*i + 1)
		frames = append(frames, muxtest.Open(t, id, echoRoute, nil, ""), muxtest.Data(id, nil, true))
	}
	before := c.Messages()
	c.Send(t, ctx, frames...)
	for i := range n {
		c.WaitEnd(t, ctx, uint32(2*i+1))
	}
	// Each stream's answer is three frames (HEADERS, DATA, END): 300
	// frames in far fewer messages.
	if got := c.Messages() - before; got >= 3*n {
		t.Errorf("%d WebSocket messages for %d frames: nothing was batched", got, 3*n)
	}
}

// TestMuxHandshake: refusals at the handshake close with v1's codes; a
// route may not take the protocol's name.
func TestMuxHandshake(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	ws, res, err := websocket.Dial(ctx, f.url+"?grpc-timeout=1S", &websocket.DialOptions{Subprotocols: []string{bridge.Multiplexed}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	defer ws.CloseNow()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != 4003 {
		t.Errorf("a handshake with grpc-timeout: %v; want close 4003", err)
	}
	ws2, res, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{Subprotocols: []string{bridge.Multiplexed},
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	defer ws2.CloseNow()
	if _, _, err := ws2.Read(ctx); websocket.CloseStatus(err) != 4007 {
		t.Errorf("a cross-site origin: %v; want close 4007", err)
	}
}

// TestMuxConcurrentStreams: 64 bidi streams ping-pong at once on one
// connection, each answer on its own stream.
func TestMuxConcurrentStreams(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t)
	c := f.mux(t, ctx, bigWindows)
	const streams, rounds = 64, 10
	var opens [][]byte // in one message: ids must grow
	for i := range streams {
		opens = append(opens, muxtest.Open(t, uint32(2*i+1), bidiRoute, nil, ""))
	}
	c.Send(t, ctx, opens...)
	var wg sync.WaitGroup
	var mu sync.Mutex // one writer at a time on the raw connection
	for i := range streams {
		id := uint32(2*i + 1)
		wg.Go(func() {
			for r := range rounds {
				msg := fmt.Sprintf("%d/%d", id, r)
				mu.Lock()
				c.Send(t, ctx, muxtest.Data(id, mustMarshal(t, &echov1.BidiRequest{Message: msg}), true))
				mu.Unlock()
				if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(id).Messages) == r+1 }) {
					t.Errorf("stream %d: no answer %d", id, r)
					return
				}
				var res echov1.BidiResponse
				if err := proto.Unmarshal(c.Stream(id).Messages[r], &res); err != nil || res.GetMessage() != msg {
					t.Errorf("stream %d: answer %v; want %q", id, &res, msg)
				}
			}
			mu.Lock()
			c.Send(t, ctx, muxtest.EndSend(id))
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range streams {
		if s := c.WaitEnd(t, ctx, uint32(2*i+1)); s.Status.Code() != codes.OK {
			t.Errorf("stream %d: %v", 2*i+1, s.Status)
		}
	}
}

// stuckConn is a backend whose streams take no message and send none
// until their context ends: a stream's window is never granted again.
type stuckConn struct{}

func (stuckConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("stuckConn: no unary calls")
}

func (stuckConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	return stuckStream{ctx}, nil
}

type stuckStream struct{ ctx context.Context }

func (s stuckStream) Header() (metadata.MD, error) { <-s.ctx.Done(); return nil, s.ctx.Err() }
func (stuckStream) Trailer() metadata.MD           { return nil }
func (stuckStream) CloseSend() error               { return nil }
func (s stuckStream) Context() context.Context     { return s.ctx }
func (s stuckStream) SendMsg(any) error            { <-s.ctx.Done(); return io.EOF }
func (s stuckStream) RecvMsg(any) error {
	<-s.ctx.Done()
	return status.FromContextError(s.ctx.Err()).Err()
}

// TestMuxWindowExceeded: a client that sends past a stream's window, while
// the backend takes nothing, is closed with 1002.
func TestMuxWindowExceeded(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixtureServices(t, func(grpc.ClientConnInterface) []bridge.Service {
		return []bridge.Service{{Desc: compiledServices()[0], Conn: stuckConn{}}}
	})
	c := f.mux(t, ctx, nil)
	// The first message goes to SendMsg, which never returns; the rest
	// waits in the stream's queue, against its 256 KiB window.
	c.Send(t, ctx, muxtest.Open(t, 1, bidiRoute, nil, ""), muxtest.Data(1, nil, true), muxtest.Message(1, make([]byte, 300<<10), 16<<10))
	code, reason := c.WaitClose(t, ctx)
	if code != 1002 || !strings.Contains(reason, "window of stream 1 exceeded") {
		t.Errorf("closed with %d %q; want 1002, window exceeded", code, reason)
	}
}

// TestMuxConnectionCredit: streams whose backends take nothing hold most
// of the connection window; another stream still gets the window back as
// its backend consumes, however little is left: the bridge grants early
// rather than let the client run dry.
func TestMuxConnectionCredit(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("grpc.testing.TestService")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixtureServices(t, func(real grpc.ClientConnInterface) []bridge.Service {
		return []bridge.Service{
			{Desc: compiledServices()[0], Conn: stuckConn{}},
			{Desc: d.(protoreflect.ServiceDescriptor), Conn: real},
		}
	}, bridge.WithMuxWindows(64<<10, 256<<10))
	c := f.mux(t, ctx, bigWindows)
	// Three stuck streams take 192 KiB of the 256 KiB connection window.
	for id := uint32(1); id <= 5; id += 2 {
		c.Send(t, ctx, muxtest.Open(t, id, bidiRoute, nil, ""), muxtest.Data(id, nil, true), muxtest.Message(id, make([]byte, 64<<10-32), 16<<10))
	}
	// 1 MiB on a live stream, within the windows as the bridge grants them.
	const id, total = 7, 1 << 20
	c.Send(t, ctx, muxtest.Open(t, id, "grpc.testing.TestService.StreamingInputCall", nil, ""))
	chunk := mustMarshal(t, &testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 8<<10)}})
	held := int64(3 * (64<<10 - 32))
	sent, body := int64(0), 0
	allowed := func(c *muxtest.Conn) int64 {
		return min(64<<10+c.Granted(id), 256<<10+c.Granted(0)-held) - sent
	}
	for body < total {
		if !c.Wait(ctx, func(c *muxtest.Conn) bool { return allowed(c) >= int64(len(chunk)) }) {
			t.Fatalf("the client ran dry after %d bytes: granted %d on the stream, %d on the connection", sent, c.Granted(id), c.Granted(0))
		}
		c.Send(t, ctx, muxtest.Data(id, chunk, true))
		sent += int64(len(chunk))
		body += 8 << 10
	}
	c.Send(t, ctx, muxtest.EndSend(id))
	s := c.WaitEnd(t, ctx, id)
	var res testgrpc.StreamingInputCallResponse
	if s.Status.Code() != codes.OK || len(s.Messages) != 1 || proto.Unmarshal(s.Messages[0], &res) != nil || res.GetAggregatedPayloadSize() != total {
		t.Errorf("upload: %v, %v", s.Status, &res)
	}
}

// TestMuxClientNotReading: a client that reads nothing at all is dropped
// after the write timeout, and its backend streams are cancelled.
func TestMuxClientNotReading(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	f := newFixture(t, bridge.WithWriteTimeout(time.Second))
	ws, res, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{Subprotocols: []string{bridge.Multiplexed}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	defer ws.CloseNow()
	big := bigWindows.Append(nil)
	req := mustMarshal(t, &echov1.TickerRequest{Message: strings.Repeat("x", 60<<10)})
	msg := muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, big)
	msg = append(msg, muxtest.Open(t, 1, tickerRoute, nil, "")...)
	msg = append(msg, muxtest.Message(1, req, 16<<10)...)
	if err := ws.Write(ctx, websocket.MessageBinary, msg); err != nil {
		t.Fatal(err)
	}
	// Nothing reads the socket: once the kernel's buffers are full, the
	// bridge's writes stall.
	if _, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker"); err != nil {
		t.Fatal(err)
	}
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatalf("the backend stream was not cancelled: %v", err)
	}
	// The bridge has dropped the connection: what the kernel buffered
	// reads, then the end, not a wait.
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws.SetReadLimit(-1)
	for {
		if _, _, err := ws.Read(rctx); err != nil {
			if rctx.Err() != nil {
				t.Fatalf("the connection is still open: %v", err)
			}
			break
		}
	}
}

// TestMuxHandshakeMetadata: what the handshake carries (query metadata,
// chosen headers and cookies) reaches every stream, under the same rules
// as v1; and the access log has a line per stream.
func TestMuxHandshakeMetadata(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	var logs lockedBuffer
	f := newFixture(t, bridge.WithMetadataHeaders("x-tenant"), bridge.WithMetadataCookies("session"),
		bridge.WithAccessLog(true), bridge.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	header := http.Header{"X-Tenant": {"acme"}, "X-Other": {"dropped"}, "Cookie": {"session=s1; other=o1"}}
	c := muxtest.Dial(t, ctx, f.url+"?x-q=1", header, bigWindows)
	for _, id := range []uint32{1, 3} {
		c.Send(t, ctx, muxtest.Open(t, id, echoRoute, metadata.Pairs("x-own", fmt.Sprint(id)), ""), muxtest.Data(id, nil, true))
		if s := c.WaitEnd(t, ctx, id); s.Status.Code() != codes.OK {
			t.Fatalf("stream %d: %v", id, s.Status)
		}
	}
	calls := f.backend.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d backend calls; want 2", len(calls))
	}
	for _, call := range calls {
		md := call.MD
		if got := md.Get("x-tenant"); len(got) != 1 || got[0] != "acme" {
			t.Errorf("x-tenant %v", got)
		}
		if got := md.Get("x-q"); len(got) != 1 || got[0] != "1" {
			t.Errorf("x-q %v", got)
		}
		if got := md.Get("cookie"); len(got) != 1 || got[0] != "session=s1" {
			t.Errorf("cookie %v", got)
		}
		if len(md.Get("x-other")) != 0 || len(md.Get("x-own")) != 1 {
			t.Errorf("metadata %v", md)
		}
	}
	// One access line per stream, with its id, once both have ended.
	deadline := time.Now().Add(5 * time.Second)
	for {
		text := logs.String()
		if strings.Count(text, `"msg":"grpcws: rpc"`) == 2 && strings.Contains(text, `"stream":1`) && strings.Contains(text, `"stream":3`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log:\n%s", text)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
