package demo

import (
	"context"
	"errors"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// EchoServer implements examples.echo.v1.EchoService.
type EchoServer struct {
	echov1.UnimplementedEchoServiceServer
}

// Echo returns the request's message and payload.
func (*EchoServer) Echo(ctx context.Context, req *echov1.EchoRequest) (*echov1.EchoResponse, error) {
	md := echoMetadata(ctx)
	if err := grpc.SetHeader(ctx, md); err != nil {
		return nil, err
	}
	if err := grpc.SetTrailer(ctx, md); err != nil {
		return nil, err
	}
	if d := req.GetDelay().AsDuration(); req.GetDelay() != nil && d > 0 {
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

// Ticker sends count messages, one every interval.
func (*EchoServer) Ticker(req *echov1.TickerRequest, stream grpc.ServerStreamingServer[echov1.TickerResponse]) error {
	ctx := stream.Context()
	md := echoMetadata(ctx)
	if err := stream.SetHeader(md); err != nil {
		return err
	}
	stream.SetTrailer(md)
	interval := req.GetInterval().AsDuration()
	for i := int32(1); req.GetCount() == 0 || i <= req.GetCount(); i++ {
		if i > 1 && interval > 0 {
			if err := sleep(ctx, interval); err != nil {
				return err
			}
		}
		if err := stream.Send(&echov1.TickerResponse{Message: req.GetMessage(), Index: i}); err != nil {
			return err
		}
	}
	return failure(req.GetFail())
}

// Upload counts the messages and bytes it receives.
func (*EchoServer) Upload(stream grpc.ClientStreamingServer[echov1.UploadRequest, echov1.UploadResponse]) error {
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
		res.Messages++
		res.Bytes += int64(len(req.GetChunk()))
	}
}

// Bidi answers every message as it arrives.
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

// failure returns the status f asks for, or nil.
func failure(f *echov1.Failure) error {
	switch c := f.GetCode(); {
	case c == 0:
		return nil
	case c < 1 || c > 16:
		return status.Errorf(codes.InvalidArgument, "fail.code %d is not a gRPC status code (1 to 16)", c)
	default:
		return status.Error(codes.Code(c), f.GetMessage())
	}
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
