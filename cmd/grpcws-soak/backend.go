package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demo"
)

// runBackend serves the soak's EchoService until ctx is done or the
// process is killed.
func runBackend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "`address` to serve on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
	echov1.RegisterEchoServiceServer(s, &soakEcho{})
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	fmt.Fprintf(stdout, "backend listening on %s\n", lis.Addr())
	select {
	case <-ctx.Done():
		s.Stop()
		return nil
	case err := <-served:
		return err
	}
}

// soakEcho is the demo EchoService with an Upload that checks the
// sequence numbers the soak puts in its chunks, since its response only
// counts them.
type soakEcho struct {
	demo.EchoServer
}

// Upload counts the chunks as the demo's does, and fails with DATA_LOSS at
// the first chunk whose first 8 bytes are not the next sequence number
// (1, 2, 3, ..., big-endian): a chunk lost, duplicated or reordered on the
// way.
func (*soakEcho) Upload(stream grpc.ClientStreamingServer[echov1.UploadRequest, echov1.UploadResponse]) error {
	var res echov1.UploadResponse
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&res)
		}
		if err != nil {
			return err
		}
		want := uint64(res.Messages + 1)
		c := req.GetChunk()
		if len(c) < 8 {
			return status.Errorf(codes.DataLoss, "soak: upload chunk %d has no sequence number", want)
		}
		if got := binary.BigEndian.Uint64(c); got != want {
			return status.Errorf(codes.DataLoss, "soak: upload chunk %d carries sequence number %d", want, got)
		}
		res.Messages++
		res.Bytes += int64(len(c))
	}
}
