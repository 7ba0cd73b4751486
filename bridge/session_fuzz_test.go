package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1wire"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/wstest"
)

// FuzzSession drives one RPC per input through a real Handler, over
// loopback TCP with the raw client, against an in-memory backend. The input
// is a script of client frames (see decodeScript): messages, text, control
// frames, end of send, close frames, pings, fragments, oversized messages
// and frames with odd bits, in either encoding, with validation or with
// permessage-deflate. The script ends with an end of send where that is
// needed to end the RPC; the client reads until the bridge closes.
//
// Invariants: the handler never panics; the connection ends with a close
// frame within 5 s, whose code is one docs/protocol.md documents (or the
// echo of the client's own close); an end frame, if any, comes last, after
// at most one headers frame, and agrees with the close code unless the
// client's fault (1002, 1009) or its own close came after the end; and the
// backend stream always ends, its context done.
func FuzzSession(f *testing.F) {
	backend := newMemBackend()
	var panicked atomic.Value
	mux := http.NewServeMux()
	for _, path := range []string{"/", "/validate", "/deflate"} {
		opts := []bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler)), bridge.WithMaxMessageSize(fuzzLimit)}
		switch path {
		case "/validate":
			opts = append(opts, bridge.WithValidation(true))
		case "/deflate":
			opts = append(opts, bridge.WithCompression(true))
		}
		var services []bridge.Service
		for _, d := range compiledServices() {
			services = append(services, bridge.Service{Desc: d, Conn: backend})
		}
		h, err := bridge.NewHandler(services, opts...)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(h.Close)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if p := recover(); p != nil && p != http.ErrAbortHandler {
					panicked.Store(fmt.Sprint(p))
				}
			}()
			h.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(mux)
	f.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	for _, seed := range fuzzSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		sc := decodeScript(in)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := wstest.Request{Path: sc.path, Subprotocols: []string{sc.route}}
		if sc.path == "/deflate" {
			req.Header = http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}}
		}
		c, err := wstest.Dial(ctx, addr, req)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if tc, ok := c.NetConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // no TIME_WAIT: thousands of connections a second
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		written := make(chan struct{})
		go func() {
			defer close(written)
			_ = c.WriteFrame(sc.frames...)
		}()
		closed, err := c.ReadUntilClose()
		c.Close()
		<-written
		if p := panicked.Load(); p != nil {
			t.Fatalf("the handler panicked: %v\nscript: %s", p, sc)
		}
		if err != nil {
			t.Fatalf("no close within 5 s: %v\nscript: %s", err, sc)
		}
		checkSession(t, sc, closed)
		if err := backend.waitIdle(5 * time.Second); err != nil {
			t.Fatalf("%v\nscript: %s", err, sc)
		}
	})
}

// fuzzLimit is the message size limit of FuzzSession: small, so that
// scripts cross it.
const fuzzLimit = 1024

// checkSession checks the invariants of FuzzSession on what the client
// read.
func checkSession(t *testing.T, sc sessionScript, closed wstest.Closed) {
	t.Helper()
	code := closed.Code
	documented := code == 1000 || code == 1002 || code == 1007 || code == 1009 || (4001 <= code && code <= 4016)
	if !documented && !sc.closeCodes[code] {
		t.Fatalf("close %d %q: not a documented code\nscript: %s", code, closed.Reason, sc)
	}
	var end *grpcwsv1.End
	headers, messages := 0, 0
	for _, m := range closed.Messages {
		if end != nil {
			t.Fatalf("a frame after the end frame\nscript: %s", sc)
		}
		if m.Opcode != wstest.OpText || !bytes.HasPrefix(m.Payload, []byte("#")) {
			messages++
			continue
		}
		ctl, err := v1wire.ParseServerControl(m.Payload)
		if err != nil {
			t.Fatalf("bad control frame from the bridge: %v\nscript: %s", err, sc)
		}
		switch {
		case ctl.GetHeaders() != nil:
			if headers++; headers > 1 || messages > 0 {
				t.Fatalf("headers frame %d after %d messages\nscript: %s", headers, messages, sc)
			}
		case ctl.GetEnd() != nil:
			end = ctl.GetEnd()
		default:
			t.Fatalf("control frame with nothing set\nscript: %s", sc)
		}
	}
	if end == nil || sc.closeCodes[code] || code == 1002 || code == 1009 {
		// The client's own close may have crossed the bridge's, and the
		// WebSocket layer closes with 1002 or 1009 for a client's fault
		// even after the RPC ended.
		return
	}
	st := codes.Code(end.GetStatus().GetCode())
	var want []int
	switch st {
	case codes.OK:
		want = []int{1000}
	case codes.InvalidArgument:
		want = []int{4003, 1007}
	case codes.ResourceExhausted:
		want = []int{4008, 1009}
	default:
		want = []int{4000 + int(st)}
	}
	for _, w := range want {
		if code == w {
			return
		}
	}
	t.Fatalf("end status %v %q with close %d; want close %v\nscript: %s", st, end.GetStatus().GetMessage(), code, want, sc)
}

// A sessionScript is a decoded fuzz input.
type sessionScript struct {
	route  string
	path   string
	frames []wstest.Frame // the last one ends the RPC if nothing before did
	ops    []string       // what each frame is, for failures
	// closeCodes are the codes of the close frames the script sends,
	// which the bridge echoes.
	closeCodes map[int]bool
	// corrupt: the script sends raw frames with RSV1 on a connection with
	// permessage-deflate, whose payload may not inflate.
	corrupt bool
}

func (sc sessionScript) String() string {
	return fmt.Sprintf("%s%s: %s", sc.route, sc.path, strings.Join(sc.ops, ", "))
}

var fuzzRoutes = []string{echoRoute, tickerRoute, uploadRoute, bidiRoute}

// decodeScript turns a fuzz input into a script. The first byte picks the
// route (bits 0-1), the JSON encoding (bit 2), validation (bit 3) and
// permessage-deflate (bit 4, without validation). Then
// each op is a byte, a length byte n and n bytes of payload (fewer at the
// end of the input); the op's low nibble picks the frame, its high nibble
// varies it:
//
//	0 binary message     1 text frame        2 control frame ('#' + payload)
//	3 end of send        4 close frame       5 ping
//	6 fragmented binary  7 fragmented text   8 raw frame (high nibble: fin, rsv1-3)
//	9 binary of 8n bytes (crosses the limit)
//	10 binary, compressed (RSV1; the bridge refuses it without deflate)
func decodeScript(in []byte) sessionScript {
	sc := sessionScript{closeCodes: map[int]bool{}}
	var head byte
	if len(in) > 0 {
		head, in = in[0], in[1:]
	}
	sc.route = fuzzRoutes[head&3]
	if head&4 != 0 {
		sc.route += "+json"
	}
	switch {
	case head&8 != 0:
		sc.path = "/validate"
	case head&16 != 0:
		sc.path = "/deflate"
	default:
		sc.path = "/"
	}
	// data: the script sends a data message, which is the whole request
	// of a method whose client does not stream (or a protocol error);
	// raw: a raw frame, which may leave a message unfinished.
	data, raw := false, false
	for len(in) > 0 && len(sc.frames) < 64 {
		op := in[0]
		n := 0
		if len(in) > 1 {
			n = int(in[1])
		}
		in = in[min(2, len(in)):]
		p := in[:min(n, len(in))]
		in = in[len(p):]
		variant := int(op >> 4)
		add := func(desc string, frames ...wstest.Frame) {
			sc.frames = append(sc.frames, frames...)
			sc.ops = append(sc.ops, desc)
		}
		switch kind := op & 0x0f % 11; kind {
		case 0, 6, 9, 10:
			data = true
		case 1, 7:
			data = data || !bytes.HasPrefix(p, []byte("#"))
		case 8:
			raw = true
		}
		switch op & 0x0f % 11 {
		case 0:
			add(fmt.Sprintf("binary(%d)", len(p)), wstest.Binary(p))
		case 1:
			add(fmt.Sprintf("text(%q)", p), wstest.Text(string(p)))
		case 2:
			add(fmt.Sprintf("control(%q)", p), wstest.Text("#"+string(p)))
		case 3:
			add("endSend", wstest.Text(`#{"endSend":{}}`))
		case 4:
			if len(p) < 2 {
				add("close()", wstest.Frame{Fin: true, Opcode: wstest.OpClose, Mask: true})
				sc.closeCodes[wstest.NoStatus] = true
				break
			}
			code := binary.BigEndian.Uint16(p)
			reason := string(p[2:min(len(p), 2+123)])
			add(fmt.Sprintf("close(%d, %q)", code, reason), wstest.Close(code, reason))
			sc.closeCodes[int(code)] = true
		case 5:
			add(fmt.Sprintf("ping(%d)", min(len(p), 125)), wstest.Ping(p[:min(len(p), 125)]))
		case 6:
			add(fmt.Sprintf("binary(%d) in %d-byte fragments", len(p), variant+1), wstest.Fragments(wstest.OpBinary, p, variant+1)...)
		case 7:
			add(fmt.Sprintf("text(%q) in %d-byte fragments", p, variant+1), wstest.Fragments(wstest.OpText, p, variant+1)...)
		case 8:
			fr := wstest.Frame{Fin: variant&1 != 0, RSV1: variant&2 != 0, RSV2: variant&4 != 0, RSV3: variant&8 != 0, Mask: true}
			if len(p) > 0 {
				fr.Opcode, fr.Payload = p[0]&0x0f, p[1:]
			}
			sc.corrupt = sc.corrupt || fr.RSV1 && sc.path == "/deflate"
			if fr.Opcode == wstest.OpClose { // the bridge may echo it
				if len(fr.Payload) < 2 {
					sc.closeCodes[wstest.NoStatus] = true
				} else {
					sc.closeCodes[int(binary.BigEndian.Uint16(fr.Payload))] = true
				}
			}
			add("raw("+fr.String()+")", fr)
		case 9:
			add(fmt.Sprintf("binary(%d)", 8*n), wstest.Binary(bytes.Repeat(append(p, 0), 8*n)[:8*n]))
		case 10:
			fr := wstest.Binary(wstest.Deflate(bytes.Repeat(append(p, 0), variant+1)))
			fr.RSV1 = true
			add(fmt.Sprintf("compressed binary(%d)", (len(p)+1)*(variant+1)), fr)
		}
	}
	// End the RPC: with end of send where the client streams; where it
	// does not, the request did, unless there was none. (An end of send
	// after the request is a protocol error, which would end every such
	// RPC with 4003.)
	clientStreams := strings.HasPrefix(sc.route, uploadRoute) || strings.HasPrefix(sc.route, bidiRoute)
	if clientStreams || !data || raw {
		sc.frames = append(sc.frames, wstest.Text(`#{"endSend":{}}`))
		sc.ops = append(sc.ops, "endSend (the end of the script)")
	}
	return sc
}

// fuzzSeeds are scripts that reach the main paths.
func fuzzSeeds() [][]byte {
	op := func(kind byte, p ...byte) []byte { return append([]byte{kind, byte(len(p))}, p...) }
	str := func(kind byte, s string) []byte { return op(kind, []byte(s)...) }
	join := func(head byte, ops ...[]byte) []byte {
		out := []byte{head}
		for _, o := range ops {
			out = append(out, o...)
		}
		return out
	}
	bidiMsg := []byte{0x0a, 0x02, 'h', 'i'}
	fail := []byte{0x1a, 0x02, 0x08, 0x05} // BidiRequest.fail.code = 5
	return [][]byte{
		join(3, op(0, bidiMsg...), op(0, bidiMsg...)),                            // bidi, then end of send
		join(0, op(0, bidiMsg...)),                                               // unary
		join(1, op(0, 0x10, 0x03)),                                               // server streaming
		join(2, op(0, 0x0a, 0x01, 'x'), op(3), op(0, 0x0a, 0x01, 'x')),           // message after end of send
		join(3, op(0, 0xee, 0x05)),                                               // the backend fails with NOT_FOUND
		join(3, op(0, fail...)),                                                  // passed through unread
		join(3|4, str(1, `{"message":"hi"}`), str(1, `{"nope":1}`)),              // JSON, then JSON of nothing
		join(3|4, str(0x07, `{"message":"ü"}`)),                                  // fragmented JSON
		join(3, str(1, "\xff")),                                                  // invalid UTF-8
		join(3, str(2, `{"later":{}}`), str(2, `{`)),                             // unknown, then malformed control
		join(3, op(9, 200)),                                                      // over the limit
		join(3, op(0x26, bidiMsg...)),                                            // fragmented binary
		join(3, op(5, 'p'), op(0, bidiMsg...), op(4, 0x03, 0xe8, 'b', 'y', 'e')), // ping, message, close 1000
		join(3, op(4, 0x03, 0xe7)),                                               // close 999
		join(3, op(0xf8, 0x0b)),                                                  // opcode 11 with every bit set
		join(3, op(0x08, 0x01, 'x')),                                             // a non-final text frame, then end of send
		join(3|8, op(0, 0x0a, 0x05, 'x')),                                        // validation: truncated
		join(0, op(3)),                                                           // end of send before the request
		join(3|16, op(0x0a, bidiMsg...), op(0xfa, 0)),                            // compressed, then past the limit
		join(3|16, op(0x38, 0x02, 0xff, 0xff)),                                   // corrupt compressed data
	}
}

// memBackend is an in-memory backend for FuzzSession: a
// grpc.ClientConnInterface whose streams echo every message they are sent
// and end with OK at end of send. A message starting with 0xEE ends the
// stream with the status code in its second byte instead. It counts the
// streams that have not ended, and their contexts that are not done.
type memBackend struct {
	open atomic.Int64 // streams whose RecvMsg has not returned their end
	live atomic.Int64 // stream contexts not done
}

func newMemBackend() *memBackend { return &memBackend{} }

func (*memBackend) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("memBackend: no unary calls")
}

func (b *memBackend) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	var codec encoding.CodecV2
	for _, o := range opts {
		if c, ok := o.(grpc.ForceCodecV2CallOption); ok {
			codec = c.CodecV2
		}
	}
	if codec == nil {
		return nil, status.Error(codes.Internal, "memBackend: no codec forced")
	}
	s := &memStream{b: b, ctx: ctx, codec: codec, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
	b.open.Add(1)
	b.live.Add(1)
	context.AfterFunc(ctx, func() { b.live.Add(-1) })
	return s, nil
}

// waitIdle waits until every stream has ended and its context is done.
func (b *memBackend) waitIdle(within time.Duration) error {
	deadline := time.Now().Add(within)
	for b.open.Load() != 0 || b.live.Load() != 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("backend: %d streams not ended, %d contexts not done after %v", b.open.Load(), b.live.Load(), within)
		}
		time.Sleep(100 * time.Microsecond)
	}
	return nil
}

// memStream is one stream of memBackend. SendMsg and CloseSend are called
// by one goroutine, RecvMsg by another, as grpc.ClientStream allows.
type memStream struct {
	b     *memBackend
	ctx   context.Context
	codec encoding.CodecV2

	readable, writable chan struct{} // signalled when the queue or state changes

	mu         sync.Mutex
	queue      []mem.BufferSlice
	halfClosed bool
	final      error // the end a message asked for
	ended      bool
}

const memQueue = 4 // messages in flight before SendMsg blocks, like flow control

func memSignal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *memStream) Header() (metadata.MD, error) { return metadata.Pairs("x-mem", "1"), nil }
func (s *memStream) Trailer() metadata.MD         { return metadata.Pairs("x-mem-trailer", "1") }
func (s *memStream) Context() context.Context     { return s.ctx }

func (s *memStream) CloseSend() error {
	s.mu.Lock()
	s.halfClosed = true
	s.mu.Unlock()
	memSignal(s.readable)
	return nil
}

func (s *memStream) SendMsg(m any) error {
	data, err := s.codec.Marshal(m)
	if err != nil {
		return err
	}
	for {
		s.mu.Lock()
		switch {
		case s.ended || s.ctx.Err() != nil || s.final != nil:
			s.mu.Unlock()
			data.Free()
			return io.EOF
		case s.halfClosed:
			s.mu.Unlock()
			data.Free()
			return errors.New("memBackend: SendMsg after CloseSend")
		case len(s.queue) < memQueue:
			if b := data.Materialize(); len(b) >= 2 && b[0] == 0xee {
				s.final = status.Error(codes.Code(b[1]%17), "memBackend: asked to fail")
				if b[1]%17 == 0 {
					s.final = io.EOF
				}
				data.Free()
			} else {
				s.queue = append(s.queue, data)
			}
			s.mu.Unlock()
			memSignal(s.readable)
			return nil
		}
		s.mu.Unlock()
		select {
		case <-s.writable:
		case <-s.ctx.Done():
		}
	}
}

func (s *memStream) RecvMsg(m any) error {
	for {
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return errors.New("memBackend: RecvMsg after the end")
		}
		var end error
		switch {
		case s.ctx.Err() != nil:
			end = status.FromContextError(s.ctx.Err()).Err()
		case len(s.queue) > 0:
			data := s.queue[0]
			s.queue = s.queue[1:]
			s.mu.Unlock()
			memSignal(s.writable)
			err := s.codec.Unmarshal(data, m)
			data.Free()
			return err
		case s.final != nil:
			end = s.final
		case s.halfClosed:
			end = io.EOF
		}
		if end != nil {
			s.ended = true
			for _, d := range s.queue {
				d.Free()
			}
			s.queue = nil
			s.mu.Unlock()
			memSignal(s.writable)
			s.b.open.Add(-1)
			return end
		}
		s.mu.Unlock()
		select {
		case <-s.readable:
		case <-s.ctx.Done():
		}
	}
}
