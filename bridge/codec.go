package bridge

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// rawCodec passes messages to and from the backend as the bytes they are on
// the wire, so the binary encoding needs no decoding. It names itself
// "proto" so the backend sees the usual content type, application/grpc+proto.
type rawCodec struct{}

// frame is one message as bytes.
type frame struct {
	b []byte
}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("bridge: raw codec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(f.b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("bridge: raw codec cannot unmarshal into %T", v)
	}
	// data is freed when Unmarshal returns: keep a copy. A fresh slice each
	// time, since the previous one may still be in a write to the client.
	f.b = data.Materialize()
	return nil
}
