package demobackend

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// handlerResults collects what every handler of a server returned, so that
// tests can check the backend's side of a cancel.
type handlerResults chan error

func (h handlerResults) options() []grpc.ServerOption {
	record := func(err error) {
		select {
		case h <- err:
		default:
		}
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			res, err := handler(ctx, req)
			record(err)
			return res, err
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			err := handler(srv, ss)
			record(err)
			return err
		}),
	}
}

// next waits for the next handler to return.
func (h handlerResults) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-h:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no handler returned within 5s")
		return nil
	}
}

// echoClient serves an EchoServer and returns a client for it and the
// results of its handlers.
func echoClient(t *testing.T) (echov1.EchoServiceClient, handlerResults) {
	results := make(handlerResults, 100)
	cc := serve(t, func(s *grpc.Server) { echov1.RegisterEchoServiceServer(s, &EchoServer{}) }, results.options()...)
	return echov1.NewEchoServiceClient(cc), results
}

func fail(code codes.Code, msg string) *echov1.Failure {
	return &echov1.Failure{Code: int32(code), Message: msg}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	echo, _ := echoClient(t)
	tests := []struct {
		name        string
		req         *echov1.EchoRequest
		wantPayload []byte
		wantCode    codes.Code
		wantMessage string
	}{
		{name: "message and payload", req: &echov1.EchoRequest{Message: "hi", Payload: []byte{0, 1, 2}}, wantPayload: []byte{0, 1, 2}},
		{name: "empty", req: &echov1.EchoRequest{}},
		{name: "response size", req: &echov1.EchoRequest{Message: "hi", Payload: []byte("x"), ResponseSize: 10}, wantPayload: make([]byte, 10)},
		{name: "response size over the limit", req: &echov1.EchoRequest{ResponseSize: maxResponseSize + 1}, wantCode: codes.InvalidArgument},
		{name: "fail", req: &echov1.EchoRequest{Fail: fail(codes.NotFound, "nicht gefunden")}, wantCode: codes.NotFound, wantMessage: "nicht gefunden"},
		{name: "fail after a delay", req: &echov1.EchoRequest{Delay: durationpb.New(time.Millisecond), Fail: fail(codes.Unauthenticated, "who")}, wantCode: codes.Unauthenticated, wantMessage: "who"},
		{name: "fail code 17", req: &echov1.EchoRequest{Fail: &echov1.Failure{Code: 17}}, wantCode: codes.InvalidArgument},
		{name: "fail code -1", req: &echov1.EchoRequest{Fail: &echov1.Failure{Code: -1}}, wantCode: codes.InvalidArgument},
		{name: "fail code 0", req: &echov1.EchoRequest{Message: "ok", Fail: &echov1.Failure{Message: "ignored"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, err := echo.Echo(testContext(t), tt.req)
			if tt.wantCode != codes.OK {
				s := status.Convert(err)
				if s.Code() != tt.wantCode || (tt.wantMessage != "" && s.Message() != tt.wantMessage) {
					t.Fatalf("Echo = %v; want %v %q", err, tt.wantCode, tt.wantMessage)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.GetMessage() != tt.req.GetMessage() || !bytes.Equal(res.GetPayload(), tt.wantPayload) {
				t.Errorf("got %q, %d bytes; want %q, %d bytes", res.GetMessage(), len(res.GetPayload()), tt.req.GetMessage(), len(tt.wantPayload))
			}
		})
	}
}

func TestEchoDelay(t *testing.T) {
	t.Parallel()
	echo, results := echoClient(t)

	start := time.Now()
	if _, err := echo.Echo(testContext(t), &echov1.EchoRequest{Delay: durationpb.New(30 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("answered after %v; want at least the 30ms delay", d)
	}
	if err := results.next(t); err != nil {
		t.Errorf("handler returned %v; want nil", err)
	}

	short, cancel := context.WithTimeout(testContext(t), 50*time.Millisecond)
	defer cancel()
	if _, err := echo.Echo(short, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("delay past the deadline: %v; want DEADLINE_EXCEEDED", err)
	}
	// The client's RST_STREAM can beat the server's own timer.
	if err := results.next(t); status.Code(err) != codes.DeadlineExceeded && status.Code(err) != codes.Canceled {
		t.Errorf("handler returned %v; want DEADLINE_EXCEEDED or CANCELED", err)
	}

	ctx, cancel := context.WithCancel(testContext(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := echo.Echo(ctx, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)}); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled during the delay: %v; want CANCELED", err)
	}
	if err := results.next(t); status.Code(err) != codes.Canceled {
		t.Errorf("handler returned %v; want CANCELED", err)
	}
}

func TestEchoMetadata(t *testing.T) {
	t.Parallel()
	echo, _ := echoClient(t)
	ctx := metadata.AppendToOutgoingContext(testContext(t),
		"x-echo-a", "1", "x-echo-a", "2", "x-echo-b-bin", string([]byte{0xff, 0}), "x-other", "no")
	want := metadata.MD{"x-echo-a": {"1", "2"}, "x-echo-b-bin": {string([]byte{0xff, 0})}}

	tests := []struct {
		name string
		call func(header, trailer *metadata.MD) error
	}{
		{"Echo", func(header, trailer *metadata.MD) error {
			_, err := echo.Echo(ctx, &echov1.EchoRequest{}, grpc.Header(header), grpc.Trailer(trailer))
			return err
		}},
		{"Ticker", func(header, trailer *metadata.MD) error {
			s, err := echo.Ticker(ctx, &echov1.TickerRequest{Count: 1})
			if err != nil {
				return err
			}
			if *header, err = s.Header(); err != nil {
				return err
			}
			for err == nil {
				_, err = s.Recv()
			}
			*trailer = s.Trailer()
			return ignoreEOF(err)
		}},
		{"Upload", func(header, trailer *metadata.MD) error {
			s, err := echo.Upload(ctx, grpc.Header(header), grpc.Trailer(trailer))
			if err != nil {
				return err
			}
			_, err = s.CloseAndRecv()
			return err
		}},
		{"Bidi", func(header, trailer *metadata.MD) error {
			s, err := echo.Bidi(ctx)
			if err != nil {
				return err
			}
			// Headers arrive before any response: the server sets them first.
			if err := s.Send(&echov1.BidiRequest{Message: "x"}); err != nil {
				return err
			}
			if *header, err = s.Header(); err != nil {
				return err
			}
			_ = s.CloseSend()
			for err == nil {
				_, err = s.Recv()
			}
			*trailer = s.Trailer()
			return ignoreEOF(err)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var header, trailer metadata.MD
			if err := tt.call(&header, &trailer); err != nil {
				t.Fatal(err)
			}
			for _, got := range []metadata.MD{header, trailer} {
				for k, v := range want {
					if !slices.Equal(got.Get(k), v) {
						t.Errorf("%s = %q; want %q", k, got.Get(k), v)
					}
				}
				if got.Get("x-other") != nil {
					t.Errorf("x-other was copied: %v", got)
				}
			}
		})
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// tickerResult is what a Ticker stream delivered.
type tickerResult struct {
	indexes []int32
	err     error
}

func recvTicker(s grpc.ServerStreamingClient[echov1.TickerResponse], message string) tickerResult {
	var r tickerResult
	for {
		res, err := s.Recv()
		if err != nil {
			r.err = ignoreEOF(err)
			return r
		}
		if res.GetMessage() != message {
			r.err = errors.New("message " + res.GetMessage() + "; want " + message)
			return r
		}
		r.indexes = append(r.indexes, res.GetIndex())
	}
}

func TestTicker(t *testing.T) {
	t.Parallel()
	echo, _ := echoClient(t)
	tests := []struct {
		name     string
		req      *echov1.TickerRequest
		want     []int32
		wantCode codes.Code
	}{
		{name: "count", req: &echov1.TickerRequest{Message: "t", Count: 3}, want: []int32{1, 2, 3}},
		{name: "interval", req: &echov1.TickerRequest{Message: "t", Count: 3, Interval: durationpb.New(5 * time.Millisecond)}, want: []int32{1, 2, 3}},
		{name: "fail after the messages", req: &echov1.TickerRequest{Message: "t", Count: 2, Fail: fail(codes.FailedPrecondition, "done")}, want: []int32{1, 2}, wantCode: codes.FailedPrecondition},
		{name: "bad fail code", req: &echov1.TickerRequest{Count: 2, Fail: &echov1.Failure{Code: 99}}, wantCode: codes.InvalidArgument},
		{name: "negative count", req: &echov1.TickerRequest{Count: -1}, wantCode: codes.InvalidArgument},
		{name: "negative interval", req: &echov1.TickerRequest{Count: 1, Interval: durationpb.New(-time.Second)}, wantCode: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			s, err := echo.Ticker(testContext(t), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			got := recvTicker(s, tt.req.GetMessage())
			if !slices.Equal(got.indexes, tt.want) || status.Code(got.err) != tt.wantCode {
				t.Errorf("got %v, %v; want %v, %v", got.indexes, got.err, tt.want, tt.wantCode)
			}
			if least := time.Duration(max(len(tt.want)-1, 0)) * tt.req.GetInterval().AsDuration(); time.Since(start) < least {
				t.Errorf("took %v; want at least %v", time.Since(start), least)
			}
		})
	}
}

func TestTickerUntilCancelled(t *testing.T) {
	t.Parallel()
	for _, interval := range []time.Duration{0, time.Millisecond} {
		echo, results := echoClient(t)
		ctx, cancel := context.WithCancel(testContext(t))
		s, err := echo.Ticker(ctx, &echov1.TickerRequest{Message: "t", Interval: durationpb.New(interval)})
		if err != nil {
			t.Fatal(err)
		}
		for want := int32(1); want <= 20; want++ {
			res, err := s.Recv()
			if err != nil || res.GetIndex() != want {
				t.Fatalf("interval %v: got %v, %v; want index %d", interval, res, err, want)
			}
		}
		cancel()
		if err := results.next(t); status.Code(err) != codes.Canceled {
			t.Errorf("interval %v: handler returned %v; want CANCELED", interval, err)
		}
	}
}

func TestUpload(t *testing.T) {
	t.Parallel()
	echo, results := echoClient(t)
	tests := []struct {
		name         string
		chunks       []string
		wantMessages int64
		wantBytes    int64
	}{
		{"none", nil, 0, 0},
		{"two", []string{"abc", "de"}, 2, 5},
		{"empty chunks count", []string{"", "", "x"}, 3, 1},
	}
	for _, tt := range tests {
		s, err := echo.Upload(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range tt.chunks {
			if err := s.Send(&echov1.UploadRequest{Chunk: []byte(c)}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := s.CloseAndRecv()
		if err != nil || res.GetMessages() != tt.wantMessages || res.GetBytes() != tt.wantBytes {
			t.Errorf("%s: got %v, %v; want %d messages, %d bytes", tt.name, res, err, tt.wantMessages, tt.wantBytes)
		}
		if err := results.next(t); err != nil {
			t.Errorf("%s: handler returned %v", tt.name, err)
		}
	}

	// A failure ends the RPC at once: no half-close needed.
	s, err := echo.Upload(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&echov1.UploadRequest{Chunk: []byte("x")})
	_ = s.Send(&echov1.UploadRequest{Fail: fail(codes.DataLoss, "lost")})
	if err := s.RecvMsg(new(echov1.UploadResponse)); status.Code(err) != codes.DataLoss {
		t.Errorf("fail: %v; want DATA_LOSS", err)
	}
}

func TestBidi(t *testing.T) {
	t.Parallel()
	echo, _ := echoClient(t)
	s, err := echo.Bidi(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []string{"a", "b", "c"} {
		if err := s.Send(&echov1.BidiRequest{Message: m, Payload: []byte(m + m)}); err != nil {
			t.Fatal(err)
		}
		res, err := s.Recv()
		if err != nil || res.GetMessage() != m || string(res.GetPayload()) != m+m || res.GetIndex() != int64(i+1) {
			t.Fatalf("got %v, %v; want %s, %s%s, %d", res, err, m, m, m, i+1)
		}
	}
	_ = s.CloseSend()
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after the half-close: %v; want EOF", err)
	}

	for _, tt := range []struct {
		name string
		fail *echov1.Failure
		want codes.Code
	}{
		{"fail", fail(codes.Aborted, "stop"), codes.Aborted},
		{"bad code", &echov1.Failure{Code: 42}, codes.InvalidArgument},
	} {
		s, err := echo.Bidi(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Send(&echov1.BidiRequest{Message: "a"})
		if res, err := s.Recv(); err != nil || res.GetIndex() != 1 {
			t.Fatalf("%s: got %v, %v; want index 1", tt.name, res, err)
		}
		_ = s.Send(&echov1.BidiRequest{Fail: tt.fail})
		if _, err := s.Recv(); status.Code(err) != tt.want {
			t.Errorf("%s: %v; want %v", tt.name, err, tt.want)
		}
	}
}
