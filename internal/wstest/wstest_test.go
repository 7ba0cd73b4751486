package wstest_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/grpcws/grpcws/internal/wstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// echoServer is a coder/websocket server that echoes every message, with
// the given compression mode, and reports the error that ended reading.
func echoServer(t *testing.T, mode websocket.CompressionMode) (addr string, ended <-chan error) {
	t.Helper()
	errc := make(chan error, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"echo"}, CompressionMode: mode})
		if err != nil {
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for {
			typ, b, err := c.Read(context.Background())
			if err != nil {
				errc <- err
				return
			}
			if err := c.Write(context.Background(), typ, b); err != nil {
				errc <- err
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), errc
}

func dial(t *testing.T, addr string, r wstest.Request) *wstest.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := wstest.Dial(ctx, addr, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEcho(t *testing.T) {
	t.Parallel()
	addr, _ := echoServer(t, websocket.CompressionDisabled)
	c := dial(t, addr, wstest.Request{Subprotocols: []string{"nope", "echo"}})
	if got := c.Response.Header.Get("Sec-WebSocket-Protocol"); got != "echo" {
		t.Errorf("subprotocol %q; want echo", got)
	}

	if err := c.WriteFrame(wstest.Text("héllo")); err != nil {
		t.Fatal(err)
	}
	op, p, _, err := c.ReadMessage()
	if err != nil || op != wstest.OpText || string(p) != "héllo" {
		t.Fatalf("ReadMessage = %#x %q %v; want text héllo", op, p, err)
	}

	// A fragmented message with pings between its fragments comes back
	// whole, after the pongs.
	msg := bytes.Repeat([]byte("0123456789"), 1000)
	var frames []wstest.Frame
	pings := 0
	for i, f := range wstest.Fragments(wstest.OpBinary, msg, 999) {
		if i > 0 {
			frames = append(frames, wstest.Ping([]byte{byte(pings)}))
			pings++
		}
		frames = append(frames, f)
	}
	if err := c.WriteFrame(frames...); err != nil {
		t.Fatal(err)
	}
	for i := range pings {
		f, err := c.ReadFrame()
		if err != nil || f.Opcode != wstest.OpPong || !bytes.Equal(f.Payload, []byte{byte(i)}) || f.Mask {
			t.Fatalf("frame %d: %v, %v; want an unmasked pong %d", i, f, err, i)
		}
	}
	op, p, _, err = c.ReadMessage()
	if err != nil || op != wstest.OpBinary || !bytes.Equal(p, msg) {
		t.Fatalf("ReadMessage = %#x, %d bytes, %v; want the %d-byte binary message", op, len(p), err, len(msg))
	}

	if err := c.WriteFrame(wstest.Close(4321, "bye")); err != nil {
		t.Fatal(err)
	}
	closed, err := c.ReadUntilClose()
	if err != nil || closed.Code != 4321 || closed.Reason != "bye" {
		t.Fatalf("ReadUntilClose = %+v, %v; want the close echoed", closed, err)
	}
}

// TestBrokenFrames checks that the frames the package builds break the
// rules they mean to break: coder/websocket refuses each.
func TestBrokenFrames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame wstest.Frame
		want  int
	}{
		{"rsv1 without compression", wstest.Frame{Fin: true, RSV1: true, Opcode: wstest.OpText, Mask: true}, 1002},
		{"rsv2", wstest.Frame{Fin: true, RSV2: true, Opcode: wstest.OpBinary, Mask: true}, 1002},
		{"rsv3", wstest.Frame{Fin: true, RSV3: true, Opcode: wstest.OpPing, Mask: true}, 1002},
		{"reserved data opcode", wstest.Frame{Fin: true, Opcode: 0x3, Mask: true}, 1002},
		{"reserved control opcode", wstest.Frame{Fin: true, Opcode: 0xB, Mask: true}, 1002},
		{"ping of 126 bytes", wstest.Ping(make([]byte, 126)), 1002},
		{"fragmented ping", wstest.Frame{Opcode: wstest.OpPing, Mask: true}, 1002},
		{"continuation first", wstest.Frame{Fin: true, Opcode: wstest.OpContinuation, Mask: true, Payload: []byte("x")}, 1002},
		{"close code 999", wstest.Close(999, ""), 1002},
		{"close code 1005", wstest.Close(1005, ""), 1002},
		{"one-byte close payload", wstest.Frame{Fin: true, Opcode: wstest.OpClose, Mask: true, Payload: []byte{3}}, 1002},
		{"over the read limit", wstest.Binary(make([]byte, 1<<20+1)), 1009},
		{"unmasked", wstest.Frame{Fin: true, Opcode: wstest.OpText, Payload: []byte("x")}, wstest.Abnormal},
		{"negative length", wstest.Frame{Fin: true, Opcode: wstest.OpBinary, Mask: true, DeclaredLen: wstest.Length(1 << 63)}, wstest.Abnormal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr, ended := echoServer(t, websocket.CompressionDisabled)
			c := dial(t, addr, wstest.Request{})
			if err := c.WriteFrame(tt.frame); err != nil {
				t.Fatal(err)
			}
			closed, err := c.ReadUntilClose()
			if err != nil || closed.Code != tt.want {
				t.Fatalf("closed %+v, %v; want %d", closed, err, tt.want)
			}
			if err := <-ended; err == nil {
				t.Error("the server read no error")
			}
		})
	}
}

func TestDribbledRequest(t *testing.T) {
	t.Parallel()
	addr, _ := echoServer(t, websocket.CompressionDisabled)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	c := wstest.NewConn(nc)
	for _, b := range (wstest.Request{Host: addr}).Bytes() {
		if err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := c.ReadResponse()
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("ReadResponse = %v, %v; want 101", res, err)
	}
}

func TestRequestHeaders(t *testing.T) {
	t.Parallel()
	req := wstest.Request{
		Host:         "h",
		Path:         "/p?q=1",
		Subprotocols: []string{"a", "b"},
		Header:       http.Header{"Origin": {"https://o.example"}, "Sec-Websocket-Version": {"12"}, "Sec-WebSocket-Key": {}},
	}
	got := string(req.Bytes())
	want := "GET /p?q=1 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nOrigin: https://o.example\r\n" +
		"Sec-Websocket-Protocol: a, b\r\nSec-Websocket-Version: 12\r\nUpgrade: websocket\r\n\r\n"
	if got != want {
		t.Errorf("request\n%q; want\n%q", got, want)
	}

	addr, _ := echoServer(t, websocket.CompressionDisabled)
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	res, err := wstest.NewConn(nc).Upgrade(req.Bytes())
	if err == nil || res.StatusCode != http.StatusBadRequest {
		t.Fatalf("Upgrade = %v, %v; want 400", res, err)
	}
}

func TestDeclaredLength(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n    uint64
		want []byte
	}{
		{5, []byte{0x82, 5}},
		{126, []byte{0x82, 126, 0, 126}},
		{65536, []byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		got := wstest.AppendFrame(nil, wstest.Frame{Fin: true, Opcode: wstest.OpBinary, DeclaredLen: &tt.n}, [4]byte{})
		if !bytes.Equal(got, tt.want) {
			t.Errorf("declared %d: % x; want % x", tt.n, got, tt.want)
		}
	}
	// Masking is the XOR of RFC 6455's example.
	got := wstest.AppendFrame(nil, wstest.Text("Hello"), [4]byte{0x37, 0xfa, 0x21, 0x3d})
	if want := []byte{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58}; !bytes.Equal(got, want) {
		t.Errorf("masked Hello: % x; want % x", got, want)
	}
}

func TestFragments(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		n, size int
		want    string
	}{
		{0, 10, "2F"},
		{10, 10, "2F"},
		{11, 10, "2 0F"},
		{25, 10, "2 0 0F"},
	} {
		var got []string
		total := 0
		for _, f := range wstest.Fragments(wstest.OpBinary, make([]byte, tt.n), tt.size) {
			s := string('0' + rune(f.Opcode))
			if f.Fin {
				s += "F"
			}
			got = append(got, s)
			total += len(f.Payload)
		}
		if strings.Join(got, " ") != tt.want || total != tt.n {
			t.Errorf("Fragments(%d, %d) = %v (%d bytes); want %s", tt.n, tt.size, got, total, tt.want)
		}
	}
}

func TestDeflate(t *testing.T) {
	t.Parallel()
	addr, _ := echoServer(t, websocket.CompressionNoContextTakeover)
	c := dial(t, addr, wstest.Request{Header: http.Header{"Sec-WebSocket-Extensions": {"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}}})
	if ext := c.Response.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
		t.Fatalf("extensions %q; want permessage-deflate", ext)
	}
	msg := bytes.Repeat([]byte("compress me "), 200)
	f := wstest.Binary(wstest.Deflate(msg))
	f.RSV1 = true
	if err := c.WriteFrame(f); err != nil {
		t.Fatal(err)
	}
	_, p, compressed, err := c.ReadMessage()
	if err != nil || !compressed {
		t.Fatalf("ReadMessage: compressed %v, %v; want a compressed message", compressed, err)
	}
	got, err := wstest.Inflate(p, 1<<20)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Inflate: %d bytes, %v; want the %d sent", len(got), err, len(msg))
	}
	if _, err := wstest.Inflate(p, int64(len(msg)-1)); err == nil {
		t.Error("Inflate past its limit succeeded")
	}
}

func TestDropped(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi")
		s.Close()
	}()
	c := dial(t, ln.Addr().String(), wstest.Request{})
	closed, err := c.ReadUntilClose()
	if err != nil || closed.Code != wstest.Abnormal || len(closed.Messages) != 1 || string(closed.Messages[0].Payload) != "hi" {
		t.Fatalf("ReadUntilClose = %+v, %v; want one message, then Abnormal", closed, err)
	}

	// A deadline is an error, not a close.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	hold := make(chan net.Conn, 1)
	go func() {
		s, err := ln2.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(s, "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		hold <- s
	}()
	c = dial(t, ln2.Addr().String(), wstest.Request{})
	defer (<-hold).Close()
	_ = c.SetDeadline(time.Now().Add(50 * time.Millisecond))
	var ne net.Error
	if _, err := c.ReadUntilClose(); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("ReadUntilClose past the deadline = %v; want a timeout", err)
	}
}
