package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/client"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// start runs a backend and a bridge serving services of it (the echo
// service when none are given) and returns a client.Conn to the bridge.
func start(t *testing.T, services []protoreflect.ServiceDescriptor, opts ...client.Option) (*testbackend.Backend, *client.Conn) {
	t.Helper()
	return startBridge(t, services, nil, opts...)
}

// startBridge is start with options for the bridge.
func startBridge(t *testing.T, services []protoreflect.ServiceDescriptor, bridgeOpts []bridge.Option, opts ...client.Option) (*testbackend.Backend, *client.Conn) {
	t.Helper()
	b := testbackend.Start(t)
	h := newHandler(t, b, services, bridgeOpts...)
	conn, _ := serve(t, h, opts...)
	return b, conn
}

// newHandler returns a bridge serving services of b (the echo service when
// none are given), shut down when the test ends.
func newHandler(t *testing.T, b *testbackend.Backend, services []protoreflect.ServiceDescriptor, opts ...bridge.Option) *bridge.Handler {
	t.Helper()
	if services == nil {
		services = []protoreflect.ServiceDescriptor{echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService")}
	}
	var svcs []bridge.Service
	for _, d := range services {
		svcs = append(svcs, bridge.Service{Desc: d, Conn: b.Conn})
	}
	h, err := bridge.NewHandler(svcs, append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return h
}

// serve serves h on 127.0.0.1 and returns a client.Conn to it, closed when
// the test ends, and the URL.
func serve(t *testing.T, h http.Handler, opts ...client.Option) (*client.Conn, string) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	conn, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, url
}

// protocols are the client's two protocols, for the tests that run on
// both.
var protocols = []struct {
	name string
	opts []client.Option
}{
	{"v1", nil},
	{"mux", []client.Option{client.WithMultiplexing()}},
}

// forEachProtocol runs test once per protocol, in parallel.
func forEachProtocol(t *testing.T, test func(t *testing.T, opts ...client.Option)) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			test(t, p.opts...)
		})
	}
}

func TestEveryKind(t *testing.T) { forEachProtocol(t, testEveryKind) }

func testEveryKind(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	echo := echov1.NewEchoServiceClient(conn)

	t.Run("unary", func(t *testing.T) {
		t.Parallel()
		res, err := echo.Echo(testContext(t), &echov1.EchoRequest{Message: "hi", Payload: []byte{1, 2}})
		if err != nil || res.GetMessage() != "hi" || string(res.GetPayload()) != "\x01\x02" {
			t.Fatalf("Echo = %v, %v; want hi", res, err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		t.Parallel()
		stream, err := echo.Ticker(testContext(t), &echov1.TickerRequest{Message: "t", Count: 4})
		if err != nil {
			t.Fatal(err)
		}
		for i := int32(1); ; i++ {
			res, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				if i != 5 {
					t.Fatalf("EOF after %d messages; want 4", i-1)
				}
				return
			}
			if err != nil || res.GetIndex() != i {
				t.Fatalf("Recv = %v, %v; want index %d", res, err, i)
			}
		}
	})
	t.Run("client streaming", func(t *testing.T) {
		t.Parallel()
		stream, err := echo.Upload(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"ab", "cde", ""} {
			if err := stream.Send(&echov1.UploadRequest{Chunk: []byte(c)}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := stream.CloseAndRecv()
		if err != nil || res.GetMessages() != 3 || res.GetBytes() != 5 {
			t.Fatalf("CloseAndRecv = %v, %v; want 3 messages, 5 bytes", res, err)
		}
	})
	t.Run("bidi", func(t *testing.T) {
		t.Parallel()
		stream, err := echo.Bidi(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		for i := int64(1); i <= 3; i++ {
			if err := stream.Send(&echov1.BidiRequest{Message: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
			res, err := stream.Recv()
			if err != nil || res.GetIndex() != i || res.GetMessage() != fmt.Sprint(i) {
				t.Fatalf("Recv = %v, %v; want %d", res, err, i)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("Recv after CloseSend = %v; want io.EOF", err)
		}
	})
}

func TestMetadata(t *testing.T) { forEachProtocol(t, testMetadata) }

func testMetadata(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	echo := echov1.NewEchoServiceClient(conn)
	bin := string([]byte{0, 0xff, 0x10})
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-echo-text", "héllo? no: ascii only", "x-echo-data-bin", bin, "x-plain", "a", "x-plain", "b")
	ctx = metadata.AppendToOutgoingContext(ctx, "x-echo-text", "hello")

	// The bridge refuses a non-ASCII value, as gRPC would.
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("non-ASCII metadata: %v; want INVALID_ARGUMENT", err)
	}

	ctx = metadata.AppendToOutgoingContext(testContext(t), "x-echo-text", "hello", "x-echo-data-bin", bin, "x-plain", "a", "x-plain", "b")
	var header, trailer metadata.MD
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{}, grpc.Header(&header), grpc.Trailer(&trailer)); err != nil {
		t.Fatal(err)
	}
	for name, md := range map[string]metadata.MD{"header": header, "trailer": trailer} {
		if got := md.Get("x-echo-data-bin"); len(got) != 1 || got[0] != bin {
			t.Errorf("%s x-echo-data-bin = %q; want %q", name, got, bin)
		}
		if got := md.Get("x-echo-text"); len(got) != 1 || got[0] != "hello" {
			t.Errorf("%s x-echo-text = %q; want [hello]", name, got)
		}
	}
	call, err := b.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	if got := call.MD.Get("x-plain"); fmt.Sprint(got) != "[a b]" {
		t.Errorf("backend x-plain = %q; want [a b]", got)
	}

	// On a stream: Header and Trailer.
	stream, err := echo.Bidi(metadata.AppendToOutgoingContext(testContext(t), "x-echo-s", "1", "x-echo-s-bin", bin))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&echov1.BidiRequest{}); err != nil {
		t.Fatal(err)
	}
	h, err := stream.Header()
	if err != nil || fmt.Sprint(h.Get("x-echo-s")) != "[1]" || fmt.Sprint(h.Get("x-echo-s-bin")) != fmt.Sprint([]string{bin}) {
		t.Fatalf("Header = %v, %v; want x-echo-s: 1 and x-echo-s-bin: %q", h, err, bin)
	}
	if tr := stream.Trailer(); tr != nil {
		t.Errorf("Trailer before the end = %v; want nil", tr)
	}
	stream.CloseSend()
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	tr := stream.Trailer()
	if got := tr.Get("x-echo-s"); fmt.Sprint(got) != "[1]" {
		t.Errorf("Trailer x-echo-s = %q; want [1]", got)
	}
	if got := tr.Get("x-echo-s-bin"); len(got) != 1 || got[0] != bin {
		t.Errorf("Trailer x-echo-s-bin = %q; want %q", got, bin)
	}
}

func TestStatus(t *testing.T) { forEachProtocol(t, testStatus) }

func testStatus(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	echo := echov1.NewEchoServiceClient(conn)
	msg := "Zugriff verweigert – アクセス拒否 🚫 " + strings.Repeat("ü", 100)
	_, err := echo.Echo(testContext(t), &echov1.EchoRequest{Fail: &echov1.Failure{Code: 7, Message: msg}})
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != msg {
		t.Fatalf("error %v; want PERMISSION_DENIED with the full message", err)
	}

	stream, err := echo.Ticker(testContext(t), &echov1.TickerRequest{Count: 2, Fail: &echov1.Failure{Code: 10, Message: "aborted"}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
		n++
	}
	if n != 2 || status.Code(err) != codes.Aborted {
		t.Fatalf("%d messages then %v; want 2 then ABORTED", n, err)
	}
}

// detailsServer is a backend whose only method fails with details.
type detailsServer struct {
	echov1.UnimplementedEchoServiceServer
}

func (detailsServer) Echo(context.Context, *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	st, err := status.New(codes.FailedPrecondition, "quota").WithDetails(&errdetails.ErrorInfo{Reason: "QUOTA", Domain: "example.com"})
	if err != nil {
		return nil, err
	}
	return nil, st.Err()
}

func TestStatusDetails(t *testing.T) {
	t.Parallel()
	// A backend that fails with details, on 127.0.0.1.
	srv := grpc.NewServer()
	echov1.RegisterEchoServiceServer(srv, detailsServer{})
	lis, err := newListener()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), insecureCreds())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	h, err := bridge.NewHandler([]bridge.Service{{Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"), Conn: cc}},
		bridge.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	defer hs.Close()
	defer h.Shutdown(context.Background())
	conn, err := client.New("ws" + strings.TrimPrefix(hs.URL, "http"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = echov1.NewEchoServiceClient(conn).Echo(testContext(t), &echov1.EchoRequest{})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || len(st.Details()) != 1 {
		t.Fatalf("error %v with details %v; want FAILED_PRECONDITION with one detail", err, st.Details())
	}
	info, ok := st.Details()[0].(*errdetails.ErrorInfo)
	if !ok || info.GetReason() != "QUOTA" || info.GetDomain() != "example.com" {
		t.Errorf("detail %v; want ErrorInfo QUOTA/example.com", st.Details()[0])
	}
}

func TestDeadline(t *testing.T) { forEachProtocol(t, testDeadline) }

func testDeadline(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	ctx, cancel := context.WithTimeout(testContext(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := echov1.NewEchoServiceClient(conn).Echo(ctx, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("error %v; want DEADLINE_EXCEEDED", err)
	}
	call, err := b.WaitCall(testContext(t), "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	if !call.HasDeadline {
		t.Fatal("the backend saw no deadline")
	}
	if d := call.Deadline.Sub(start); d <= 0 || d > 2*time.Second { // about 300ms; the bounds allow for a loaded machine
		t.Errorf("backend deadline %v after the call; want about 300ms", d)
	}
	if call.CtxErr == nil {
		t.Error("the backend's context did not end")
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatal(err)
	}
}

func TestCancel(t *testing.T) { forEachProtocol(t, testCancel) }

func testCancel(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := echov1.NewEchoServiceClient(conn).Ticker(ctx, &echov1.TickerRequest{Interval: durationpb.New(time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	for {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Canceled {
		t.Fatalf("Recv after cancel = %v; want CANCELLED", err)
	}
	call, err := b.WaitCall(testContext(t), "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if call.CtxErr != context.Canceled {
		t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
}

func TestErrors(t *testing.T) { forEachProtocol(t, testErrors) }

func testErrors(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, append(opts, client.WithMaxMessageSize(1<<20))...)
	ctx := testContext(t)
	echo := echov1.NewEchoServiceClient(conn)

	err := conn.Invoke(ctx, "/examples.echo.v1.EchoService/Nope", &echov1.EchoRequest{}, &echov1.EchoResponse{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v; want UNIMPLEMENTED", err)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Payload: make([]byte, 2<<20)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("large request: %v; want RESOURCE_EXHAUSTED", err)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{ResponseSize: 2 << 20}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("large response: %v; want RESOURCE_EXHAUSTED", err)
	}
	b.Stop()
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("backend down: %v; want UNAVAILABLE", err)
	}
	conn.Close()
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{}); status.Code(err) != codes.Canceled {
		t.Errorf("after Close: %v; want CANCELLED", err)
	}
}

func TestHandshakeFailures(t *testing.T) {
	t.Parallel()
	refused := httptest.NewServer(nil)
	refusedURL := refused.URL
	refused.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	for _, tt := range []struct {
		name, url string
	}{
		{"connection refused", refusedURL},
		{"HTTP error", notFound.URL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			conn, err := client.New("ws" + strings.TrimPrefix(tt.url, "http"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := echov1.NewEchoServiceClient(conn).Echo(testContext(t), &echov1.EchoRequest{}); status.Code(err) != codes.Unavailable {
				t.Errorf("Echo = %v; want UNAVAILABLE", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"http://x/", "ws://", "::"} {
		if _, err := client.New(target); err == nil || !strings.HasPrefix(err.Error(), "client: ") {
			t.Errorf("New(%q) = %v; want an error from client", target, err)
		}
	}
	// Dial, deprecated, is New after a check of its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := client.Dial(ctx, "ws://x/"); err == nil {
		t.Errorf("Dial with a done context succeeded")
	}
	if conn, err := client.Dial(context.Background(), "ws://x/"); err != nil {
		t.Errorf("Dial: %v", err)
	} else {
		conn.Close()
	}
}
