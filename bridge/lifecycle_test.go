package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/connlimit"
	"github.com/grpcws/grpcws/internal/testbackend"
)

// readMessage reads frames until the first data frame.
func readMessage(t *testing.T, ctx context.Context, c *websocket.Conn) []byte {
	t.Helper()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ == websocket.MessageBinary {
			return b
		}
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, bidiRoute)
	v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "x"})
	readMessage(t, ctx, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.handler.Close()
	}()
	r := v1test.ReadAll(t, ctx, c)
	if r.Close != websocket.StatusGoingAway || r.Code() != int32(codes.Unavailable) {
		t.Fatalf("close %d, status %d; want 1001, UNAVAILABLE", r.Close, r.Code())
	}
	<-done
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
	c = f.dial(t, ctx, "", nil, echoRoute)
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusGoingAway {
		t.Fatalf("after Close: close %d; want 1001", r.Close)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	t.Run("streams finish inside the grace", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "before"})
		readMessage(t, ctx, c)

		done := make(chan error, 1)
		go func() { done <- f.handler.Shutdown(ctx) }()
		// New connections are refused while the old ones drain...
		waitFor(t, func() bool {
			// A connection that beats the shutdown is served: it
			// needs its request to end.
			n := f.dial(t, ctx, "", nil, echoRoute)
			_ = n.Write(ctx, websocket.MessageBinary, mustMarshal(t, &echov1.EchoRequest{}))
			r := v1test.ReadAll(t, ctx, n)
			return r.Close == websocket.StatusGoingAway
		})
		// ...and the open stream still works, to its natural end.
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "during"})
		if got := readMessage(t, ctx, c); len(got) == 0 {
			t.Fatal("no answer during the drain")
		}
		v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
		if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
			t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
		}
		if err := <-done; err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	})
	t.Run("grace expires", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, tickerRoute)
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Interval: durationpb.New(time.Hour)})
		waitFor(t, func() bool { return f.backend.Active() == 1 })

		grace, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- f.handler.Shutdown(grace) }()
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusGoingAway || r.Code() != int32(codes.Unavailable) {
			t.Fatalf("close %d, status %d; want 1001, UNAVAILABLE", r.Close, r.Code())
		}
		if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v; want the grace's deadline", err)
		}
		call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
		if err != nil {
			t.Fatal(err)
		}
		if call.CtxErr != context.Canceled {
			t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
		}
	})
}

func TestConnLimits(t *testing.T) {
	t.Parallel()
	limiter := connlimit.New(3, 2)
	f := newFixture(t, bridge.WithLimiter(limiter))
	ctx := testContext(t)
	open := func(src string) *websocket.Conn {
		c := dialFrom(t, ctx, f.url, src, nil, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: src})
		readMessage(t, ctx, c)
		return c
	}
	refused := func(src string, wantReason string) {
		t.Helper()
		c := dialFrom(t, ctx, f.url, src, nil, bidiRoute)
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusTryAgainLater || r.Reason != wantReason {
			t.Fatalf("from %s: close %d %q; want 1013 %q", src, r.Close, r.Reason, wantReason)
		}
	}
	a1, a2 := open("127.0.0.2"), open("127.0.0.2")
	refused("127.0.0.2", "grpcws: too many connections from your address: try again later")
	b1 := open("127.0.0.3")
	refused("127.0.0.4", "grpcws: too many connections: try again later")
	if n := limiter.Open(); n != 3 {
		t.Fatalf("Open() = %d; want 3", n)
	}
	// The refusals disturbed none of the open streams.
	for _, c := range []*websocket.Conn{a1, a2, b1} {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "still here"})
		readMessage(t, ctx, c)
	}
	// A closed connection frees its place.
	v1test.SendText(t, ctx, a1, `#{"endSend":{}}`)
	if r := v1test.ReadAll(t, ctx, a1); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d; want 1000", r.Close)
	}
	waitFor(t, func() bool { return limiter.Open() == 2 })
	open("127.0.0.2")
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithIdleTimeout(300*time.Millisecond))
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, bidiRoute)
	// Messages keep the stream alive past the timeout...
	for range 4 {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "ping"})
		readMessage(t, ctx, c)
		time.Sleep(100 * time.Millisecond)
	}
	// ...silence ends it.
	start := time.Now()
	r := v1test.ReadAll(t, ctx, c)
	if r.Close != websocket.StatusGoingAway || r.Code() != int32(codes.Unavailable) {
		t.Fatalf("close %d, status %d %q; want 1001, UNAVAILABLE", r.Close, r.Code(), r.End.GetStatus().GetMessage())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("idle stream ended after %v", d)
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Bidi")
	if err != nil {
		t.Fatal(err)
	}
	if call.CtxErr != context.Canceled {
		t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
	}
}

func TestMaxStreamDuration(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithMaxStreamDuration(300*time.Millisecond))
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, tickerRoute)
	v1test.Send(t, ctx, c, &echov1.TickerRequest{Interval: durationpb.New(50 * time.Millisecond)})
	r := v1test.ReadAll(t, ctx, c)
	if r.Close != 4004 || r.Code() != int32(codes.DeadlineExceeded) {
		t.Fatalf("close %d, status %d; want 4004, DEADLINE_EXCEEDED", r.Close, r.Code())
	}
	if r.Frames == 0 {
		t.Error("no ticks before the limit")
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if !call.HasDeadline {
		t.Error("the backend saw no deadline")
	}
}

func TestServiceOptions(t *testing.T) {
	t.Parallel()
	f := newFixtureServices(t, func(conn grpc.ClientConnInterface) []bridge.Service {
		return []bridge.Service{{
			Desc:    echov1.File_examples_echo_v1_echo_proto.Services().Get(0),
			Conn:    conn,
			Methods: []string{"Echo", "Bidi"},
			Aliases: map[string]string{"Echo": "echo"},
			Limits:  bridge.Limits{MaxMessageSize: 1000},
		}}
	})
	ctx := testContext(t)
	var names []string
	for _, r := range f.handler.Routes() {
		names = append(names, r.Names...)
	}
	if got, want := strings.Join(names, " "), "examples.echo.v1.EchoService.Bidi examples.echo.v1.EchoService.Echo echo"; got != want {
		t.Errorf("routes %q; want %q", got, want)
	}
	c := f.dial(t, ctx, "", nil, "echo")
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "by alias"})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("alias: close %d %q; want 1000", r.Close, r.Reason)
	}
	c = f.dial(t, ctx, "", nil, tickerRoute)
	if r := v1test.ReadAll(t, ctx, c); r.Close != 4012 {
		t.Fatalf("a method left out: close %d; want 4012", r.Close)
	}
	c = f.dial(t, ctx, "", nil, bidiRoute)
	v1test.Send(t, ctx, c, &echov1.BidiRequest{Payload: make([]byte, 2000)})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusMessageTooBig {
		t.Fatalf("over the service's limit: close %d; want 1009", r.Close)
	}

	for _, tt := range []struct {
		name string
		svc  bridge.Service
		want string
	}{
		{"unknown method", bridge.Service{Methods: []string{"Nope"}}, `bridge: service examples.echo.v1.EchoService has no method "Nope"`},
		{"unknown alias", bridge.Service{Aliases: map[string]string{"Nope": "x"}}, "bridge: alias for examples.echo.v1.EchoService.Nope: no such method"},
		{"bad alias", bridge.Service{Aliases: map[string]string{"Echo": "a b"}}, `bridge: method /examples.echo.v1.EchoService/Echo: subprotocol "a b" is not an HTTP token`},
	} {
		tt.svc.Desc = echov1.File_examples_echo_v1_echo_proto.Services().Get(0)
		tt.svc.Conn = testbackend.NopConn{}
		if _, err := bridge.NewHandler([]bridge.Service{tt.svc}); err == nil || err.Error() != tt.want {
			t.Errorf("%s: NewHandler error %v; want %q", tt.name, err, tt.want)
		}
	}
}

func TestForwardedMetadata(t *testing.T) {
	t.Parallel()
	f := newFixture(t,
		bridge.WithMetadataCookies("session"),
		bridge.WithMetadataAllowlist("x-echo-ok"),
		bridge.WithTrustedProxies(netip.MustParsePrefix("127.0.0.5/32")))
	ctx := testContext(t)

	h := http.Header{}
	h.Set("Cookie", "session=abc; tracking=no")
	h.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.Set("Tracestate", "vendor=1")
	h.Set("Grpc-Metadata-X-Echo-Ok", "yes")
	h.Set("X-Forwarded-For", "203.0.113.9, 127.0.0.5")
	c := dialFrom(t, ctx, f.url, "127.0.0.5", h, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"cookie":          "[session=abc]",
		"traceparent":     "[00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01]",
		"tracestate":      "[vendor=1]",
		"x-echo-ok":       "[yes]",
		"x-forwarded-for": "[203.0.113.9, 127.0.0.5, 127.0.0.5]",
	} {
		if got := fmt.Sprint(call.MD.Get(key)); got != want {
			t.Errorf("metadata %s = %s; want %s", key, got, want)
		}
	}

	// From an untrusted peer, X-Forwarded-For is not believed.
	h = http.Header{}
	h.Set("X-Forwarded-For", "203.0.113.9")
	c = dialFrom(t, ctx, f.url, "127.0.0.6", h, tickerRoute)
	v1test.Send(t, ctx, c, &echov1.TickerRequest{Count: 1})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
	}
	call, err = f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(call.MD.Get("x-forwarded-for")); got != "[127.0.0.6]" {
		t.Errorf("x-forwarded-for = %s; want [127.0.0.6]", got)
	}

	// A key off the allowlist is not forwarded; the call goes on, as on
	// every protocol.
	h = http.Header{}
	h.Set("Grpc-Metadata-X-Echo-Other", "no")
	h.Set("Grpc-Metadata-X-Echo-Ok", "still")
	c = f.dial(t, ctx, "", h, uploadRoute)
	v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte("x")})
	v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
	}
	call, err = f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Upload")
	if err != nil {
		t.Fatal(err)
	}
	if got, kept := call.MD.Get("x-echo-other"), call.MD.Get("x-echo-ok"); len(got) != 0 || fmt.Sprint(kept) != "[still]" {
		t.Errorf("x-echo-other %v, x-echo-ok %v; want the first dropped and the second kept", got, kept)
	}
}

func TestTrailersOnlyHasNoContentType(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 5, Message: "gone"}})
	r := v1test.ReadAll(t, ctx, c)
	if r.Close != 4005 || r.Headers != nil {
		t.Fatalf("close %d, headers %v; want 4005 and no headers frame", r.Close, r.Headers)
	}
	if got := values(r.End.GetTrailers(), "content-type"); got != nil {
		t.Errorf("trailers content-type = %q; want none", got)
	}
}

// observer records what a Handler reports.
type observer struct {
	mu       sync.Mutex
	refused  map[bridge.Refusal]int
	accepted []string
	in, out  int // messages
	inBytes  int
	ended    []codes.Code
}

func (o *observer) Refused(why bridge.Refusal) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.refused[why]++
}

func (o *observer) Accepted(r bridge.Route) bridge.StreamObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.accepted = append(o.accepted, r.Method)
	return o
}

func (o *observer) ClientMessage(n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.in++
	o.inBytes += n
}

func (o *observer) ServerMessage(int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.out++
}

func (o *observer) Ended(code codes.Code, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = append(o.ended, code)
}

func TestObserver(t *testing.T) {
	t.Parallel()
	o := &observer{refused: map[bridge.Refusal]int{}}
	f := newFixture(t, bridge.WithObserver(o))
	ctx := testContext(t)

	c := f.dial(t, ctx, "", nil, uploadRoute)
	for range 3 {
		v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte("12345")})
	}
	v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d; want 1000", r.Close)
	}
	c = f.dial(t, ctx, "", nil, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 5}})
	v1test.ReadAll(t, ctx, c)
	c = f.dial(t, ctx, "", nil, "no.such.Route")
	v1test.ReadAll(t, ctx, c)
	c = f.dial(t, ctx, "", http.Header{"Origin": {"https://evil.example"}}, echoRoute)
	v1test.ReadAll(t, ctx, c)

	waitFor(t, func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.ended) == 2
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	if got, want := fmt.Sprint(o.accepted), "[/examples.echo.v1.EchoService/Upload /examples.echo.v1.EchoService/Echo]"; got != want {
		t.Errorf("accepted %s; want %s", got, want)
	}
	// Three 7-byte chunks and a 4-byte failing request in, the upload's
	// summary out.
	if o.in != 4 || o.inBytes != 3*7+4 || o.out != 1 {
		t.Errorf("messages in %d (%d bytes), out %d; want 4 (25 bytes), 1", o.in, o.inBytes, o.out)
	}
	if got := fmt.Sprint(o.ended); got != "[OK NotFound]" {
		t.Errorf("ended %s; want [OK NotFound]", got)
	}
	if o.refused[bridge.RefusedUnknownRoute] != 1 || o.refused[bridge.RefusedOrigin] != 1 {
		t.Errorf("refused %v; want one unknown route, one origin", o.refused)
	}
}

// waitFor polls cond every 10 ms for up to 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dialFrom opens a WebSocket from the source address src (such as
// 127.0.0.2) and returns its close code if the bridge refuses it at once,
// or the open connection.
func dialFrom(t *testing.T, ctx context.Context, url, src string, header http.Header, subprotocol string) *websocket.Conn {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	c, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: header, Subprotocols: []string{subprotocol}})
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}
