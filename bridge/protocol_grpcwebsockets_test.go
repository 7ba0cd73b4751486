package bridge_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// The tests below speak grpc-websockets as @improbable-eng/grpc-web's
// WebsocketTransport does (docs/grpc-websockets.md); web/compat_test.go runs
// the real clients.

// gwsDial opens a grpc-websockets connection to method, "Service/Method" of
// examples.echo.v1, and sends the header block.
func gwsDial(t *testing.T, ctx context.Context, f *fixture, method string, header http.Header, lines ...string) *websocket.Conn {
	t.Helper()
	c := f.dial(t, ctx, "examples.echo.v1."+method, header, bridge.GRPCWebsockets)
	if got := c.Subprotocol(); got != bridge.GRPCWebsockets {
		t.Fatalf("subprotocol %q; want %q", got, bridge.GRPCWebsockets)
	}
	block := "content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n"
	for _, l := range lines {
		block += l + "\r\n"
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte(block)); err != nil {
		t.Fatal(err)
	}
	return c
}

// gwsSend sends one message as a data message: 0x00, then the gRPC-Web frame.
func gwsSend(t *testing.T, ctx context.Context, c *websocket.Conn, m proto.Message) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageBinary, append([]byte{0}, lpm(0, mustMarshal(t, m))...)); err != nil {
		t.Fatal(err)
	}
}

func gwsFinish(t *testing.T, ctx context.Context, c *websocket.Conn) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageBinary, []byte{1}); err != nil {
		t.Fatal(err)
	}
}

func lpm(flags byte, b []byte) []byte {
	out := make([]byte, 5, 5+len(b))
	out[0] = flags
	binary.BigEndian.PutUint32(out[1:], uint32(len(b)))
	return append(out, b...)
}

// gwsResult is what the bridge sent on a grpc-websockets connection.
type gwsResult struct {
	Meta     []map[string][]string // the metadata frames, in order
	Messages [][]byte
	Order    []string // "meta", "message"
	Close    websocket.StatusCode
}

func (r gwsResult) status() (codes.Code, string) {
	if len(r.Meta) == 0 {
		return codes.Code(999), ""
	}
	last := r.Meta[len(r.Meta)-1]
	if len(last["grpc-status"]) == 0 {
		return codes.Code(998), ""
	}
	n, _ := strconv.Atoi(last["grpc-status"][0])
	msg := ""
	if m := last["grpc-message"]; len(m) > 0 {
		msg, _ = url.PathUnescape(m[0])
	}
	return codes.Code(n), msg
}

// gwsReadAll reads frames, which may span WebSocket messages, until the
// bridge closes.
func gwsReadAll(t *testing.T, ctx context.Context, c *websocket.Conn) gwsResult {
	t.Helper()
	var r gwsResult
	var buf []byte
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			r.Close = websocket.CloseStatus(err)
			if len(buf) > 0 {
				t.Errorf("%d bytes of an incomplete frame before the close", len(buf))
			}
			return r
		}
		buf = append(buf, b...)
		for len(buf) >= 5 {
			n := int(binary.BigEndian.Uint32(buf[1:5]))
			if len(buf) < 5+n {
				break
			}
			payload := buf[5 : 5+n]
			if buf[0]&0x80 != 0 {
				md := map[string][]string{}
				for line := range strings.SplitSeq(string(payload), "\r\n") {
					if line == "" {
						continue
					}
					k, v, ok := strings.Cut(line, ": ")
					if !ok || k != strings.ToLower(k) {
						t.Errorf("bad header line %q", line)
					}
					md[k] = append(md[k], v)
				}
				r.Meta = append(r.Meta, md)
				r.Order = append(r.Order, "meta")
			} else {
				r.Messages = append(r.Messages, bytes.Clone(payload))
				r.Order = append(r.Order, "message")
			}
			buf = buf[5+n:]
		}
	}
}

func TestGRPCWebsocketsRPCKinds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)

	t.Run("unary", func(t *testing.T) {
		c := gwsDial(t, ctx, f, "EchoService/Echo", nil, "x-echo-from: go", "x-echo-bin: AAEC")
		gwsSend(t, ctx, c, &echov1.EchoRequest{Message: "grüß dich"})
		gwsFinish(t, ctx, c)
		r := gwsReadAll(t, ctx, c)
		if code, msg := r.status(); code != codes.OK || msg != "" {
			t.Errorf("status %v %q; want OK", code, msg)
		}
		if !slices.Equal(r.Order, []string{"meta", "message", "meta"}) {
			t.Errorf("frames %q; want headers, message, trailers", r.Order)
		}
		var res echov1.EchoResponse
		if err := proto.Unmarshal(r.Messages[0], &res); err != nil || res.GetMessage() != "grüß dich" {
			t.Errorf("response %v, %v", &res, err)
		}
		if got := r.Meta[0]["x-echo-from"]; !slices.Equal(got, []string{"go"}) {
			t.Errorf("header x-echo-from %q; want go", got)
		}
		if got := r.Meta[1]["x-echo-from"]; !slices.Equal(got, []string{"go"}) {
			t.Errorf("trailer x-echo-from %q; want go", got)
		}
		if got := r.Meta[1]["x-echo-bin"]; !slices.Equal(got, []string{"AAEC"}) {
			t.Errorf("trailer x-echo-bin %q; want AAEC (unpadded base64 of 00 01 02)", got)
		}
		if r.Close != websocket.StatusNormalClosure {
			t.Errorf("close %d; want 1000", r.Close)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		c := gwsDial(t, ctx, f, "EchoService/Ticker", nil)
		gwsSend(t, ctx, c, &echov1.TickerRequest{Message: "t", Count: 3})
		gwsFinish(t, ctx, c)
		r := gwsReadAll(t, ctx, c)
		if code, _ := r.status(); code != codes.OK || len(r.Messages) != 3 {
			t.Errorf("status %v, %d messages; want OK, 3", code, len(r.Messages))
		}
	})

	t.Run("client streaming, frames split across messages", func(t *testing.T) {
		c := gwsDial(t, ctx, f, "EchoService/Upload", nil)
		// Two frames in one message, then one frame cut in three.
		two := append(lpm(0, mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("ab")})),
			lpm(0, mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("cde")}))...)
		third := lpm(0, mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("fghi")}))
		for _, part := range [][]byte{two, third[:3], third[3:6], third[6:]} {
			if err := c.Write(ctx, websocket.MessageBinary, append([]byte{0}, part...)); err != nil {
				t.Fatal(err)
			}
		}
		gwsFinish(t, ctx, c)
		r := gwsReadAll(t, ctx, c)
		var res echov1.UploadResponse
		if len(r.Messages) != 1 || proto.Unmarshal(r.Messages[0], &res) != nil || res.GetMessages() != 3 || res.GetBytes() != 9 {
			t.Errorf("upload counted %v (%d responses); want 3 messages, 9 bytes", &res, len(r.Messages))
		}
	})

	t.Run("bidi", func(t *testing.T) {
		c := gwsDial(t, ctx, f, "EchoService/Bidi", nil)
		for _, m := range []string{"one", "two"} {
			gwsSend(t, ctx, c, &echov1.BidiRequest{Message: m})
		}
		gwsFinish(t, ctx, c)
		r := gwsReadAll(t, ctx, c)
		if code, _ := r.status(); code != codes.OK || len(r.Messages) != 2 {
			t.Errorf("status %v, %d messages; want OK, 2", code, len(r.Messages))
		}
	})
}

func TestGRPCWebsocketsErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithOriginPatterns("allowed.example"))
	ctx := testContext(t)

	cases := []struct {
		name    string
		path    string
		header  http.Header
		lines   []string
		send    func(*websocket.Conn)
		code    codes.Code
		message string
		frames  int // metadata frames
	}{
		{
			name: "backend status, non-ASCII message",
			path: "EchoService/Echo",
			send: func(c *websocket.Conn) {
				gwsSend(t, ctx, c, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 5, Message: "nicht gefunden: Straße ✗ 100%"}})
				gwsFinish(t, ctx, c)
			},
			code: codes.NotFound, message: "nicht gefunden: Straße ✗ 100%", frames: 1,
		},
		{
			name: "unknown method", path: "EchoService/Nope",
			code: codes.Unimplemented, message: `grpcws: no route for the path "/examples.echo.v1.EchoService/Nope": the URL path must end in /package.Service/Method`, frames: 1,
		},
		{
			name: "origin not allowed", path: "EchoService/Echo", header: http.Header{"Origin": {"https://evil.example"}},
			code: codes.PermissionDenied, message: `grpcws: origin "https://evil.example" not allowed`, frames: 1,
		},
		{
			name: "reserved metadata", path: "EchoService/Echo", lines: []string{"connection: x"},
			code: codes.InvalidArgument, message: `grpcws: metadata key "connection" is reserved`, frames: 1,
		},
		{
			name: "deadline from the header block", path: "EchoService/Echo", lines: []string{"grpc-timeout: 50m"},
			send: func(c *websocket.Conn) {
				gwsSend(t, ctx, c, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)})
				gwsFinish(t, ctx, c)
			},
			code: codes.DeadlineExceeded, frames: -1,
		},
		{
			name: "finish-send before the request", path: "EchoService/Echo",
			send: func(c *websocket.Conn) { gwsFinish(t, ctx, c) },
			code: codes.InvalidArgument, message: "grpcws: grpc-websockets: finish-send before the request: this method takes exactly one message", frames: -1,
		},
		{
			name: "two requests to a unary method", path: "EchoService/Echo",
			send: func(c *websocket.Conn) {
				gwsSend(t, ctx, c, &echov1.EchoRequest{Delay: durationpb.New(time.Minute)})
				gwsSend(t, ctx, c, &echov1.EchoRequest{})
			},
			code: codes.InvalidArgument, message: "grpcws: grpc-websockets: more than one request message: this method takes exactly one", frames: -1,
		},
		{
			name: "unknown control byte", path: "EchoService/Bidi",
			send: func(c *websocket.Conn) {
				if err := c.Write(ctx, websocket.MessageBinary, []byte{7, 0}); err != nil {
					t.Fatal(err)
				}
			},
			code: codes.InvalidArgument, message: "grpcws: grpc-websockets: unknown control byte 0x07", frames: -1,
		},
		{
			name: "compressed message", path: "EchoService/Bidi",
			send: func(c *websocket.Conn) {
				if err := c.Write(ctx, websocket.MessageBinary, append([]byte{0}, lpm(1, []byte{1, 2})...)); err != nil {
					t.Fatal(err)
				}
			},
			code: codes.Unimplemented, message: "grpcws: grpc-websockets: compressed messages are not supported", frames: -1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := gwsDial(t, ctx, f, tc.path, tc.header, tc.lines...)
			if tc.send != nil {
				tc.send(c)
			}
			r := gwsReadAll(t, ctx, c)
			code, msg := r.status()
			if code != tc.code || (tc.message != "" && msg != tc.message) {
				t.Errorf("status %v %q; want %v %q", code, msg, tc.code, tc.message)
			}
			if tc.frames > 0 && len(r.Meta) != tc.frames {
				t.Errorf("%d metadata frames; want %d", len(r.Meta), tc.frames)
			}
			if r.Close != websocket.StatusNormalClosure {
				t.Errorf("close %d; want 1000 after the trailers", r.Close)
			}
		})
	}
	for _, c := range f.backend.Calls() {
		if c.Method == "/examples.echo.v1.EchoService/Nope" {
			t.Errorf("the backend saw a call to an unknown method")
		}
	}
}

// Closing the socket cancels the backend stream; Close ends open RPCs with
// UNAVAILABLE in the trailers and 1001.
func TestGRPCWebsocketsCancelAndClose(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)

	t.Run("client closes", func(t *testing.T) {
		f := newFixture(t)
		c := gwsDial(t, ctx, f, "EchoService/Ticker", nil)
		gwsSend(t, ctx, c, &echov1.TickerRequest{Count: 0, Interval: durationpb.New(10 * time.Millisecond)})
		gwsFinish(t, ctx, c)
		for range 3 { // headers and two ticks
			if _, _, err := c.Read(ctx); err != nil {
				t.Fatal(err)
			}
		}
		c.Close(websocket.StatusNormalClosure, "")
		call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
		if err != nil {
			t.Fatal(err)
		}
		if status.Code(call.Err) != codes.Canceled {
			t.Errorf("backend ended with %v; want CANCELED", call.Err)
		}
	})

	t.Run("handler closes", func(t *testing.T) {
		f := newFixture(t)
		c := gwsDial(t, ctx, f, "EchoService/Bidi", nil)
		gwsSend(t, ctx, c, &echov1.BidiRequest{Message: "x"})
		if _, _, err := c.Read(ctx); err != nil { // headers
			t.Fatal(err)
		}
		done := make(chan gwsResult)
		go func() { done <- gwsReadAll(t, ctx, c) }()
		f.handler.Close()
		r := <-done
		if code, msg := r.status(); code != codes.Unavailable || msg != "grpcws: bridge shutting down" {
			t.Errorf("status %v %q; want UNAVAILABLE, shutting down", code, msg)
		}
		if r.Close != websocket.StatusGoingAway {
			t.Errorf("close %d; want 1001", r.Close)
		}
	})
}

// A grpc-websockets client that never sends its headers is closed; one
// whose message is over the limit gets RESOURCE_EXHAUSTED.
func TestGRPCWebsocketsLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithMaxMessageSize(1000))
	ctx := testContext(t)
	c := gwsDial(t, ctx, f, "EchoService/Bidi", nil)
	// Declares 2000 bytes: refused on the prefix, before the bytes arrive.
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0, 0, 0, 0, 0x07, 0xd0}); err != nil {
		t.Fatal(err)
	}
	r := gwsReadAll(t, ctx, c)
	if code, msg := r.status(); code != codes.ResourceExhausted {
		t.Errorf("status %v %q; want RESOURCE_EXHAUSTED", code, msg)
	}

	c = gwsDial(t, ctx, f, "EchoService/Bidi", nil)
	err := c.Write(ctx, websocket.MessageBinary, make([]byte, 2000))
	_, _, rerr := c.Read(ctx)
	if code := websocket.CloseStatus(rerr); code != websocket.StatusMessageTooBig {
		t.Errorf("a 2000-byte message: close %d (%v, %v); want 1009", code, err, rerr)
	}
}

func TestGRPCWebsocketsPrefix(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	// A bridge mounted below /api/ finds the method by the last two segments.
	c := gwsDial(t, ctx, f, "EchoService/Echo", nil)
	c.CloseNow()
	cc, _, err := websocket.Dial(ctx, f.url+"api/v1/examples.echo.v1.EchoService/Echo", &websocket.DialOptions{Subprotocols: []string{bridge.GRPCWebsockets}})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseNow()
	if err := cc.Write(ctx, websocket.MessageBinary, nil); err != nil {
		t.Fatal(err)
	}
	gwsSend(t, ctx, cc, &echov1.EchoRequest{Message: "prefixed"})
	gwsFinish(t, ctx, cc)
	r := gwsReadAll(t, ctx, cc)
	if code, msg := r.status(); code != codes.OK || len(r.Messages) != 1 {
		t.Errorf("status %v %q, %d messages; want OK and the echo", code, msg, len(r.Messages))
	}
}
