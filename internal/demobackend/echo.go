package demobackend

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// maxResponseSize bounds EchoRequest.response_size, so that one request
// cannot make the demo backend allocate gigabytes.
const maxResponseSize = 64 << 20

// EchoServer implements examples.echo.v1.EchoService. The zero value is
// ready and safe for concurrent use.
type EchoServer struct {
	echov1.UnimplementedEchoServiceServer
	// CheckChunk, when set, checks each chunk of an Upload, numbered from
	// 1; its error ends the upload.
	CheckChunk func(n int64, chunk []byte) error
}

// Echo returns the request's message and payload, after the request's
// delay, or fails as the request asks.
func (*EchoServer) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	md := echoMetadata(ctx)
	if err := grpc.SetHeader(ctx, md); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, md); err != nil {
		return nil, err
	}
	if err := checkFailure(req.GetFail()); err != nil {
		return nil, err
	}
	if n := req.GetResponseSize(); n > maxResponseSize {
		return nil, status.Errorf(codes.InvalidArgument, "response_size %d is over the demo's limit of %d bytes", n, maxResponseSize)
	}
	if d := req.GetDelay().AsDuration(); d > 0 {
		if err := sleep(ctx, d); err != nil {
			return nil, err
		}
	}
	if err := failure(req.GetFail()); err != nil {
		return nil, err
	}
	res := &echov1.EchoResponse{Message: req.GetMessage(), Payload: req.GetPayload()}
	if n := req.GetResponseSize(); n > 0 {
		res.Payload = make([]byte, n)
	}
	return res, nil
}

// Ticker sends count messages, one every interval, then fails if the
// request asks it to. A count of 0 sends until the RPC is cancelled.
func (*EchoServer) Ticker(req *echov1.TickerRequest, stream grpc.ServerStreamingServer[echov1.TickerResponse]) error {
	ctx := stream.Context()
	md := echoMetadata(ctx)
	if err := stream.SetHeader(md); err != nil {
		return err
	}
	stream.SetTrailer(md)
	if err := checkFailure(req.GetFail()); err != nil {
		return err
	}
	count, interval := req.GetCount(), req.GetInterval().AsDuration()
	if count < 0 {
		return status.Errorf(codes.InvalidArgument, "count %d is negative", count)
	}
	if interval < 0 {
		return status.Errorf(codes.InvalidArgument, "interval %v is negative", interval)
	}
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for i := int32(1); count == 0 || i <= count; i++ {
		if i > 1 && tick != nil {
			select {
			case <-tick:
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		} else if err := ctx.Err(); err != nil {
			return status.FromContextError(err).Err()
		}
		if err := stream.Send(&echov1.TickerResponse{Message: req.GetMessage(), Index: i}); err != nil {
			return err
		}
		if i == math.MaxInt32 {
			break
		}
	}
	return failure(req.GetFail())
}

// Upload counts the messages and bytes it receives until the client
// half-closes. A request with fail set ends the RPC with that status at once.
func (e *EchoServer) Upload(stream grpc.ClientStreamingServer[echov1.UploadRequest, echov1.UploadResponse]) error {
	md := echoMetadata(stream.Context())
	if err := stream.SetHeader(md); err != nil {
		return err
	}
	stream.SetTrailer(md)
	var res echov1.UploadResponse
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&res)
		}
		if err != nil {
			return err
		}
		if err := failure(req.GetFail()); err != nil {
			return err
		}
		if e.CheckChunk != nil {
			if err := e.CheckChunk(res.Messages+1, req.GetChunk()); err != nil {
				return err
			}
		}
		res.Messages++
		res.Bytes += int64(len(req.GetChunk()))
	}
}

// Bidi answers every message as it arrives, with its index counted from 1.
// A request with fail set ends the RPC with that status at once.
func (*EchoServer) Bidi(stream grpc.BidiStreamingServer[echov1.BidiRequest, echov1.BidiResponse]) error {
	md := echoMetadata(stream.Context())
	if err := stream.SetHeader(md); err != nil {
		return err
	}
	stream.SetTrailer(md)
	for i := int64(1); ; i++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := failure(req.GetFail()); err != nil {
			return err
		}
		if err := stream.Send(&echov1.BidiResponse{Message: req.GetMessage(), Payload: req.GetPayload(), Index: i}); err != nil {
			return err
		}
	}
}

// echoMetadata returns the request metadata whose keys start with "x-echo-".
func echoMetadata(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if strings.HasPrefix(k, "x-echo-") {
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

// checkFailure refuses a Failure whose code is not a gRPC status code.
func checkFailure(f *echov1.Failure) error {
	if c := f.GetCode(); c < 0 || c > 16 {
		return status.Errorf(codes.InvalidArgument, "fail.code %d is not a gRPC status code (0 to 16)", c)
	}
	return nil
}

// failure returns the status f asks for, or nil. The status carries f as
// its one detail, so clients can test that details arrive.
func failure(f *echov1.Failure) error {
	if err := checkFailure(f); err != nil {
		return err
	}
	if f.GetCode() == 0 {
		return nil
	}
	st, err := status.New(codes.Code(f.GetCode()), f.GetMessage()).WithDetails(f)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return st.Err()
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
