package bridge

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/grpcws/grpcws/internal/grpcheader"
	"google.golang.org/grpc/mem"
)

func FuzzHeaderBlock(f *testing.F) {
	f.Add([]byte("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\nx-echo-from: page\r\n"))
	f.Add([]byte("grpc-timeout: 5S\r\nauthorization: Bearer t\r\nx-a-bin: AAEC\r\n\r\n"))
	f.Add([]byte("no colon\r\n"))
	f.Add([]byte("host: x\r\nx: \x00\r\n"))
	cfg := newConfig(nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		md, _, err := parseHeaderBlock(b, &cfg.metadata)
		if err != nil {
			return
		}
		for k, vs := range md {
			if err := grpcheader.CheckKey(k); err != nil {
				t.Fatalf("accepted key %q: %v", k, err)
			}
			for _, v := range vs {
				if !strings.HasSuffix(k, "-bin") && !grpcheader.Printable(v) {
					t.Fatalf("accepted value %q of %q", v, k)
				}
			}
		}
	})
}

// FuzzGRPCWebsocketFrames feeds data messages, cut at arbitrary points, to
// the frame splitter: it must never panic, and the messages it returns are
// the frames' payloads, in order.
func FuzzGRPCWebsocketFrames(f *testing.F) {
	frame := func(n int) []byte {
		b := make([]byte, 5+n)
		binary.BigEndian.PutUint32(b[1:], uint32(n))
		return b
	}
	f.Add(append(frame(3), frame(0)...), uint8(2))
	f.Add(frame(64), uint8(7))
	f.Add([]byte{0x80, 0, 0, 0, 1, 9}, uint8(0))
	f.Add([]byte{1, 0, 0, 0, 1, 9}, uint8(1))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, uint8(3))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		s := &gwsFraming{route: &route{maxMsg: 64}}
		step := int(cut)%16 + 1
		total := 0
		for i := 0; i < len(stream); i += step {
			end := min(i+step, len(stream))
			msgs, fail := s.frames(mem.Copy(append([]byte{gwsData}, stream[i:end]...), mem.DefaultBufferPool()))
			for _, m := range msgs {
				total += m.Len()
				if m.Len() > 64 {
					t.Fatalf("a message of %d bytes over the limit of 64", m.Len())
				}
				m.Free()
			}
			if fail != nil {
				return
			}
		}
		if total+len(s.pending) > len(stream) {
			t.Fatalf("%d bytes out and %d pending from %d in", total, len(s.pending), len(stream))
		}
	})
}
