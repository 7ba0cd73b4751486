package client

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"
)

// call is what an RPC is on either protocol: its call options, its
// contexts, and its outcome as the goroutine that reads records it. Both
// protocols' streams embed it, so that Header, Trailer, the codec and the
// rules of SendMsg and CloseSend are the same on both.
type call struct {
	parent  context.Context // the caller's context
	ctx     context.Context // parent, also cancelled by Close and when the RPC ends
	cancel  context.CancelFunc
	desc    *grpc.StreamDesc
	codec   encoding.CodecV2
	maxSend int
	maxRecv int

	headerAddrs  []*metadata.MD
	trailerAddrs []*metadata.MD

	closedByConn atomic.Bool // Conn.Close cancelled the RPC

	headerReady chan struct{} // closed when the headers arrive
	ended       chan struct{} // closed when the RPC's outcome is known

	// Written by the protocol's reader before it closes headerReady or
	// ended.
	header  metadata.MD
	trailer metadata.MD
	err     error // the RPC's outcome: nil for OK

	writeMu  sync.Mutex // one sender at a time, as grpc.ClientStream says
	sentEnd  bool
	sentMsgs int
}

// init sets up an RPC on ctx, with its call options.
func (c *call) init(ctx context.Context, desc *grpc.StreamDesc, maxMsg int, opts []grpc.CallOption) {
	c.parent = ctx
	c.desc = desc
	c.codec = protoCodec{}
	c.maxSend, c.maxRecv = maxMsg, maxMsg
	c.headerReady = make(chan struct{})
	c.ended = make(chan struct{})
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			c.headerAddrs = append(c.headerAddrs, o.HeaderAddr)
		case grpc.TrailerCallOption:
			c.trailerAddrs = append(c.trailerAddrs, o.TrailerAddr)
		case grpc.MaxRecvMsgSizeCallOption:
			c.maxRecv = o.MaxRecvMsgSize
		case grpc.MaxSendMsgSizeCallOption:
			c.maxSend = o.MaxSendMsgSize
		case grpc.ForceCodecV2CallOption:
			c.codec = o.CodecV2
		case grpc.ForceCodecCallOption:
			c.codec = codecV1{o.Codec}
		}
	}
}

// checkContext refuses to start an RPC whose context is done or whose
// deadline has passed.
func checkContext(ctx context.Context) error {
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= 0 {
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return nil
}

// Context returns the RPC's context. It is cancelled when the RPC ends.
func (c *call) Context() context.Context { return c.ctx }

// Header waits for the response headers. It returns nil, nil when the RPC
// ended without headers (a trailers-only response); RecvMsg then returns
// the status.
func (c *call) Header() (metadata.MD, error) {
	select {
	case <-c.headerReady:
		return c.header, nil
	case <-c.ended:
		select {
		case <-c.headerReady:
			return c.header, nil
		default:
			return nil, nil
		}
	}
}

// Trailer returns the trailers once RecvMsg has returned an error or
// io.EOF; before that it returns nil.
func (c *call) Trailer() metadata.MD {
	select {
	case <-c.ended:
		return c.trailer
	default:
		return nil
	}
}

// setHeader records the response headers; a second set is ignored. The
// protocol's reader calls it.
func (c *call) setHeader(md metadata.MD) {
	select {
	case <-c.headerReady:
	default:
		c.header = md
		close(c.headerReady)
	}
}

// end records the RPC's outcome and fills the grpc.Header and grpc.Trailer
// call options. The protocol's reader calls it once.
func (c *call) end(err error, trailer metadata.MD) {
	c.err, c.trailer = err, trailer
	for _, p := range c.headerAddrs {
		*p = c.header
	}
	for _, p := range c.trailerAddrs {
		*p = trailer
	}
	close(c.ended)
}

// prepareSend encodes a message for SendMsg and checks its size.
func (c *call) prepareSend(m any) ([]byte, error) {
	b, err := c.marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > c.maxSend {
		return nil, status.Errorf(codes.ResourceExhausted, "grpcws: trying to send message larger than max (%d vs. %d)", len(b), c.maxSend)
	}
	return b, nil
}

// checkSend applies SendMsg's rules, with writeMu held: no message after
// CloseSend, one on a method that takes one request, and io.EOF once the
// RPC has ended, whatever ended it.
func (c *call) checkSend() error {
	if c.sentEnd {
		return status.Error(codes.Internal, "grpcws: SendMsg called after CloseSend")
	}
	if !c.desc.ClientStreams && c.sentMsgs > 0 {
		return status.Error(codes.Internal, "grpcws: SendMsg called twice on a method that takes one request")
	}
	select {
	case <-c.ended:
		return io.EOF
	case <-c.ctx.Done(): // cancelled, past its deadline, or Close
		return io.EOF
	default:
	}
	return nil
}

// marshal encodes m with the call's codec: protobuf unless the call forced
// another with grpc.ForceCodec or grpc.ForceCodecV2.
func (c *call) marshal(m any) ([]byte, error) {
	if m == nil {
		// As gRPC does: a nil message is sent as an empty one.
		return nil, nil
	}
	var b []byte
	var err error
	if _, ok := c.codec.(protoCodec); ok {
		b, err = marshalProto(m)
	} else {
		var bs mem.BufferSlice
		if bs, err = c.codec.Marshal(m); err == nil {
			b = bs.Materialize() // a copy: bs may come from a pool
			bs.Free()
		}
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpcws: error while marshaling: %v", err)
	}
	return b, nil
}

// unmarshal decodes one received message into m with the call's codec.
func (c *call) unmarshal(b []byte, m any) error {
	if _, ok := c.codec.(protoCodec); ok {
		return unmarshalProto(b, m)
	}
	return c.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, m)
}

// clientErr returns the status of an RPC the client ended: its context's
// error, or CANCELLED when the Conn was closed. It returns nil otherwise.
func (c *call) clientErr() error {
	if err := c.parent.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if c.closedByConn.Load() {
		return errConnClosed
	}
	return nil
}

// contextErr is the status of an RPC whose context is done: the client's
// own error when it ended the RPC, CANCELLED otherwise (a cancel from
// within, as after a second response to a unary RPC).
func (c *call) contextErr() error {
	if err := c.clientErr(); err != nil {
		return err
	}
	return status.FromContextError(c.ctx.Err()).Err()
}

// protoCodec is the default codec: protobuf messages of either API, the
// same as gRPC's "proto" codec.
type protoCodec struct{}

func (protoCodec) Name() string { return "proto" }

func (protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := marshalProto(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return unmarshalProto(data.Materialize(), v)
}

func marshalProto(v any) ([]byte, error) {
	m := messageOf(v)
	if m == nil {
		return nil, fmt.Errorf("cannot send %T: only protobuf messages are supported", v)
	}
	return proto.Marshal(m)
}

func unmarshalProto(b []byte, v any) error {
	m := messageOf(v)
	if m == nil {
		return fmt.Errorf("cannot receive into %T: only protobuf messages are supported", v)
	}
	return proto.Unmarshal(b, m)
}

func messageOf(v any) proto.Message {
	switch v := v.(type) {
	case protoadapt.MessageV2:
		return v
	case protoadapt.MessageV1:
		return protoadapt.MessageV2Of(v)
	}
	return nil
}

// codecV1 adapts a grpc.ForceCodec codec.
type codecV1 struct{ encoding.Codec }

func (c codecV1) Marshal(v any) (mem.BufferSlice, error) {
	b, err := c.Codec.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (c codecV1) Unmarshal(data mem.BufferSlice, v any) error {
	return c.Codec.Unmarshal(data.Materialize(), v)
}
