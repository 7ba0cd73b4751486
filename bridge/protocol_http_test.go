package bridge_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/connlimit"
	"github.com/grpcws/grpcws/internal/testbackend"
)

var echoDesc = echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService")

// httpFixture is a backend and a Handler that serves the HTTP protocols in
// front of it, on 127.0.0.1 over HTTP/1.1 and HTTP/2 without TLS.
type httpFixture struct {
	backend *testbackend.Backend
	handler *bridge.Handler
	url     string
	client  *http.Client // HTTP/1.1, and HTTP/2 without TLS
}

// newHTTPFixture serves the EchoService with opts and the HTTP protocols.
func newHTTPFixture(t testing.TB, opts ...bridge.Option) *httpFixture {
	t.Helper()
	b := testbackend.Start(t)
	return newHTTPFixtureFor(t, b, []bridge.Service{{Desc: echoDesc, Conn: b.Conn}}, opts...)
}

func newHTTPFixtureFor(t testing.TB, b *testbackend.Backend, services []bridge.Service, opts ...bridge.Option) *httpFixture {
	t.Helper()
	opts = append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler)), bridge.WithHTTPProtocols(true)}, opts...)
	h, err := bridge.NewHandler(services, opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetHTTP1(true)
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
		tr.CloseIdleConnections()
	})
	return &httpFixture{backend: b, handler: h, url: srv.URL, client: &http.Client{Transport: tr}}
}

// openTicker starts an endless gRPC-Web Ticker call and waits for its
// first message. The stream is closed when the test ends, if not before.
func (f *httpFixture) openTicker(t *testing.T, ctx context.Context) *connect.ServerStreamForClient[echov1.TickerResponse] {
	t.Helper()
	ticker := connect.NewClient[echov1.TickerRequest, echov1.TickerResponse](f.client, f.url+"/examples.echo.v1.EchoService/Ticker", connect.WithGRPCWeb())
	stream, err := ticker.CallServerStream(ctx, connect.NewRequest(&echov1.TickerRequest{Interval: durationpb.New(10 * time.Millisecond)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	if !stream.Receive() {
		t.Fatal(stream.Err())
	}
	return stream
}

// h2c is an HTTP client that speaks HTTP/2 without TLS, as gRPC needs.
func h2c() *http.Client {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr}
}

// Unary and server-streaming calls in each protocol, with metadata, through
// connect-go's client.
func TestHTTPProtocols(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t)
	ctx := testContext(t)
	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect proto", f.client, nil},
		{"connect json", f.client, []connect.ClientOption{connect.WithProtoJSON()}},
		{"grpc-web", f.client, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc-web json", f.client, []connect.ClientOption{connect.WithGRPCWeb(), connect.WithProtoJSON()}},
		{"grpc", h2c(), []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](tc.client, f.url+"/examples.echo.v1.EchoService/Echo", tc.opts...)
			req := connect.NewRequest(&echov1.EchoRequest{Message: "grüß dich ✓"})
			req.Header().Set("X-Echo-From", tc.name)
			res, err := echo.CallUnary(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Msg.GetMessage(); got != "grüß dich ✓" {
				t.Errorf("message %q", got)
			}
			if got := res.Header().Get("X-Echo-From"); got != tc.name {
				t.Errorf("header x-echo-from %q; want %q", got, tc.name)
			}
			if got := res.Trailer().Get("X-Echo-From"); got != tc.name {
				t.Errorf("trailer x-echo-from %q; want %q", got, tc.name)
			}

			_, err = echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Fail: &echov1.Failure{Code: 5, Message: "nicht gefunden: Straße ✗ 100%"}}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound || ce.Message() != "nicht gefunden: Straße ✗ 100%" {
				t.Errorf("failing call: %v; want NOT_FOUND with the message", err)
			}

			ticker := connect.NewClient[echov1.TickerRequest, echov1.TickerResponse](tc.client, f.url+"/examples.echo.v1.EchoService/Ticker", tc.opts...)
			stream, err := ticker.CallServerStream(ctx, connect.NewRequest(&echov1.TickerRequest{Count: 3, Fail: &echov1.Failure{Code: 9, Message: "à la fin"}}))
			if err != nil {
				t.Fatal(err)
			}
			var ticks []int32
			for stream.Receive() {
				ticks = append(ticks, stream.Msg().GetIndex())
			}
			if !slices.Equal(ticks, []int32{1, 2, 3}) || connect.CodeOf(stream.Err()) != connect.CodeFailedPrecondition {
				t.Errorf("ticks %v, end %v; want 1 2 3, FAILED_PRECONDITION", ticks, stream.Err())
			}
			stream.Close()
		})
	}
}

// gRPC clients reach every RPC kind over HTTP/2 without TLS.
func TestGRPCClient(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t)
	ctx := testContext(t)
	cc, err := grpc.NewClient(strings.TrimPrefix(f.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	echo := echov1.NewEchoServiceClient(cc)

	var hd, tr metadata.MD
	res, err := echo.Echo(metadata.AppendToOutgoingContext(ctx, "x-echo-from", "grpc", "x-echo-bin", "\x00\x01"), &echov1.EchoRequest{Message: "hi"}, grpc.Header(&hd), grpc.Trailer(&tr))
	if err != nil || res.GetMessage() != "hi" {
		t.Fatalf("Echo: %v, %v", res, err)
	}
	if !slices.Equal(hd.Get("x-echo-from"), []string{"grpc"}) || !slices.Equal(tr.Get("x-echo-bin"), []string{"\x00\x01"}) {
		t.Errorf("header %v, trailer %v", hd, tr)
	}

	up, err := echo.Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"ab", "cde"} {
		if err := up.Send(&echov1.UploadRequest{Chunk: []byte(c)}); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := up.CloseAndRecv()
	if err != nil || sum.GetMessages() != 2 || sum.GetBytes() != 5 {
		t.Errorf("Upload: %v, %v; want 2 messages, 5 bytes", sum, err)
	}

	bidi, err := echo.Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []string{"one", "two"} {
		if err := bidi.Send(&echov1.BidiRequest{Message: m}); err != nil {
			t.Fatal(err)
		}
		r, err := bidi.Recv()
		if err != nil || r.GetMessage() != m || r.GetIndex() != int64(i+1) {
			t.Fatalf("Bidi: %v, %v", r, err)
		}
	}
	if err := bidi.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := bidi.Recv(); err != io.EOF {
		t.Errorf("Bidi end: %v; want EOF", err)
	}

	// A deadline reaches the backend.
	dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = echo.Echo(dctx, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Echo past its deadline: %v; want DEADLINE_EXCEEDED", err)
	}
}

// Only the methods of the routes are reachable; other origins are refused
// before the backend; preflights from allowed origins are answered.
func TestRoutesAndOrigins(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t, bridge.WithOriginPatterns("*.allowed.example"))
	ctx := testContext(t)
	only := newHTTPFixture(t)
	only.handler.Close()
	limited := func() *httpFixture {
		b := testbackend.Start(t)
		return newHTTPFixtureFor(t, b, []bridge.Service{{Desc: echoDesc, Conn: b.Conn, Methods: []string{"Echo"}}})
	}()

	call := func(f *httpFixture, path string, header http.Header) error {
		c := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](f.client, f.url+path, connect.WithGRPCWeb())
		req := connect.NewRequest(&echov1.EchoRequest{Message: "x"})
		for k, v := range header {
			req.Header()[k] = v
		}
		_, err := c.CallUnary(ctx, req)
		return err
	}
	for _, tc := range []struct {
		name   string
		f      *httpFixture
		path   string
		header http.Header
		code   connect.Code
	}{
		{"unknown method", f, "/examples.echo.v1.EchoService/Nope", nil, connect.CodeUnimplemented},
		{"unknown service", f, "/nope.v1.Nope/Echo", nil, connect.CodeUnimplemented},
		{"method not routed", limited, "/examples.echo.v1.EchoService/Ticker", nil, connect.CodeUnimplemented},
		{"method routed", limited, "/examples.echo.v1.EchoService/Echo", nil, 0},
		{"below a prefix", f, "/api/examples.echo.v1.EchoService/Echo", nil, 0},
		{"other origin", f, "/examples.echo.v1.EchoService/Echo", http.Header{"Origin": {"https://evil.example"}}, connect.CodePermissionDenied},
		{"allowed origin", f, "/examples.echo.v1.EchoService/Echo", http.Header{"Origin": {"https://app.allowed.example"}}, 0},
		{"closed", only, "/examples.echo.v1.EchoService/Echo", nil, connect.CodeUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := call(tc.f, tc.path, tc.header)
			if got := connect.CodeOf(err); (err == nil && tc.code != 0) || (err != nil && got != tc.code) {
				t.Errorf("%v; want code %v", err, tc.code)
			}
		})
	}
	for _, c := range limited.backend.Calls() {
		if c.Method != "/examples.echo.v1.EchoService/Echo" {
			t.Errorf("the backend saw %s, which no route exposes", c.Method)
		}
	}

	pre := func(origin string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, f.url+"/examples.echo.v1.EchoService/Echo", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type,x-grpc-web,x-echo-from")
		res, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := pre("https://app.allowed.example")
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "https://app.allowed.example" ||
		res.Header.Get("Access-Control-Allow-Headers") != "content-type,x-grpc-web,x-echo-from" {
		t.Errorf("preflight from an allowed origin: %d %v", res.StatusCode, res.Header)
	}
	if res := pre("https://evil.example"); res.StatusCode != http.StatusForbidden || res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight from another origin: %d %v; want 403 without CORS headers", res.StatusCode, res.Header)
	}

	// A cross-origin response exposes its metadata to the page.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/examples.echo.v1.EchoService/Echo",
		bytes.NewReader(lpm(0, mustMarshal(t, &echov1.EchoRequest{Message: "x"}))))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	req.Header.Set("Origin", "https://app.allowed.example")
	req.Header.Set("X-Echo-From", "cors")
	hres, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, hres.Body)
	hres.Body.Close()
	if exp := hres.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(exp, "X-Echo-From") {
		t.Errorf("Access-Control-Expose-Headers %q; want X-Echo-From in it", exp)
	}
}

// grpc-web-text, the default mode of Google's grpc-web client: base64 both
// ways.
func TestGRPCWebText(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t)
	ctx := testContext(t)
	body := base64.StdEncoding.EncodeToString(lpm(0, mustMarshal(t, &echov1.TickerRequest{Message: "m", Count: 2})))
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.url+"/examples.echo.v1.EchoService/Ticker", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc-web-text")
	req.Header.Set("X-Grpc-Web", "1")
	res, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/grpc-web-text") {
		t.Errorf("content type %q", ct)
	}
	// Each write is padded base64 of its own: decode group by group.
	var raw []byte
	for s := string(text); len(s) >= 4; s = s[4:] {
		b, err := base64.StdEncoding.DecodeString(s[:4])
		if err != nil {
			t.Fatalf("not base64: %q", text)
		}
		raw = append(raw, b...)
	}
	var ticks []int32
	var trailers string
	for len(raw) >= 5 {
		n := int(binary.BigEndian.Uint32(raw[1:5]))
		if raw[0]&0x80 != 0 {
			trailers = string(raw[5 : 5+n])
		} else {
			var m echov1.TickerResponse
			if err := proto.Unmarshal(raw[5:5+n], &m); err != nil {
				t.Fatal(err)
			}
			ticks = append(ticks, m.GetIndex())
		}
		raw = raw[5+n:]
	}
	if !slices.Equal(ticks, []int32{1, 2}) || !strings.Contains(trailers, "grpc-status: 0") {
		t.Errorf("ticks %v, trailers %q; want 1 2 and grpc-status 0", ticks, trailers)
	}
}

// Close ends a stream under way with UNAVAILABLE and cancels it at the
// backend; Shutdown waits for calls to end.
func TestHTTPClose(t *testing.T) {
	t.Parallel()
	f := newHTTPFixture(t)
	ctx := testContext(t)
	stream := f.openTicker(t, ctx)
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := f.handler.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with an endless stream: %v; want the deadline", err)
	}
	for stream.Receive() {
	}
	if ce := new(connect.Error); !errors.As(stream.Err(), &ce) || ce.Code() != connect.CodeUnavailable || ce.Message() != "grpcws: bridge shutting down" {
		t.Errorf("stream ended with %v; want UNAVAILABLE, shutting down", stream.Err())
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if status.Code(call.Err) != codes.Canceled {
		t.Errorf("backend ended with %v; want CANCELED", call.Err)
	}
}

// A call holds a place in the limiter while it runs: one over the limit is
// refused, in each protocol's words, before the backend; the place comes
// back when the call ends.
func TestHTTPLimiter(t *testing.T) {
	t.Parallel()
	limiter := connlimit.New(0, 1)
	f := newHTTPFixture(t, bridge.WithLimiter(limiter))
	ctx := testContext(t)
	held := f.openTicker(t, ctx)
	if n := limiter.Open(); n != 1 {
		t.Errorf("Open() = %d during a call; want 1", n)
	}
	const want = "grpcws: too many connections from your address: try again later"
	for _, tc := range []struct {
		name   string
		client *http.Client
		opts   []connect.ClientOption
	}{
		{"connect", f.client, nil},
		{"grpc-web", f.client, []connect.ClientOption{connect.WithGRPCWeb()}},
		{"grpc", h2c(), []connect.ClientOption{connect.WithGRPC()}},
	} {
		echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](tc.client, f.url+"/examples.echo.v1.EchoService/Echo", tc.opts...)
		_, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "over"}))
		if ce := new(connect.Error); !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted || ce.Message() != want {
			t.Errorf("%s over the limit: %v; want RESOURCE_EXHAUSTED %q", tc.name, err, want)
		}
	}
	held.Close()
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.backend.Calls() {
		if c.Method == "/examples.echo.v1.EchoService/Echo" {
			t.Errorf("the backend saw a refused call")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for limiter.Open() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := limiter.Open(); n != 0 {
		t.Fatalf("Open() = %d after the call; want 0", n)
	}
	echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](f.client, f.url+"/examples.echo.v1.EchoService/Echo")
	if res, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "again"})); err != nil || res.Msg.GetMessage() != "again" {
		t.Errorf("after the place came back: %v, %v", res, err)
	}
}

// Request headers become metadata, less those of HTTP and the browser; the
// operator chooses cookies and, with an allowlist, the keys.
func TestHTTPMetadata(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	for _, tc := range []struct {
		name string
		opts []bridge.Option
		want map[string][]string // nil: must be absent
	}{
		{
			name: "defaults",
			opts: nil,
			want: map[string][]string{
				"x-echo-from": {"a"}, "authorization": {"Bearer t"}, "x-forwarded-for": {"127.0.0.1"},
				"cookie": nil, "origin": nil, "sec-fetch-mode": nil, "accept-language": nil, "x-grpc-web": nil,
			},
		},
		{
			name: "cookies and headers chosen",
			opts: []bridge.Option{bridge.WithMetadataCookies("session"), bridge.WithMetadataHeaders("Accept-Language"), bridge.WithForwardClientAddress(false)},
			want: map[string][]string{"cookie": {"session=s"}, "accept-language": {"de"}, "x-forwarded-for": nil},
		},
		{
			name: "allowlist",
			opts: []bridge.Option{bridge.WithMetadataAllowlist("x-client-version")},
			want: map[string][]string{"x-client-version": {"1"}, "authorization": {"Bearer t"}, "x-echo-from": nil},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHTTPFixture(t, tc.opts...)
			echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](f.client, f.url+"/examples.echo.v1.EchoService/Echo", connect.WithGRPCWeb())
			req := connect.NewRequest(&echov1.EchoRequest{})
			for k, v := range map[string]string{
				"X-Echo-From": "a", "Authorization": "Bearer t", "Cookie": "session=s; other=o", "Origin": f.url,
				"Sec-Fetch-Mode": "cors", "Accept-Language": "de", "X-Client-Version": "1",
			} {
				req.Header().Set(k, v)
			}
			if _, err := echo.CallUnary(ctx, req); err != nil {
				t.Fatal(err)
			}
			call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.want {
				if got := call.MD.Get(k); !slices.Equal(got, want) {
					t.Errorf("metadata %s = %q; want %q", k, got, want)
				}
			}
		})
	}
}
