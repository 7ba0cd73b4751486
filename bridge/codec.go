package bridge

import (
	"fmt"
	"io"

	"google.golang.org/grpc/mem"
)

// rawCodec passes messages to and from the backend as the bytes they are on
// the wire, so the binary encoding needs no decoding. It names itself
// "proto" so the backend sees the usual content type, application/grpc+proto.
//
// Buffers move without copies: a message from the client is read into a
// buffer from gRPC's pool that gRPC frees once it is written; a message from
// the backend keeps a reference to gRPC's receive buffers until it has been
// written to the client.
type rawCodec struct{}

// frame is one message on its way through the bridge.
type frame struct {
	data mem.BufferSlice
}

func (rawCodec) Name() string { return "proto" }

// Marshal hands f's buffers, and the duty to free them, to gRPC.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("bridge: raw codec cannot marshal %T", v)
	}
	data := f.data
	f.data = nil
	return data, nil
}

// Unmarshal keeps a reference to data: the caller frees it when the
// message has been written.
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("bridge: raw codec cannot unmarshal into %T", v)
	}
	data.Ref()
	f.data = data
	return nil
}

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
