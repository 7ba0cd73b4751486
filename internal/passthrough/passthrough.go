// Package passthrough is a gRPC codec that moves messages as the bytes they
// are on the wire, so that a proxy forwards them without decoding.
package passthrough

import (
	"fmt"

	"google.golang.org/grpc/mem"
)

// Codec passes messages through as bytes. It names itself "proto" so the
// other side sees the usual content type, application/grpc+proto. Its
// messages are *Frame values.
//
// Buffers move without copies: Marshal hands a Frame's buffers, and the
// duty to free them, to gRPC; Unmarshal keeps a reference to gRPC's receive
// buffers, which the caller frees once it has written the message on.
type Codec struct{}

// A Frame is one message on its way through.
type Frame struct {
	Data mem.BufferSlice
}

// Name returns "proto".
func (Codec) Name() string { return "proto" }

// Marshal hands f's buffers, and the duty to free them, to gRPC.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	f, ok := v.(*Frame)
	if !ok {
		return nil, fmt.Errorf("passthrough: cannot marshal %T", v)
	}
	data := f.Data
	f.Data = nil
	return data, nil
}

// Unmarshal keeps a reference to data in f: the caller frees it.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return fmt.Errorf("passthrough: cannot unmarshal into %T", v)
	}
	data.Ref()
	f.Data = data
	return nil
}
