package bridge_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/bridge"
)

// BenchmarkRoundTrip measures the bridge's per-message path: one WebSocket
// client doing ping-pong through the bridge with an in-memory backend that
// echoes each message, so that allocations per round trip are the bridge's
// own (and the WebSocket client's, which reads into a reused buffer).
func BenchmarkRoundTrip(b *testing.B) {
	for _, size := range []int{64, 4096} {
		b.Run(byteSize(size), func(b *testing.B) {
			h, err := bridge.NewHandler([]bridge.Service{{
				Desc: testgrpc.File_grpc_testing_benchmark_service_proto.Services().ByName("BenchmarkService"),
				Conn: echoConn{},
			}}, bridge.WithLogger(slog.New(slog.DiscardHandler)))
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			defer h.Close()
			ctx := context.Background()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
				Subprotocols: []string{"grpc.testing.BenchmarkService.StreamingCall"},
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.CloseNow()
			req, _ := proto.Marshal(&testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: make([]byte, size)}})
			buf := make([]byte, 0, 2*size+64)
			roundTrip := func() {
				if err := c.Write(ctx, websocket.MessageBinary, req); err != nil {
					b.Fatal(err)
				}
				for {
					typ, r, err := c.Reader(ctx)
					if err != nil {
						b.Fatal(err)
					}
					buf = buf[:0]
					for {
						n, err := r.Read(buf[len(buf):cap(buf)])
						buf = buf[:len(buf)+n]
						if errors.Is(err, io.EOF) {
							break
						}
						if err != nil {
							b.Fatal(err)
						}
					}
					if typ == websocket.MessageBinary {
						return
					}
				}
			}
			roundTrip() // headers and warm-up
			b.SetBytes(int64(2 * len(req)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1024 {
		return strconv.Itoa(n/1024) + "KiB"
	}
	return "64B"
}

// echoConn is an in-memory backend: every stream echoes each message it is
// sent, through the codec the caller forces, as gRPC would.
type echoConn struct{}

func (echoConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("echoConn: unary not supported")
}

func (echoConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s := &echoStream{ctx: ctx, msgs: make(chan mem.BufferSlice, 1)}
	for _, o := range opts {
		if c, ok := o.(grpc.ForceCodecV2CallOption); ok {
			s.codec = c.CodecV2
		}
	}
	if s.codec == nil {
		return nil, errors.New("echoConn: no codec forced")
	}
	return s, nil
}

type echoStream struct {
	ctx   context.Context
	codec encoding.CodecV2
	msgs  chan mem.BufferSlice
}

func (s *echoStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (s *echoStream) Trailer() metadata.MD         { return nil }
func (s *echoStream) CloseSend() error             { close(s.msgs); return nil }
func (s *echoStream) Context() context.Context     { return s.ctx }

func (s *echoStream) SendMsg(m any) error {
	data, err := s.codec.Marshal(m)
	if err != nil {
		return err
	}
	select {
	case s.msgs <- data:
		return nil
	case <-s.ctx.Done():
		data.Free()
		return io.EOF
	}
}

func (s *echoStream) RecvMsg(m any) error {
	select {
	case data, ok := <-s.msgs:
		if !ok {
			return io.EOF
		}
		defer data.Free()
		return s.codec.Unmarshal(data, m)
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}
