package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/client"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// TestConcurrentSendRecv sends from one goroutine while another receives
// and a third waits for the headers, as grpc.ClientStream allows.
func TestConcurrentSendRecv(t *testing.T) { forEachProtocol(t, testConcurrentSendRecv) }

func testConcurrentSendRecv(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	stream, err := echov1.NewEchoServiceClient(conn).Bidi(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if h, err := stream.Header(); err != nil || h == nil {
			t.Errorf("Header = %v, %v; want headers", h, err)
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			if err := stream.Send(&echov1.BidiRequest{Message: fmt.Sprint(i)}); err != nil {
				t.Errorf("Send: %v", err)
				return
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Errorf("CloseSend: %v", err)
		}
	}()
	for i := 0; ; i++ {
		res, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if i != n {
				t.Errorf("EOF after %d messages; want %d", i, n)
			}
			break
		}
		if err != nil || res.GetMessage() != fmt.Sprint(i) {
			t.Fatalf("Recv = %v, %v; want %d", res, err, i)
		}
	}
	wg.Wait()
}

// TestTrailersOnly checks that a stream that ends without headers has none,
// as in gRPC, and that its status and trailers still arrive.
func TestTrailersOnly(t *testing.T) { forEachProtocol(t, testTrailersOnly) }

func testTrailersOnly(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	stream, err := echov1.NewEchoServiceClient(conn).Upload(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&echov1.UploadRequest{Fail: &echov1.Failure{Code: 5, Message: "none"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.NotFound {
		t.Fatalf("CloseAndRecv = %v; want NOT_FOUND", err)
	}
	if h, err := stream.Header(); h != nil || err != nil {
		t.Errorf("Header = %v, %v; want nil, nil", h, err)
	}
	if tr := stream.Trailer(); tr == nil {
		t.Error("Trailer = nil; want the (empty) trailers")
	}
}

func TestStreamDeadline(t *testing.T) { forEachProtocol(t, testStreamDeadline) }

func testStreamDeadline(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	ctx, cancel := context.WithTimeout(testContext(t), 200*time.Millisecond)
	defer cancel()
	stream, err := echov1.NewEchoServiceClient(conn).Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("Recv = %v; want DEADLINE_EXCEEDED", err)
	}
	// As in gRPC, Send reports a finished RPC as io.EOF (grpc-go's interop
	// scenario timeout_on_sleeping_server relies on it); Recv has the status.
	if err := stream.Send(&echov1.BidiRequest{}); !errors.Is(err, io.EOF) {
		t.Errorf("Send after the deadline = %v; want io.EOF", err)
	}
	call, err := b.WaitCall(testContext(t), "/examples.echo.v1.EchoService/Bidi")
	if err != nil {
		t.Fatal(err)
	}
	if !call.HasDeadline {
		t.Error("the backend saw no deadline")
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
}

func TestSendAfterCancel(t *testing.T) { forEachProtocol(t, testSendAfterCancel) }

func testSendAfterCancel(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	ctx, cancel := context.WithCancel(testContext(t))
	stream, err := echov1.NewEchoServiceClient(conn).Bidi(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&echov1.BidiRequest{Message: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := stream.Send(&echov1.BidiRequest{}); !errors.Is(err, io.EOF) {
		t.Errorf("Send after cancel = %v; want io.EOF", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v; want CANCELLED", err)
	}
	call, err := b.WaitCall(testContext(t), "/examples.echo.v1.EchoService/Bidi")
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

func TestCloseCancelsStreams(t *testing.T) { forEachProtocol(t, testCloseCancelsStreams) }

func testCloseCancelsStreams(t *testing.T, opts ...client.Option) {
	b, conn := start(t, nil, opts...)
	echo := echov1.NewEchoServiceClient(conn)
	stream, err := echo.Ticker(testContext(t), &echov1.TickerRequest{Interval: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil { // the backend handler runs
		t.Fatal(err)
	}
	conn.Close()
	_, err = stream.Recv()
	if st := status.Convert(err); st.Code() != codes.Canceled || st.Message() != "grpcws: client connection closed" {
		t.Errorf("Recv after Close = %v; want CANCELLED: grpcws: client connection closed", err)
	}
	if _, err := echo.Echo(testContext(t), &echov1.EchoRequest{}); status.Code(err) != codes.Canceled {
		t.Errorf("Echo after Close = %v; want CANCELLED", err)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
	if c := b.Calls(); len(c) != 1 || c[0].CtxErr != context.Canceled {
		t.Errorf("backend calls %+v; want one, cancelled", c)
	}
}

func TestCallMessageSize(t *testing.T) { forEachProtocol(t, testCallMessageSize) }

func testCallMessageSize(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	echo := echov1.NewEchoServiceClient(conn)
	ctx := testContext(t)
	// A limit smaller than the control frames must not refuse them.
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"}, grpc.MaxCallRecvMsgSize(8)); err != nil {
		t.Errorf("small response under a small limit: %v", err)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{ResponseSize: 100}, grpc.MaxCallRecvMsgSize(50)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("response over MaxCallRecvMsgSize: %v; want RESOURCE_EXHAUSTED", err)
	}
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Payload: make([]byte, 100)}, grpc.MaxCallSendMsgSize(50)); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("request over MaxCallSendMsgSize: %v; want RESOURCE_EXHAUSTED", err)
	}
}

// rawCodec passes bytes through, as a proxy would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

var _ encoding.Codec = rawCodec{}

func TestForceCodec(t *testing.T) { forEachProtocol(t, testForceCodec) }

func testForceCodec(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	req, err := proto.Marshal(&echov1.EchoRequest{Message: "raw"})
	if err != nil {
		t.Fatal(err)
	}
	var res []byte
	if err := conn.Invoke(testContext(t), "/examples.echo.v1.EchoService/Echo", &req, &res, grpc.ForceCodec(rawCodec{})); err != nil {
		t.Fatal(err)
	}
	var got echov1.EchoResponse
	if err := proto.Unmarshal(res, &got); err != nil || got.GetMessage() != "raw" {
		t.Errorf("response %v, %v; want raw", &got, err)
	}
}

func TestNotProto(t *testing.T) { forEachProtocol(t, testNotProto) }

func testNotProto(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	err := conn.Invoke(testContext(t), "/examples.echo.v1.EchoService/Echo", "not a message", &echov1.EchoResponse{})
	if status.Code(err) != codes.Internal {
		t.Errorf("Invoke with a string = %v; want INTERNAL", err)
	}
}

func TestNilMessage(t *testing.T) { forEachProtocol(t, testNilMessage) }

func testNilMessage(t *testing.T, opts ...client.Option) {
	_, conn := start(t, nil, opts...)
	// As in gRPC, a nil request goes as an empty message.
	var res echov1.EchoResponse
	if err := conn.Invoke(testContext(t), "/examples.echo.v1.EchoService/Echo", nil, &res); err != nil || res.GetMessage() != "" {
		t.Errorf("Invoke with a nil request = %v, %v; want an empty response", &res, err)
	}
}

// TestPings checks that a stream waiting in RecvMsg answers the bridge's
// pings, so a slow backend does not cost the RPC.
func TestPings(t *testing.T) {
	t.Parallel()
	_, conn := startBridge(t, nil, []bridge.Option{bridge.WithPing(10*time.Millisecond, 100*time.Millisecond)})
	stream, err := echov1.NewEchoServiceClient(conn).Ticker(testContext(t), &echov1.TickerRequest{Count: 2, Interval: durationpb.New(300 * time.Millisecond)})
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
	if n != 2 || !errors.Is(err, io.EOF) {
		t.Fatalf("%d messages then %v; want 2 then io.EOF", n, err)
	}
}

// TestPausedReceiver shows the limit that doc.go describes: while a
// received message waits for RecvMsg, the bridge's pings wait behind it,
// and the bridge ends an RPC whose pings go unanswered.
func TestPausedReceiver(t *testing.T) {
	t.Parallel()
	b, conn := startBridge(t, nil, []bridge.Option{bridge.WithPing(10*time.Millisecond, 50*time.Millisecond)})
	stream, err := echov1.NewEchoServiceClient(conn).Ticker(testContext(t), &echov1.TickerRequest{Interval: durationpb.New(5 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // ten times the ping timeout
	for range 1000 {
		if _, err = stream.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Recv after a pause = %v; want UNAVAILABLE", err)
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
