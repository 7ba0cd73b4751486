package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
)

// httpClients returns an HTTP/1.1 client, as browsers use for gRPC-Web and
// Connect, and an HTTP/2-without-TLS one, as gRPC needs.
func httpClients(t *testing.T) (h1, h2 *http.Client) {
	h1tr := &http.Transport{}
	h2tr := &http.Transport{Protocols: new(http.Protocols)}
	h2tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(func() {
		h1tr.CloseIdleConnections()
		h2tr.CloseIdleConnections()
	})
	return &http.Client{Transport: h1tr}, &http.Client{Transport: h2tr}
}

// The sidecar's one listener serves every protocol to the routes the
// configuration exposes: protocol v1 and grpc-websockets over WebSocket,
// gRPC-Web and Connect over HTTP/1.1, gRPC over HTTP/2; other plain
// requests still get the fallback.
func TestEveryProtocol(t *testing.T) {
	t.Parallel()
	b := startBackend(t, true, nil)
	cfg := testConfig(b.addr)
	cfg.Routes = []config.Route{{Backend: "echo", Methods: []string{
		"examples.echo.v1.EchoService/Echo", "examples.echo.v1.EchoService/Ticker", "examples.echo.v1.EchoService/Bidi",
	}}}
	page := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "the page") })
	r := serve(t, Options{Config: cfg, Fallback: page})
	r.waitReady(t)
	ctx := testContext(t)
	base := "http" + strings.TrimSuffix(strings.TrimPrefix(r.url, "ws"), "/")
	h1, h2 := httpClients(t)

	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("protocol v1: close %d; want 1000", code)
	}

	// grpc-websockets: the header block, one data message, finish-send.
	c := dialer{}.mustDial(t, ctx, r.url+"examples.echo.v1.EchoService/Echo", bridge.GRPCWebsockets)
	for _, m := range [][]byte{
		[]byte("content-type: application/grpc-web+proto\r\n"),
		{0, 0, 0, 0, 0, 4, 0x0a, 0x02, 'h', 'i'},
		{1},
	} {
		if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusNormalClosure {
				t.Errorf("grpc-websockets: close %d; want 1000", code)
			}
			break
		}
		got = append(got, b...)
	}
	if !strings.Contains(string(got), "\x0a\x02hi") || !strings.Contains(string(got), "grpc-status: 0\r\n") {
		t.Errorf("grpc-websockets: got %q; want the echo and grpc-status 0", got)
	}

	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", h1, nil},
		{"grpc-web", h1, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc", h2, []connect.ClientOption{connect.WithGRPC()}},
	} {
		echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](tc.client, base+"/examples.echo.v1.EchoService/Echo", tc.opts...)
		res, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "hi " + tc.name}))
		if err != nil || res.Msg.GetMessage() != "hi "+tc.name {
			t.Errorf("%s: Echo = %v, %v", tc.name, res, err)
		}
		upload := connect.NewClient[echov1.UploadRequest, echov1.UploadResponse](tc.client, base+"/examples.echo.v1.EchoService/Upload", tc.opts...)
		stream := upload.CallClientStream(ctx)
		_ = stream.Send(&echov1.UploadRequest{Chunk: []byte("x")})
		if _, err := stream.CloseAndReceive(); connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Errorf("%s: Upload, which no route exposes: %v; want UNIMPLEMENTED", tc.name, err)
		}
	}

	// A gRPC client: bidi over the same port.
	grpcBidi(t, ctx, strings.TrimPrefix(base, "http://"), insecure.NewCredentials())

	res, err := h1.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(body) != "the page" {
		t.Errorf("GET / = %q; want the fallback", body)
	}
}

// grpcBidi makes a gRPC bidi call to target: one message and its echo,
// then the end of the stream.
func grpcBidi(t *testing.T, ctx context.Context, target string, creds credentials.TransportCredentials) {
	t.Helper()
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	bidi, err := echov1.NewEchoServiceClient(cc).Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bidi.Send(&echov1.BidiRequest{Message: "one"}); err != nil {
		t.Fatal(err)
	}
	if res, err := bidi.Recv(); err != nil || res.GetMessage() != "one" {
		t.Errorf("gRPC bidi to %s: %v, %v", target, res, err)
	}
	_ = bidi.CloseSend()
	if _, err := bidi.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("gRPC bidi to %s, end: %v; want EOF", target, err)
	}
}

// openTicker starts an endless gRPC-Web Ticker call at base and waits for
// its first message. The stream is closed when the test ends.
func openTicker(t *testing.T, ctx context.Context, client *http.Client, base string, interval time.Duration) *connect.ServerStreamForClient[echov1.TickerResponse] {
	t.Helper()
	ticker := connect.NewClient[echov1.TickerRequest, echov1.TickerResponse](client, base+"/examples.echo.v1.EchoService/Ticker", connect.WithGRPCWeb())
	stream, err := ticker.CallServerStream(ctx, connect.NewRequest(&echov1.TickerRequest{Interval: durationpb.New(interval)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	return stream
}

// The drain treats HTTP streams as it treats WebSocket ones: they have the
// grace period, then end with UNAVAILABLE; calls that arrive during the
// drain get UNAVAILABLE.
func TestDrainHTTP(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	base := "http" + strings.TrimSuffix(strings.TrimPrefix(r.url, "ws"), "/")
	h1, _ := httpClients(t)

	stream := openTicker(t, ctx, h1, base, 20*time.Millisecond)
	began := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	waitFor(t, "draining", func() bool { return r.draining.Load() })

	echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](h1, base+"/examples.echo.v1.EchoService/Echo", connect.WithGRPCWeb())
	if _, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{})); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("a call during the drain: %v; want UNAVAILABLE", err)
	}

	var ticks []int32
	for stream.Receive() {
		ticks = append(ticks, stream.Msg().GetIndex())
	}
	if ce := new(connect.Error); !errors.As(stream.Err(), &ce) || ce.Code() != connect.CodeUnavailable || ce.Message() != "grpcws: bridge shutting down" {
		t.Errorf("the stream ended with %v; want UNAVAILABLE, shutting down", stream.Err())
	}
	if d := time.Since(began); d < cfg.Drain.GracePeriod || len(ticks) < 3 || !slices.IsSorted(ticks) {
		t.Errorf("the stream ended after %v with %d more ticks; want the grace period of %v, ticking", d, len(ticks), cfg.Drain.GracePeriod)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve = %v", err)
	}
}
