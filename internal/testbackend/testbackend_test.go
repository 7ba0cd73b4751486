package testbackend

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const (
	echoMethod   = "/examples.echo.v1.EchoService/Echo"
	tickerMethod = "/examples.echo.v1.EchoService/Ticker"
)

func TestCalls(t *testing.T) {
	t.Parallel()
	b := Start(t)
	echo := echov1.NewEchoServiceClient(b.Conn)

	deadline := time.Now().Add(5 * time.Second)
	ctx, cancel := context.WithDeadline(testContext(t), deadline)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-a", "1", "x-a", "2")
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hi"}); err != nil {
		t.Fatal(err)
	}
	call, err := b.WaitCall(testContext(t), echoMethod)
	if err != nil {
		t.Fatal(err)
	}
	if got := call.MD.Get("x-a"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("x-a = %q; want [1 2]", got)
	}
	if !call.HasDeadline || call.Deadline.Sub(deadline).Abs() > time.Second {
		t.Errorf("deadline %v (%t); want about %v", call.Deadline, call.HasDeadline, deadline)
	}
	if call.Err != nil || call.CtxErr != nil || !call.Done {
		t.Errorf("call ended with %v, context %v, done %t; want nil, nil, true", call.Err, call.CtxErr, call.Done)
	}

	// No deadline, and a failure.
	_, err = echo.Echo(context.Background(), &echov1.EchoRequest{Fail: &echov1.Failure{Code: int32(codes.NotFound)}})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("Echo = %v; want NOT_FOUND", err)
	}
	calls := b.Calls()
	if len(calls) != 2 {
		t.Fatalf("%d calls; want 2", len(calls))
	}
	if c := calls[1]; c.Method != echoMethod || c.HasDeadline || status.Code(c.Err) != codes.NotFound || !c.Done {
		t.Errorf("second call %+v; want a finished Echo without deadline that failed with NOT_FOUND", c)
	}
	if n := b.Active(); n != 0 {
		t.Errorf("Active() = %d; want 0", n)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := Start(t)
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	stream, err := echov1.NewEchoServiceClient(b.Conn).Ticker(ctx, &echov1.TickerRequest{Interval: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if n := b.Active(); n != 1 {
		t.Errorf("Active() = %d during the stream; want 1", n)
	}
	short, stop := context.WithTimeout(testContext(t), 20*time.Millisecond)
	defer stop()
	if err := b.WaitIdle(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitIdle during the stream = %v; want a deadline error", err)
	}
	if calls := b.Calls(); len(calls) != 1 || calls[0].Done {
		t.Errorf("calls %+v; want one unfinished call", calls)
	}

	cancel()
	call, err := b.WaitCall(testContext(t), tickerMethod)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(call.CtxErr, context.Canceled) || status.Code(call.Err) != codes.Canceled {
		t.Errorf("call ended with %v, context %v; want CANCELED, context.Canceled", call.Err, call.CtxErr)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Error(err)
	}
}

func TestConcurrentCalls(t *testing.T) {
	t.Parallel()
	b := Start(t)
	echo := echov1.NewEchoServiceClient(b.Conn)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := echo.Echo(testContext(t), &echov1.EchoRequest{}); err != nil {
				t.Error(err)
			}
			_ = b.Calls()
			_ = b.Active()
		})
	}
	wg.Wait()
	if n := len(b.Calls()); n != 20 {
		t.Errorf("%d calls; want 20", n)
	}
}

func TestInteropService(t *testing.T) {
	t.Parallel()
	b := Start(t)
	test := testgrpc.NewTestServiceClient(b.Conn)
	if _, err := test.EmptyCall(testContext(t), &testgrpc.Empty{}); err != nil {
		t.Fatal(err)
	}
	res, err := test.UnaryCall(testContext(t), &testgrpc.SimpleRequest{ResponseSize: 7})
	if err != nil || len(res.GetPayload().GetBody()) != 7 {
		t.Fatalf("UnaryCall = %v, %v; want a 7-byte payload", res, err)
	}
	if _, err := b.WaitCall(testContext(t), "/grpc.testing.TestService/UnaryCall"); err != nil {
		t.Error(err)
	}
}

func TestServerOptions(t *testing.T) {
	t.Parallel()
	b := Start(t, grpc.MaxRecvMsgSize(16))
	_, err := echov1.NewEchoServiceClient(b.Conn).Echo(testContext(t), &echov1.EchoRequest{Payload: make([]byte, 32)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Echo over the server's limit = %v; want RESOURCE_EXHAUSTED", err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	b := Start(t)
	echo := echov1.NewEchoServiceClient(b.Conn)
	stream, err := echo.Ticker(testContext(t), &echov1.TickerRequest{Interval: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	b.Stop() // idempotent
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("open stream after Stop: %v; want UNAVAILABLE", err)
	}
	if _, err := echo.Echo(testContext(t), &echov1.EchoRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Echo after Stop = %v; want UNAVAILABLE", err)
	}
	if err := b.WaitIdle(testContext(t)); err != nil {
		t.Error(err)
	}
}
