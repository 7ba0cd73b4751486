package bridge_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/wstest"
)

// The tests in this file play hostile and broken clients against the
// bridge, with the raw client of internal/wstest. Each checks the exact
// close code of docs/protocol.md (section 5), that it comes within
// closeBound, that the backend saw its stream end, and that the bridge
// still serves others afterwards. docs/security.md lists them by threat.

// closeBound is how long a hostile client may wait for its close.
const closeBound = 5 * time.Second

const (
	bidiMethod   = "/examples.echo.v1.EchoService/Bidi"
	uploadMethod = "/examples.echo.v1.EchoService/Upload"
	tickerMethod = "/examples.echo.v1.EchoService/Ticker"
)

// raw opens a raw WebSocket to the bridge with r. Reads and writes fail
// after closeBound unless the test sets another deadline.
func (f *fixture) raw(t *testing.T, r wstest.Request) *wstest.Conn {
	t.Helper()
	c, err := wstest.Dial(testContext(t), f.server.Listener.Addr().String(), r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(closeBound))
	return c
}

// rawRoute opens a raw WebSocket to route.
func (f *fixture) rawRoute(t *testing.T, route string) *wstest.Conn {
	t.Helper()
	return f.raw(t, wstest.Request{Subprotocols: []string{route}})
}

// openBidi opens a Bidi RPC and makes one round trip, so that the
// backend's handler is running when the test turns hostile.
func (f *fixture) openBidi(t *testing.T) *wstest.Conn {
	t.Helper()
	c := f.rawRoute(t, bidiRoute)
	writeFrames(t, c, wstest.Binary(mustMarshal(t, &echov1.BidiRequest{Message: "hello"})))
	readBinary(t, c)
	return c
}

func writeFrames(t *testing.T, c *wstest.Conn, frames ...wstest.Frame) {
	t.Helper()
	if err := c.WriteFrame(frames...); err != nil {
		t.Fatal(err)
	}
}

// readBinary reads messages until a binary one and returns it.
func readBinary(t *testing.T, c *wstest.Conn) []byte {
	t.Helper()
	for {
		op, p, _, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("reading a message: %v", err)
		}
		if op == wstest.OpBinary {
			return p
		}
	}
}

// expectClose reads until the bridge ends the connection, which must be
// within closeBound and with the close code want (wstest.Abnormal: no close
// frame).
func expectClose(t *testing.T, c *wstest.Conn, want int) wstest.Closed {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(closeBound))
	closed, err := c.ReadUntilClose()
	if err != nil {
		t.Fatalf("no close within %v: %v", closeBound, err)
	}
	if closed.Code != want {
		t.Fatalf("close %d %q; want %d", closed.Code, closed.Reason, want)
	}
	return closed
}

// endOf returns the end frame among the messages of closed, or nil.
func endOf(t *testing.T, closed wstest.Closed) *grpcwsv1.End {
	t.Helper()
	for _, m := range closed.Messages {
		if m.Opcode != wstest.OpText || !bytes.HasPrefix(m.Payload, []byte("#")) {
			continue
		}
		var sc grpcwsv1.ServerControl
		if err := protojson.Unmarshal(m.Payload[1:], &sc); err != nil {
			t.Fatalf("bad control frame: %v", err)
		}
		if sc.GetEnd() != nil {
			return sc.GetEnd()
		}
	}
	return nil
}

// expectEnd checks that closed carries an end frame with code.
func expectEnd(t *testing.T, closed wstest.Closed, code codes.Code) {
	t.Helper()
	end := endOf(t, closed)
	if end == nil {
		t.Fatalf("no end frame before the close; want status %v", code)
	}
	if got := codes.Code(end.GetStatus().GetCode()); got != code {
		t.Fatalf("end status %v %q; want %v", got, end.GetStatus().GetMessage(), code)
	}
}

// expectNoEnd checks that closed carries no end frame: the bridge stopped
// talking to a client that broke the protocol.
func expectNoEnd(t *testing.T, closed wstest.Closed) {
	t.Helper()
	if end := endOf(t, closed); end != nil {
		t.Fatalf("end frame %v; want none", end.GetStatus())
	}
}

// backendCancelled waits for the backend's handlers to return and checks
// that the last call to method ended because the bridge cancelled it.
func (f *fixture) backendCancelled(t *testing.T, method string, within ...time.Duration) {
	t.Helper()
	call := f.backendEnded(t, method, within...)
	if !errors.Is(call.CtxErr, context.Canceled) {
		t.Fatalf("backend %s ended with context error %v (%v); want %v", method, call.CtxErr, call.Err, context.Canceled)
	}
}

// backendEnded waits, for up to closeBound or the bound given, until no
// backend handler runs, and returns the last call to method.
func (f *fixture) backendEnded(t *testing.T, method string, within ...time.Duration) testbackend.Call {
	t.Helper()
	bound := closeBound
	if len(within) > 0 {
		bound = within[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if _, err := f.backend.WaitCall(ctx, method); err != nil {
		t.Fatal(err)
	}
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	calls := f.backend.Calls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Method == method {
			return calls[i]
		}
	}
	panic("unreachable: WaitCall found a call")
}

// stillServes checks that the bridge serves a well-behaved client.
func (f *fixture) stillServes(t *testing.T) {
	t.Helper()
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "still here"})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure || r.Frames != 1 {
		t.Fatalf("a good client after a bad one: close %d %q, %d messages; want 1000 and 1", r.Close, r.Reason, r.Frames)
	}
}

// brokenFrame is a case of a client that breaks RFC 6455 on an open RPC.
type brokenFrame struct {
	name   string
	frames []wstest.Frame
	want   int // close code
	// issue, if set, is a known issue that makes the case fail: the case
	// is skipped unless GRPCWS_KNOWN_ISSUES is set in the environment.
	issue string
}

// runBroken opens a Bidi RPC for each case, sends the frames, and checks
// the close code, that no end frame came (the WebSocket layer closes at
// once, or the client closed first and cancelled the RPC), that the
// backend stream was cancelled, and that the bridge still serves.
func runBroken(t *testing.T, tests []brokenFrame) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.issue != "" && os.Getenv("GRPCWS_KNOWN_ISSUES") == "" {
				t.Skip("known issue: " + tt.issue)
			}
			f := newFixture(t)
			c := f.openBidi(t)
			writeFrames(t, c, tt.frames...)
			expectNoEnd(t, expectClose(t, c, tt.want))
			f.backendCancelled(t, bidiMethod)
			f.stillServes(t)
		})
	}
}

// bidiMessage returns a BidiRequest with msg, encoded.
func bidiMessage(t *testing.T, msg string) []byte {
	t.Helper()
	return mustMarshal(t, &echov1.BidiRequest{Message: msg})
}

// TestHostileFraming covers the conformance suite's framing and
// reserved-bit groups: frames no client may send.
func TestHostileFraming(t *testing.T) {
	t.Parallel()
	msg := bidiMessage(t, "x")
	unmasked := wstest.Binary(msg)
	unmasked.Mask = false
	runBroken(t, []brokenFrame{
		{name: "rsv1 without compression", frames: []wstest.Frame{{Fin: true, RSV1: true, Opcode: wstest.OpBinary, Mask: true, Payload: msg}}, want: 1002},
		{name: "rsv2 on a binary frame", frames: []wstest.Frame{{Fin: true, RSV2: true, Opcode: wstest.OpBinary, Mask: true, Payload: msg}}, want: 1002},
		{name: "rsv3 on a text frame", frames: []wstest.Frame{{Fin: true, RSV3: true, Opcode: wstest.OpText, Mask: true, Payload: []byte(`#{"endSend":{}}`)}}, want: 1002},
		{name: "all reserved bits on a ping", frames: []wstest.Frame{{Fin: true, RSV1: true, RSV2: true, RSV3: true, Opcode: wstest.OpPing, Mask: true}}, want: 1002},
		{name: "rsv1 on a continuation", frames: []wstest.Frame{{Opcode: wstest.OpBinary, Mask: true, Payload: msg[:1]}, {Fin: true, RSV1: true, Opcode: wstest.OpContinuation, Mask: true, Payload: msg[1:]}}, want: 1002},
		{name: "unmasked frame", frames: []wstest.Frame{unmasked}, want: 1002},
		{name: "length with the top bit set", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpBinary, Mask: true, DeclaredLen: wstest.Length(1 << 63)}}, want: 1002},
		{name: "continuation without a message", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpContinuation, Mask: true, Payload: msg}}, want: 1002},
		{name: "new message inside a fragmented one", frames: []wstest.Frame{{Opcode: wstest.OpBinary, Mask: true, Payload: msg[:1]}, wstest.Binary(msg)}, want: 1002},
		{name: "text frame inside a fragmented binary one", frames: []wstest.Frame{{Opcode: wstest.OpBinary, Mask: true, Payload: msg[:1]}, wstest.Text(`#{"endSend":{}}`)}, want: 1002},
	})
}

// TestHostileOpcodes sends every reserved opcode, data (3 to 7) and
// control (11 to 15), and control frames that break the rules for them.
func TestHostileOpcodes(t *testing.T) {
	t.Parallel()
	var tests []brokenFrame
	for _, op := range []byte{3, 4, 5, 6, 7, 11, 12, 13, 14, 15} {
		tests = append(tests, brokenFrame{name: fmt.Sprintf("opcode %d", op), frames: []wstest.Frame{{Fin: true, Opcode: op, Mask: true, Payload: []byte("x")}}, want: 1002})
	}
	tests = append(tests,
		brokenFrame{name: "ping of 126 bytes", frames: []wstest.Frame{wstest.Ping(make([]byte, 126))}, want: 1002},
		brokenFrame{name: "pong of 126 bytes", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpPong, Mask: true, Payload: make([]byte, 126)}}, want: 1002},
		brokenFrame{name: "close of 126 bytes", frames: []wstest.Frame{wstest.Close(1000, strings.Repeat("r", 124))}, want: 1002},
		brokenFrame{name: "ping declaring 64 KiB", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpPing, Mask: true, DeclaredLen: wstest.Length(1 << 16)}}, want: 1002},
		brokenFrame{name: "fragmented ping", frames: []wstest.Frame{{Opcode: wstest.OpPing, Mask: true, Payload: []byte("a")}, {Fin: true, Opcode: wstest.OpContinuation, Mask: true, Payload: []byte("b")}}, want: 1002},
		brokenFrame{name: "fragmented close", frames: []wstest.Frame{{Opcode: wstest.OpClose, Mask: true, Payload: []byte{3, 232}}}, want: 1002},
	)
	runBroken(t, tests)
}

// TestHostileClose covers close handling: a close frame with a code no
// endpoint may send is a protocol error; a valid one from the client
// cancels the RPC, and the bridge echoes it.
func TestHostileClose(t *testing.T) {
	t.Parallel()
	var tests []brokenFrame
	for _, code := range []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535} {
		tests = append(tests, brokenFrame{name: fmt.Sprintf("code %d", code), frames: []wstest.Frame{wstest.Close(code, "")}, want: 1002})
	}
	tests = append(tests,
		brokenFrame{name: "one-byte payload", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpClose, Mask: true, Payload: []byte{3}}}, want: 1002},
		brokenFrame{name: "reason that is not UTF-8", frames: []wstest.Frame{wstest.Close(1000, "\xff\xfe")}, want: 1007,
			issue: "the WebSocket layer (coder/websocket) does not check close reasons and echoes the invalid one with 1000"},
	)
	// Valid codes: the bridge echoes them and cancels the RPC.
	for _, code := range []uint16{1000, 1001, 1002, 1011, 3000, 4003, 4999} {
		tests = append(tests, brokenFrame{name: fmt.Sprintf("valid code %d", code), frames: []wstest.Frame{wstest.Close(code, "bye")}, want: int(code)})
	}
	tests = append(tests,
		brokenFrame{name: "empty close", frames: []wstest.Frame{{Fin: true, Opcode: wstest.OpClose, Mask: true}}, want: wstest.NoStatus},
		brokenFrame{name: "close inside a fragmented message", frames: []wstest.Frame{{Opcode: wstest.OpBinary, Mask: true, Payload: []byte{0x0a}}, wstest.Close(1000, "")}, want: 1000},
		brokenFrame{name: "frames after the close", frames: []wstest.Frame{wstest.Close(1000, ""), wstest.Binary(bidiMessage(t, "ignored"))}, want: 1000},
	)
	runBroken(t, tests)
}

// TestHostileFragmentation sends legal fragmented messages in odd shapes:
// one byte per frame, empty fragments, pings between fragments. Each must
// arrive whole.
func TestHostileFragmentation(t *testing.T) {
	t.Parallel()
	msg := mustMarshal(t, &echov1.BidiRequest{Message: "fragmented", Payload: bytes.Repeat([]byte("p"), 300)})
	pinged := func(frames []wstest.Frame) []wstest.Frame {
		var out []wstest.Frame
		for i, fr := range frames {
			if i > 0 {
				out = append(out, wstest.Ping([]byte(fmt.Sprint(i))))
			}
			out = append(out, fr)
		}
		return out
	}
	var empties []wstest.Frame
	empties = append(empties, wstest.Frame{Opcode: wstest.OpBinary, Mask: true})
	for range 1000 {
		empties = append(empties, wstest.Frame{Opcode: wstest.OpContinuation, Mask: true})
	}
	empties = append(empties, wstest.Frame{Fin: true, Opcode: wstest.OpContinuation, Mask: true, Payload: msg})

	tests := []struct {
		name   string
		frames []wstest.Frame
	}{
		{"one byte a frame", wstest.Fragments(wstest.OpBinary, msg, 1)},
		{"pings between fragments", pinged(wstest.Fragments(wstest.OpBinary, msg, 7))},
		{"125-byte pings between fragments", func() []wstest.Frame {
			var out []wstest.Frame
			for _, fr := range wstest.Fragments(wstest.OpBinary, msg, 50) {
				out = append(out, fr, wstest.Ping(bytes.Repeat([]byte("q"), 125)))
			}
			return out
		}()},
		{"a thousand empty fragments", empties},
		{"unsolicited pongs between fragments", func() []wstest.Frame {
			var out []wstest.Frame
			for _, fr := range wstest.Fragments(wstest.OpBinary, msg, 100) {
				out = append(out, wstest.Frame{Fin: true, Opcode: wstest.OpPong, Mask: true, Payload: []byte("unasked")}, fr)
			}
			return out
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			c := f.rawRoute(t, bidiRoute)
			writeFrames(t, c, tt.frames...)
			var res echov1.BidiResponse
			if err := proto.Unmarshal(readBinary(t, c), &res); err != nil {
				t.Fatal(err)
			}
			if res.GetMessage() != "fragmented" || len(res.GetPayload()) != 300 {
				t.Fatalf("answer %q with %d bytes; want the fragmented message whole", res.GetMessage(), len(res.GetPayload()))
			}
			writeFrames(t, c, wstest.Text(`#{"endSend":{}}`))
			expectEnd(t, expectClose(t, c, 1000), codes.OK)
		})
	}

	// A fragmented text control frame, split inside a UTF-8 character.
	t.Run("control frame split inside a character", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		c := f.rawRoute(t, echoRoute+"+json")
		writeFrames(t, c, wstest.Fragments(wstest.OpText, []byte(`{"message":"ü€𝄞"}`), 1)...)
		op, p, _, err := c.ReadMessage()
		for err == nil && op == wstest.OpText && bytes.HasPrefix(p, []byte("#")) {
			op, p, _, err = c.ReadMessage()
		}
		if err != nil || string(p) != `{"message":"ü€𝄞"}` {
			t.Fatalf("answer %q, %v; want the message back", p, err)
		}
		expectEnd(t, expectClose(t, c, 1000), codes.OK)
	})
}

// TestHostileUTF8 sends text frames that are not valid UTF-8, in both
// encodings, whole and fragmented: 1007 with INVALID_ARGUMENT in-band.
func TestHostileUTF8(t *testing.T) {
	t.Parallel()
	bad := []struct {
		name string
		text string
	}{
		{"lone continuation byte", "\x80"},
		{"0xff", "\xff"},
		{"overlong slash", "\xc0\xaf"},
		{"overlong NUL", "\xe0\x80\x80"},
		{"surrogate half", "\xed\xa0\x80"},
		{"beyond U+10FFFF", "\xf4\x90\x80\x80"},
		{"truncated sequence", "\xe2\x82"},
	}
	for _, b := range bad {
		for _, enc := range []struct {
			name, route, text string
			fragment          int
		}{
			{"control frame", bidiRoute, `#{"endSend":{}}` + b.text, 0},
			{"json message", bidiRoute + "+json", `{"message":"` + b.text + `"}`, 0},
			{"fragmented json message", bidiRoute + "+json", `{"message":"` + b.text + `"}`, 3},
		} {
			t.Run(b.name+"/"+enc.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t)
				c := f.rawRoute(t, enc.route)
				first := wstest.Binary(bidiMessage(t, "hello"))
				if strings.HasSuffix(enc.route, "+json") {
					first = wstest.Text(`{"message":"hello"}`)
				}
				writeFrames(t, c, first)
				if _, _, _, err := c.ReadMessage(); err != nil { // the headers
					t.Fatal(err)
				}
				writeFrames(t, c, wstest.Fragments(wstest.OpText, []byte(enc.text), enc.fragment)...)
				closed := expectClose(t, c, 1007)
				expectEnd(t, closed, codes.InvalidArgument)
				f.backendCancelled(t, bidiMethod)
			})
		}
	}
}

// TestHostileLimits sends messages at the size limit, one byte over it,
// and frames that declare huge lengths.
func TestHostileLimits(t *testing.T) {
	t.Parallel()
	const limit = 1024
	// sized returns an UploadRequest of exactly n bytes.
	sized := func(t *testing.T, n int) []byte {
		t.Helper()
		b := mustMarshal(t, &echov1.UploadRequest{Chunk: make([]byte, n-3)}) // tag and a 2-byte length
		if len(b) != n {
			t.Fatalf("%d-byte request; want %d", len(b), n)
		}
		return b
	}

	t.Run("exactly at the limit", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithMaxMessageSize(limit))
		c := f.rawRoute(t, uploadRoute)
		writeFrames(t, c, wstest.Binary(sized(t, limit)), wstest.Text(`#{"endSend":{}}`))
		closed := expectClose(t, c, 1000)
		expectEnd(t, closed, codes.OK)
	})
	t.Run("exactly at the limit in fragments", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithMaxMessageSize(limit))
		c := f.rawRoute(t, uploadRoute)
		writeFrames(t, c, wstest.Fragments(wstest.OpBinary, sized(t, limit), 100)...)
		writeFrames(t, c, wstest.Text(`#{"endSend":{}}`))
		expectEnd(t, expectClose(t, c, 1000), codes.OK)
	})

	over := []struct {
		name   string
		route  string
		frames func(t *testing.T) []wstest.Frame
	}{
		{"one byte over", uploadRoute, func(t *testing.T) []wstest.Frame {
			return []wstest.Frame{wstest.Binary(sized(t, limit+1))}
		}},
		{"one byte over in fragments", uploadRoute, func(t *testing.T) []wstest.Frame {
			return wstest.Fragments(wstest.OpBinary, sized(t, limit+1), 128)
		}},
		{"one byte over in JSON", uploadRoute + "+json", func(t *testing.T) []wstest.Frame {
			s := `{"chunk":"` + strings.Repeat("A", limit+1-len(`{"chunk":""}`)) + `"}`
			return []wstest.Frame{wstest.Text(s)}
		}},
		{"declares 2^62 bytes and sends more than the limit", uploadRoute, func(t *testing.T) []wstest.Frame {
			return []wstest.Frame{{Fin: true, Opcode: wstest.OpBinary, Mask: true, Payload: make([]byte, 2*limit), DeclaredLen: wstest.Length(1 << 62)}}
		}},
		{"a control frame over the limit", uploadRoute, func(t *testing.T) []wstest.Frame {
			return []wstest.Frame{wstest.Text(`#{"endSend":{}, "pad":"` + strings.Repeat("x", limit) + `"}`)}
		}},
	}
	for _, tt := range over {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, bridge.WithMaxMessageSize(limit))
			c := f.rawRoute(t, tt.route)
			// One good message first: the backend's handler is running.
			first := wstest.Binary(mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("ok")}))
			if strings.HasSuffix(tt.route, "+json") {
				first = wstest.Text(`{"chunk":"b2s="}`)
			}
			writeFrames(t, c, first)
			waitFor(t, func() bool { return f.backend.Active() == 1 })
			writeFrames(t, c, tt.frames(t)...)
			closed := expectClose(t, c, 1009)
			expectNoEnd(t, closed)
			f.backendCancelled(t, uploadMethod)
			f.stillServes(t)
		})
	}

	// A frame that declares a huge length and then stalls ties up no
	// memory, and the ping finds it: it can send no pong in the middle of
	// a frame.
	t.Run("declares 2^62 bytes and stalls", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithPing(100*time.Millisecond, 200*time.Millisecond))
		c := f.openBidi(t)
		writeFrames(t, c, wstest.Frame{Fin: true, Opcode: wstest.OpBinary, Mask: true, Payload: []byte{0x0a}, DeclaredLen: wstest.Length(1 << 62)})
		start := time.Now()
		f.backendCancelled(t, bidiMethod)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("stalled frame cancelled after %v; want about the ping interval and timeout", d)
		}
		expectClose(t, c, wstest.Abnormal)
	})

	// From the backend: RESOURCE_EXHAUSTED in-band, then 1009.
	t.Run("backend message over the limit", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithMaxMessageSize(limit))
		c := f.rawRoute(t, echoRoute)
		writeFrames(t, c, wstest.Binary(mustMarshal(t, &echov1.EchoRequest{ResponseSize: limit + 1})))
		expectEnd(t, expectClose(t, c, 1009), codes.ResourceExhausted)
	})
}

// TestHostileProtocol covers misuse of the bridge's own protocol: control
// frames out of order, frames of the wrong kind, messages that are not the
// method's. Each ends the RPC with INVALID_ARGUMENT, in-band and as 4003.
func TestHostileProtocol(t *testing.T) {
	t.Parallel()
	endSend := wstest.Text(`#{"endSend":{}}`)
	upload := wstest.Binary([]byte{0x0a, 0x01, 'x'})
	uploadJSON := wstest.Text(`{"chunk":"eA=="}`)
	ticker := wstest.Binary(mustMarshal(t, &echov1.TickerRequest{Interval: durationpb.New(time.Hour)}))
	validation := []bridge.Option{bridge.WithValidation(true)}
	tests := []struct {
		name   string
		route  string
		opts   []bridge.Option
		frames []wstest.Frame
		// method is the backend method whose stream must end; "" when the
		// backend must see no call.
		method string
		// ended: the backend may end the stream on its own before the
		// bridge reads the offending frame (it returns at end of send), so
		// the test checks that it ended, not that it was cancelled.
		ended bool
	}{
		{name: "end of send twice", route: uploadRoute, frames: []wstest.Frame{upload, endSend, endSend}, method: uploadMethod, ended: true},
		{name: "message after end of send", route: uploadRoute, frames: []wstest.Frame{upload, endSend, upload}, method: uploadMethod, ended: true},
		{name: "message after end of send, bidi", route: bidiRoute, frames: []wstest.Frame{wstest.Binary(bidiMessage(t, "a")), endSend, wstest.Binary(bidiMessage(t, "b"))}, method: bidiMethod, ended: true},
		{name: "second request of a server stream", route: tickerRoute, frames: []wstest.Frame{ticker, ticker}, method: tickerMethod},
		{name: "end of send after the request of a server stream", route: tickerRoute, frames: []wstest.Frame{ticker, endSend}, method: tickerMethod},
		{name: "end of send before the request of a unary call", route: echoRoute, frames: []wstest.Frame{endSend}},
		{name: "text that is not a control frame in the binary encoding", route: uploadRoute, frames: []wstest.Frame{upload, uploadJSON}, method: uploadMethod},
		{name: "empty text frame in the binary encoding", route: uploadRoute, frames: []wstest.Frame{upload, wstest.Text("")}, method: uploadMethod},
		{name: "binary frame in the JSON encoding", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, upload}, method: uploadMethod},
		{name: "malformed control frame", route: uploadRoute, frames: []wstest.Frame{upload, wstest.Text(`#{`)}, method: uploadMethod},
		{name: "control frame that is an array", route: uploadRoute, frames: []wstest.Frame{upload, wstest.Text(`#[]`)}, method: uploadMethod},
		{name: "control frame with a bad member", route: uploadRoute, frames: []wstest.Frame{upload, wstest.Text(`#{"endSend":"now"}`)}, method: uploadMethod},
		{name: "JSON of another message", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, wstest.Text(`{"message":"not an upload"}`)}, method: uploadMethod},
		{name: "JSON with a wrong type", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, wstest.Text(`{"chunk":5}`)}, method: uploadMethod},
		{name: "JSON array", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, wstest.Text(`[1,2]`)}, method: uploadMethod},
		{name: "JSON string", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, wstest.Text(`"x"`)}, method: uploadMethod},
		{name: "empty JSON message", route: uploadRoute + "+json", frames: []wstest.Frame{uploadJSON, wstest.Text("")}, method: uploadMethod},
		{name: "truncated message with validation", route: uploadRoute, opts: validation, frames: []wstest.Frame{upload, wstest.Binary([]byte{0x0a, 0x05, 'x'})}, method: uploadMethod},
		{name: "bad wire type with validation", route: uploadRoute, opts: validation, frames: []wstest.Frame{upload, wstest.Binary([]byte{0x0f})}, method: uploadMethod},
		{name: "string that is not UTF-8 with validation", route: bidiRoute, opts: validation, frames: []wstest.Frame{wstest.Binary(bidiMessage(t, "a")), wstest.Binary([]byte{0x0a, 0x01, 0xff})}, method: bidiMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.opts...)
			c := f.rawRoute(t, tt.route)
			writeFrames(t, c, tt.frames...)
			closed := expectClose(t, c, 4003)
			expectEnd(t, closed, codes.InvalidArgument)
			switch {
			case tt.method == "":
				if n := len(f.backend.Calls()); n != 0 {
					t.Fatalf("the backend saw %d calls; want none", n)
				}
			case tt.ended:
				f.backendEnded(t, tt.method)
			default:
				f.backendCancelled(t, tt.method)
			}
		})
	}

	// A control frame of a later version is skipped, not an error.
	t.Run("unknown control frame", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		c := f.rawRoute(t, uploadRoute)
		writeFrames(t, c, upload, wstest.Text(`#{"later":{"x":1}}`), wstest.Text(`#{}`), upload, endSend)
		closed := expectClose(t, c, 1000)
		expectEnd(t, closed, codes.OK)
		var res echov1.UploadResponse
		if err := proto.Unmarshal(closed.Messages[len(closed.Messages)-2].Payload, &res); err != nil || res.GetMessages() != 2 {
			t.Fatalf("upload answer %v, %v; want 2 messages", &res, err)
		}
	})
	// Without validation, the same bytes reach the backend, which refuses
	// them itself.
	t.Run("bad bytes without validation", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		c := f.rawRoute(t, uploadRoute)
		writeFrames(t, c, upload, wstest.Binary([]byte{0x0a, 0x05, 'x'}))
		closed := expectClose(t, c, 4013)
		expectEnd(t, closed, codes.Internal)
	})
}

// TestHostileHandshake sends odd upgrade requests: garbage bearer tokens,
// subprotocol lists of thousands of entries, broken upgrade headers.
func TestHostileHandshake(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	addr := f.server.Listener.Addr().String()
	junk := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("junk.%d", i)
		}
		return out
	}

	refusals := []struct {
		name         string
		subprotocols []string
		want         int
		echo         string // the subprotocol the bridge must echo
		reason       string
	}{
		{"token that is not base64url", []string{echoRoute, "base64url.bearer.grpcws.***"}, 4003, echoRoute,
			"grpcws: bearer token in the subprotocol list is not base64url"},
		{"token that is not printable", []string{echoRoute, "base64url.bearer.grpcws." + base64.RawURLEncoding.EncodeToString([]byte("s3cr3t\x00"))}, 4003, echoRoute,
			"grpcws: bearer token in the subprotocol list is empty or not printable ASCII"},
		{"empty token", []string{echoRoute, "base64url.bearer.grpcws."}, 4003, echoRoute,
			"grpcws: bearer token in the subprotocol list is empty or not printable ASCII"},
		{"500 unknown subprotocols", junk(500), 4012, "junk.0", `grpcws: no route named "junk.0"`},
		{"only a token", []string{"base64url.bearer.grpcws.dG9r"}, 4012, "", "grpcws: no subprotocol offered: offer one that names a method"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := f.raw(t, wstest.Request{Subprotocols: tt.subprotocols})
			if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); got != tt.echo {
				t.Errorf("echoed subprotocol %q; want %q", got, tt.echo)
			}
			closed := expectClose(t, c, tt.want)
			if closed.Reason != tt.reason {
				t.Errorf("reason %q; want %q", closed.Reason, tt.reason)
			}
			expectNoEnd(t, closed)
		})
	}

	// Thousands of entries before the route: the route is still found.
	t.Run("route after 5000 entries", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		c := f.raw(t, wstest.Request{Subprotocols: append(junk(5000), echoRoute)})
		if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); got != echoRoute {
			t.Fatalf("echoed subprotocol %q; want %q", got, echoRoute)
		}
		writeFrames(t, c, wstest.Binary(mustMarshal(t, &echov1.EchoRequest{Message: "found"})))
		expectEnd(t, expectClose(t, c, 1000), codes.OK)
		if d := time.Since(start); d > time.Second {
			t.Errorf("5000 subprotocols took %v", d)
		}
	})

	// Headers past net/http's limit (1 MB) are refused before the bridge.
	t.Run("a 2 MB subprotocol list", func(t *testing.T) {
		t.Parallel()
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_ = nc.SetDeadline(time.Now().Add(closeBound))
		c := wstest.NewConn(nc)
		go func() { _ = c.Write(wstest.Request{Host: addr, Subprotocols: junk(150_000)}.Bytes()) }()
		res, err := c.ReadResponse()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %s; want 431", res.Status)
		}
	})

	broken := []struct {
		name   string
		header http.Header
		method string
		want   int
	}{
		{"no key", http.Header{"Sec-Websocket-Key": {}}, "", http.StatusBadRequest},
		{"short key", http.Header{"Sec-Websocket-Key": {"c2hvcnQ="}}, "", http.StatusBadRequest},
		{"two keys", http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="}}, "", http.StatusBadRequest},
		{"version 8", http.Header{"Sec-Websocket-Version": {"8"}}, "", http.StatusBadRequest},
		{"no upgrade header", http.Header{"Upgrade": {}}, "", http.StatusUpgradeRequired},
		{"upgrade to something else", http.Header{"Upgrade": {"h2c"}}, "", http.StatusUpgradeRequired},
		{"POST", nil, "POST", http.StatusMethodNotAllowed},
	}
	for _, tt := range broken {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(closeBound))
			h := tt.header.Clone()
			if h == nil {
				h = http.Header{}
			}
			res, err := wstest.NewConn(nc).Upgrade(wstest.Request{Host: addr, Method: tt.method, Subprotocols: []string{echoRoute}, Header: h}.Bytes())
			if res == nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.want {
				t.Fatalf("status %s; want %d", res.Status, tt.want)
			}
		})
	}
	t.Cleanup(func() {
		if n := len(f.backend.Calls()); n != 1 {
			t.Errorf("the backend saw %d calls; want only the one after 5000 entries", n)
		}
	})
}

// TestHostilePings covers the ping groups: pings are answered with their
// payload at any point, a flood from a client that reads is served, a
// flood from a client that does not read is cut off, and a client that
// vanishes is found by the bridge's own pings.
func TestHostilePings(t *testing.T) {
	t.Parallel()
	t.Run("answered with the payload", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		c := f.openBidi(t)
		for _, p := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xff}, 125)} {
			writeFrames(t, c, wstest.Ping(p))
			fr, err := c.ReadFrame()
			if err != nil || fr.Opcode != wstest.OpPong || !bytes.Equal(fr.Payload, p) {
				t.Fatalf("after a %d-byte ping: %v, %v; want a pong with the payload", len(p), fr, err)
			}
		}
		writeFrames(t, c, wstest.Text(`#{"endSend":{}}`))
		expectEnd(t, expectClose(t, c, 1000), codes.OK)
	})

	t.Run("flood from a client that reads", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		c := f.openBidi(t)
		const n = 10_000
		pongs := make(chan int, 1)
		go func() {
			got := 0
			for got < n {
				fr, err := c.ReadFrame()
				if err != nil {
					break
				}
				if fr.Opcode == wstest.OpPong {
					got++
				}
			}
			pongs <- got
		}()
		ping := wstest.Ping(bytes.Repeat([]byte("p"), 125))
		for range n / 100 {
			batch := make([]wstest.Frame, 100)
			for i := range batch {
				batch[i] = ping
			}
			writeFrames(t, c, batch...)
		}
		if got := <-pongs; got != n {
			t.Fatalf("%d pongs; want %d", got, n)
		}
		writeFrames(t, c, wstest.Binary(bidiMessage(t, "after the flood")))
		readBinary(t, c)
		writeFrames(t, c, wstest.Text(`#{"endSend":{}}`))
		expectEnd(t, expectClose(t, c, 1000), codes.OK)
	})

	// A client that floods pings and reads no pongs is cut off either
	// way: when the pongs fill the socket, the bridge gives up on writing
	// the next one (the WebSocket layer bounds a control frame's write to
	// 5 s); when TCP throttles the flood first, the client fails the
	// bridge's own ping, which it never reads.
	t.Run("flood from a client that does not read", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithPing(time.Second, time.Second))
		c := f.openBidi(t)
		_ = c.SetDeadline(time.Now().Add(4 * closeBound))
		flooded := make(chan int, 1)
		go func() {
			batch := make([]wstest.Frame, 100)
			for i := range batch {
				batch[i] = wstest.Ping(bytes.Repeat([]byte("p"), 125))
			}
			sent := 0
			for c.WriteFrame(batch...) == nil {
				sent += len(batch)
			}
			flooded <- sent
		}()
		start := time.Now()
		f.backendCancelled(t, bidiMethod, 3*closeBound)
		t.Logf("flood cut off after %v", time.Since(start))
		c.Close() // ends the flood if the bridge's close has not
		t.Logf("%d pings sent", <-flooded)
		f.stillServes(t)
	})

	t.Run("client vanishes without a close", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithPing(100*time.Millisecond, 200*time.Millisecond))
		c := f.openBidi(t)
		// From now on the client neither reads nor writes: its pongs never
		// come.
		start := time.Now()
		f.backendCancelled(t, bidiMethod)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("vanished client found after %v; want about 300ms", d)
		}
		_ = c.SetDeadline(time.Now().Add(closeBound))
		for {
			fr, err := c.ReadFrame()
			if err != nil {
				break // the bridge dropped the connection
			}
			if fr.Opcode != wstest.OpPing {
				t.Fatalf("frame %v; want only pings", fr)
			}
		}
	})
}

// TestHostileSlowReader is a client that asks for a stream and reads
// none of it: the bridge buffers no more than the sockets hold, closes the
// connection after the write timeout, and cancels the backend stream.
func TestHostileSlowReader(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithWriteTimeout(300*time.Millisecond))
	c := f.rawRoute(t, tickerRoute)
	writeFrames(t, c, wstest.Binary(mustMarshal(t, &echov1.TickerRequest{Message: strings.Repeat("m", 1000)})))
	start := time.Now()
	f.backendCancelled(t, tickerMethod, 3*closeBound)
	t.Logf("slow reader cut off after %v", time.Since(start))

	// What the client can still read is what the sockets held; then the
	// connection ends without a close frame: the bridge had no way to send
	// one.
	_ = c.SetDeadline(time.Now().Add(4 * closeBound))
	closed, err := c.ReadUntilClose()
	if err != nil || closed.Code != wstest.Abnormal {
		t.Fatalf("after the cut: %d, %v; want the connection dropped", closed.Code, err)
	}
	n := 0
	for _, m := range closed.Messages {
		n += len(m.Payload)
	}
	t.Logf("the client could still read %d messages, %d KiB", len(closed.Messages), n>>10)
	if n > 32<<20 {
		t.Errorf("the client read %d bytes after the cut; want no more than the sockets hold", n)
	}
	if endOf(t, closed) != nil {
		t.Error("an end frame reached a client that read nothing")
	}
	f.stillServes(t)
}

// TestHostileCompressionBomb sends, with compression on, a frame of about
// 64 KiB that inflates to 64 MiB against a limit of 1 MiB: the bridge
// inflates no more than the limit, closes with 1009, cancels the backend
// stream, and its heap grows by a small multiple of the limit, not by the
// bomb.
//
// Not parallel: it measures the process's heap.
func TestHostileCompressionBomb(t *testing.T) {
	const limit = 1 << 20
	f := newFixture(t, bridge.WithCompression(true), bridge.WithMaxMessageSize(limit))
	ext := http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}}

	// Compression works for honest messages, both ways.
	c := f.raw(t, wstest.Request{Subprotocols: []string{bidiRoute}, Header: ext})
	if got := c.Response.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, "permessage-deflate") {
		t.Fatalf("extensions %q; want permessage-deflate", got)
	}
	honest := mustMarshal(t, &echov1.BidiRequest{Payload: bytes.Repeat([]byte("abc"), 10_000)})
	fr := wstest.Binary(wstest.Deflate(honest))
	fr.RSV1 = true
	writeFrames(t, c, fr)
	var answer []byte
	for answer == nil {
		op, p, compressed, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if op == wstest.OpBinary {
			if !compressed {
				t.Fatal("the answer came uncompressed")
			}
			if answer, err = wstest.Inflate(p, limit); err != nil {
				t.Fatal(err)
			}
		}
	}
	var res echov1.BidiResponse
	if err := proto.Unmarshal(answer, &res); err != nil || len(res.GetPayload()) != 30_000 {
		t.Fatalf("answer of %d bytes, %v; want the 30000-byte payload", len(res.GetPayload()), err)
	}
	writeFrames(t, c, wstest.Text(`#{"endSend":{}}`))
	expectClose(t, c, 1000)

	// The bomb.
	const inflated = 64 << 20
	bomb := wstest.Deflate(make([]byte, inflated))
	t.Logf("bomb: %d bytes inflating to %d", len(bomb), inflated)
	c = f.raw(t, wstest.Request{Subprotocols: []string{bidiRoute}, Header: ext})
	writeFrames(t, c, wstest.Binary(bidiMessage(t, "hello")))
	readBinary(t, c)
	fr = wstest.Binary(bomb)
	fr.RSV1 = true

	growth := peakHeapGrowth(func() {
		writeFrames(t, c, fr)
		expectNoEnd(t, expectClose(t, c, 1009))
		f.backendCancelled(t, bidiMethod)
	})
	t.Logf("peak heap growth during the bomb: %d KiB", growth>>10)
	// The message's buffer grows by doubling to twice the limit, and the
	// smaller ones it outgrew wait for the collector: about 3 times the
	// limit in all, against the bomb's 64.
	if bound := uint64(6 * limit); growth > bound {
		t.Errorf("heap grew by %d bytes during the bomb; want under %d (6 times the limit)", growth, bound)
	}
	f.stillServes(t)
}

// TestHostileCorruptCompression sends, with compression on, compressed
// frames whose payload does not inflate: a protocol error, 1002.
func TestHostileCorruptCompression(t *testing.T) {
	t.Parallel()
	ext := http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}}
	for _, tt := range []struct {
		name    string
		payload []byte
	}{
		{"reserved block type", []byte{0xff, 0xff}},
		{"stored block with a bad length", []byte{0x00, 0x05, 0x00, 0x00, 0x00}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, bridge.WithCompression(true))
			c := f.raw(t, wstest.Request{Subprotocols: []string{bidiRoute}, Header: ext})
			writeFrames(t, c, wstest.Binary(bidiMessage(t, "hello")))
			readBinary(t, c)
			fr := wstest.Binary(tt.payload)
			fr.RSV1 = true
			writeFrames(t, c, fr)
			expectNoEnd(t, expectClose(t, c, 1002))
			f.backendCancelled(t, bidiMethod)
		})
	}
}

// peakHeapGrowth runs fn and returns how far the heap grew above where it
// stood before, sampled every millisecond.
func peakHeapGrowth(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	fn()
	close(stop)
	wg.Wait()
	if p := peak.Load(); p > base {
		return p - base
	}
	return 0
}

// TestCrossSiteHijacking is a page on a foreign origin that opens a
// WebSocket to the bridge: the browser sends the user's cookies along. The
// bridge refuses it with 4007 before the backend sees anything, even with
// cookies forwarded as metadata.
func TestCrossSiteHijacking(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithMetadataCookies("session"), bridge.WithOriginPatterns("*.good.example"))
	tests := []struct {
		origin string
		want   int
	}{
		{"https://evil.example", 4007},
		{"null", 4007}, // a sandboxed frame or a file
		{"https://good.example.evil.example", 4007},
		{"https://evilgood.example", 4007},
		{"https://a.good.example@evil.example", 4007},
		{"https://evil.example/https://a.good.example", 4007},
		{"https://a.good.example", 1000}, // allowed by the pattern
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			c := f.raw(t, wstest.Request{
				Subprotocols: []string{echoRoute},
				Header:       http.Header{"Origin": {tt.origin}, "Cookie": {"session=victim-session-id"}},
			})
			if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); got != echoRoute {
				t.Errorf("echoed subprotocol %q; want %q (so that a browser reads the close code)", got, echoRoute)
			}
			if tt.want == 1000 {
				writeFrames(t, c, wstest.Binary(mustMarshal(t, &echov1.EchoRequest{})))
				expectClose(t, c, 1000)
				return
			}
			closed := expectClose(t, c, tt.want)
			expectNoEnd(t, closed)
			if want := fmt.Sprintf("grpcws: origin %q not allowed", tt.origin); closed.Reason != want {
				t.Errorf("reason %q; want %q", closed.Reason, want)
			}
		})
	}
	// Only the allowed origin reached the backend, with the cookie.
	calls := f.backend.Calls()
	if len(calls) != 1 {
		t.Fatalf("the backend saw %d calls; want 1 (the allowed origin)", len(calls))
	}
	if got := calls[0].MD.Get("cookie"); len(got) != 1 || got[0] != "session=victim-session-id" {
		t.Errorf("cookie metadata %q; want the session", got)
	}
}

// lockedBuffer is a bytes.Buffer for a logger that several connections
// write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestTokenNeverLeaks offers a bearer token in the subprotocol list on
// refused and accepted connections, with debug logging and the access log
// on: the token reaches the backend as authorization metadata and nowhere
// else, neither in the logs, the close reasons, the echoed subprotocol
// nor the frames.
func TestTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	const token = "tok-3f9c2a7e-secret"
	encoded := base64.RawURLEncoding.EncodeToString([]byte(token))
	offer := "base64url.bearer.grpcws." + encoded
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixture(t, bridge.WithLogger(logger), bridge.WithAccessLog(true))

	leaks := func(t *testing.T, where, s string) {
		t.Helper()
		for _, secret := range []string{token, encoded} {
			if strings.Contains(s, secret) {
				t.Errorf("the token is in %s", where)
			}
		}
	}
	check := func(t *testing.T, c *wstest.Conn, closed wstest.Closed) {
		t.Helper()
		var res bytes.Buffer
		_ = c.Response.Write(&res)
		leaks(t, "the upgrade response", res.String())
		leaks(t, "the close reason", closed.Reason)
		for _, m := range closed.Messages {
			leaks(t, "a frame", string(m.Payload))
		}
	}

	tests := []struct {
		name   string
		req    wstest.Request
		want   int
		called bool
	}{
		{"refused origin", wstest.Request{Subprotocols: []string{offer, echoRoute}, Header: http.Header{"Origin": {"https://evil.example"}}}, 4007, false},
		{"unknown route", wstest.Request{Subprotocols: []string{offer, "no.such.Route"}}, 4012, false},
		{"bad metadata", wstest.Request{Path: "/?grpc-status=1", Subprotocols: []string{offer, echoRoute}}, 4003, false},
		{"accepted", wstest.Request{Subprotocols: []string{offer, echoRoute}, Header: http.Header{"Grpc-Metadata-Authorization": {"Bearer from-a-header"}}}, 1000, true},
		{"backend failure", wstest.Request{Subprotocols: []string{echoRoute, offer}}, 4005, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.raw(t, tt.req)
			if tt.called {
				req := &echov1.EchoRequest{Message: "hi"}
				if tt.want != 1000 {
					req.Fail = &echov1.Failure{Code: int32(tt.want - 4000), Message: "failed"}
				}
				writeFrames(t, c, wstest.Binary(mustMarshal(t, req)))
			}
			check(t, c, expectClose(t, c, tt.want))
		})
	}

	calls := f.backend.Calls()
	if len(calls) != 2 {
		t.Fatalf("the backend saw %d calls; want 2", len(calls))
	}
	for _, call := range calls {
		if got := call.MD.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+token {
			t.Errorf("authorization %q; want the token alone, in place of the header's", got)
		}
		for k, vs := range call.MD {
			for _, v := range vs {
				if k != "authorization" && (strings.Contains(v, token) || strings.Contains(v, encoded)) {
					t.Errorf("the token is in metadata %q", k)
				}
			}
		}
	}
	// Let the last access lines be written.
	if err := f.backend.WaitIdle(testContext(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Count(logs.String(), `msg="grpcws: rpc"`) == 2 })
	if out := logs.String(); strings.Contains(out, token) || strings.Contains(out, encoded) {
		t.Errorf("the token is in the log:\n%s", out)
	}
	if n := strings.Count(logs.String(), "connection refused"); n != 3 {
		t.Errorf("%d refusals logged; want 3", n)
	}
}

// TestForeignBearerNeverEchoed offers a bearer token in another scheme's
// subprotocol form (Kubernetes' base64url.bearer.authorization.k8s.io.),
// with no route: a prefix no route may start with, so it is a credential,
// and must not be echoed, logged or put in the close reason.
func TestForeignBearerNeverEchoed(t *testing.T) {
	t.Parallel()
	const secret = "dG9rLXNlY3JldA"
	var logs lockedBuffer
	f := newFixture(t, bridge.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	c := f.raw(t, wstest.Request{Subprotocols: []string{"base64url.bearer.authorization.k8s.io." + secret, "no.such.Route"}})
	closed := expectClose(t, c, 4012)
	if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); strings.Contains(got, secret) {
		t.Errorf("echoed subprotocol %q holds the token", got)
	}
	if strings.Contains(closed.Reason, secret) {
		t.Errorf("close reason %q holds the token", closed.Reason)
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the log holds the token:\n%s", logs.String())
	}
}

// stalledConn is a backend whose streams take no message: SendMsg blocks
// until the stream's context is done, as it does when gRPC's flow control
// window is full because the backend is not reading.
type stalledConn struct{ ended chan error }

func (stalledConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("stalledConn: no unary calls")
}

func (c stalledConn) NewStream(ctx context.Context, _ *grpc.StreamDesc, _ string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	context.AfterFunc(ctx, func() { c.ended <- ctx.Err() })
	return stalledStream{ctx}, nil
}

type stalledStream struct{ ctx context.Context }

func (s stalledStream) Header() (metadata.MD, error) { return metadata.MD{}, nil }
func (s stalledStream) Trailer() metadata.MD         { return nil }
func (s stalledStream) CloseSend() error             { return nil }
func (s stalledStream) Context() context.Context     { return s.ctx }
func (s stalledStream) SendMsg(any) error            { <-s.ctx.Done(); return io.EOF }
func (s stalledStream) RecvMsg(any) error {
	<-s.ctx.Done()
	return status.FromContextError(s.ctx.Err()).Err()
}

// TestSlowBackendKeepsLiveClient is a backend that stops taking messages
// (a slow or stuck consumer) while the client stays alive and answers
// every ping. Backpressure (docs/protocol.md, section 4) holds the client's
// next message back; it must not get the client closed as if it had
// vanished. The RPC ends when the bridge shuts down, and the backend
// stream is cancelled then.
func TestSlowBackendKeepsLiveClient(t *testing.T) {
	t.Parallel()
	backend := stalledConn{ended: make(chan error, 1)}
	f := newFixtureServices(t, func(grpc.ClientConnInterface) []bridge.Service {
		return []bridge.Service{{Desc: compiledServices()[0], Conn: backend}}
	}, bridge.WithPing(100*time.Millisecond, 200*time.Millisecond))
	c := f.rawRoute(t, bidiRoute)
	writeFrames(t, c, wstest.Binary(bidiMessage(t, "taken by nobody")))
	// The client answers every ping for ten ping intervals.
	_ = c.SetDeadline(time.Now().Add(time.Second))
	op, _, _, err := c.ReadMessage() // the headers, then nothing but pings
	for err == nil && op == wstest.OpText {
		op, _, _, err = c.ReadMessage()
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a live client of a stalled backend: %v; want the connection still open after 1s", err)
	}
	_ = c.SetDeadline(time.Time{})
	// While upstream waits on the backend nothing reads from the client,
	// so the RPC ends by the bridge's own hand: here a shutdown.
	go f.handler.Close()
	expectClose(t, c, 1001)
	select {
	case err := <-backend.ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("backend stream ended with %v; want %v", err, context.Canceled)
		}
	case <-time.After(closeBound):
		t.Error("the backend stream was not cancelled")
	}
}
