package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
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
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{CheckChunk: checkSequence})
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

// checkSequence checks the sequence numbers the soak puts in the chunks of
// an upload, since the response only counts them: it fails with DATA_LOSS
// at the first chunk whose first 8 bytes are not the next number (1, 2,
// 3, ..., big-endian): a chunk lost, duplicated or reordered on the way.
func checkSequence(n int64, chunk []byte) error {
	if len(chunk) < 8 {
		return status.Errorf(codes.DataLoss, "soak: upload chunk %d has no sequence number", n)
	}
	if got := binary.BigEndian.Uint64(chunk); got != uint64(n) {
		return status.Errorf(codes.DataLoss, "soak: upload chunk %d carries sequence number %d", n, got)
	}
	return nil
}
