package bridge

import (
	"io"

	"google.golang.org/grpc/mem"

	"github.com/grpcws/grpcws/internal/passthrough"
)

// rawCodec and frame move messages to and from the backend without
// decoding them: a message from the client is read into a buffer from
// gRPC's pool that gRPC frees once it is written; a message from the backend
// keeps a reference to gRPC's receive buffers until it has been written to
// the client.
type (
	rawCodec = passthrough.Codec
	frame    = passthrough.Frame
)

// initialReadSize is the first buffer a message from the client is read
// into; it doubles until the message fits. It is above gRPC's pooling
// threshold (1 KiB): mem.NewBuffer does not return smaller buffers to the
// pool, which would cost an allocation per message.
const initialReadSize = 4 << 10

// readMessage reads one message into a buffer from gRPC's pool.
func readMessage(r io.Reader) (mem.Buffer, error) {
	pool := mem.DefaultBufferPool()
	bp := pool.Get(initialReadSize)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			next := pool.Get(2 * cap(b))
			nb := append((*next)[:0], b...)
			pool.Put(bp)
			bp, b = next, nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return mem.NewBuffer(bp, pool), nil
		}
		if err != nil {
			pool.Put(bp)
			return nil, err
		}
	}
}
