package bridge_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/muxwire"
)

// FuzzMuxSession drives one multiplexed connection per input through a
// real Handler, over loopback TCP, against an in-memory backend. The input
// is a script of client frames (see muxScript): opens of every route,
// messages in chunks, half-closes, cancels, windows, pings, tokens and raw
// bytes, grouped into WebSocket messages, in any order. Then the client
// reads what comes for a moment and closes.
//
// Invariants: the handler never panics; every frame from the bridge parses;
// on each stream at most one HEADERS comes, before any DATA, and nothing
// after its END; if the bridge closes, it is with a code docs/protocol-mux.md
// documents; and once the client has gone, every backend stream ends, its
// context done.
func FuzzMuxSession(f *testing.F) {
	backend := newMemBackend()
	var panicked atomic.Value
	var services []bridge.Service
	for _, d := range compiledServices() {
		services = append(services, bridge.Service{Desc: d, Conn: backend})
	}
	h, err := bridge.NewHandler(services, bridge.WithLogger(slog.New(slog.DiscardHandler)),
		bridge.WithMaxMessageSize(fuzzLimit), bridge.WithMuxLimits(4, 20), bridge.WithMuxWindows(2048, 4096))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(h.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil && p != http.ErrAbortHandler {
				panicked.Store(fmt.Sprint(p))
			}
		}()
		h.ServeHTTP(w, r)
	}))
	f.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")

	f.Add([]byte{0x10, 0x20, 0x30, 0xff})
	f.Add([]byte{0x11, 0x21, 0x21, 0x21, 0x40, 0xff, 0x12, 0x22, 0x50})
	f.Add([]byte{0x13, 0x23, 0x23, 0x33, 0xff, 0x60, 0x70, 0x80})
	f.Add([]byte{0x10, 0x10, 0x91, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, script []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{bridge.Multiplexed}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Body != nil {
			res.Body.Close()
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		for _, msg := range muxScript(script) {
			if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
				break // the bridge closed: the reads below say why
			}
		}
		checkMuxSession(t, ctx, c, script)
		_ = c.Close(websocket.StatusNormalClosure, "")
		if err := backend.waitIdle(5 * time.Second); err != nil {
			t.Fatalf("%v\nscript: %x", err, script)
		}
		if p := panicked.Load(); p != nil {
			t.Fatalf("the handler panicked: %v\nscript: %x", p, script)
		}
	})
}

// checkMuxSession reads until the bridge is quiet for a moment, or closes,
// and checks every frame.
func checkMuxSession(t *testing.T, ctx context.Context, c *websocket.Conn, script []byte) {
	t.Helper()
	type state struct{ headers, data, ended bool }
	streams := map[uint32]*state{}
	for {
		rctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, b, err := c.Read(rctx)
		cancel()
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				switch ce.Code {
				case 1002, 1003, 1008, 1009:
				default:
					t.Fatalf("closed with %d %q: not a documented code\nscript: %x", ce.Code, ce.Reason, script)
				}
			}
			return // quiet, or closed
		}
		for len(b) > 0 {
			hdr, p, rest, err := muxwire.Next(b)
			if err != nil {
				t.Fatalf("a malformed frame from the bridge: %v\nscript: %x", err, script)
			}
			b = rest
			s := streams[hdr.StreamID]
			if s == nil {
				s = &state{}
				streams[hdr.StreamID] = s
			}
			if s.ended && hdr.Type != muxwire.TypeWindow {
				t.Fatalf("%v on stream %d after its END\nscript: %x", hdr.Type, hdr.StreamID, script)
			}
			switch hdr.Type {
			case muxwire.TypeSettings, muxwire.TypePing, muxwire.TypeGoAway:
			case muxwire.TypeWindow:
				if _, err := muxwire.ParseWindow(p); err != nil {
					t.Fatalf("WINDOW: %v\nscript: %x", err, script)
				}
			case muxwire.TypeHeaders:
				if s.headers || s.data {
					t.Fatalf("HEADERS on stream %d after HEADERS or DATA\nscript: %x", hdr.StreamID, script)
				}
				s.headers = true
				if _, err := muxwire.ParseHeaders(p); err != nil {
					t.Fatalf("HEADERS: %v\nscript: %x", err, script)
				}
			case muxwire.TypeData:
				s.data = true
			case muxwire.TypeEnd:
				s.ended = true
				if _, _, err := muxwire.ParseEnd(p); err != nil {
					t.Fatalf("END: %v\nscript: %x", err, script)
				}
			default:
				t.Fatalf("the bridge sent %v\nscript: %x", hdr.Type, script)
			}
		}
	}
}

// muxScript turns fuzz bytes into WebSocket messages of client frames.
// Each byte is an operation in its high nibble and an argument in its low
// one; 0xff ends the current message. The stream an operation names is one
// of the last four opened (ids 1, 3, 5, …), so that operations hit live
// streams as often as ended ones.
func muxScript(script []byte) [][]byte {
	routes := []string{echoRoute, tickerRoute, uploadRoute, bidiRoute, echoRoute + "+json", "no.such.Method"}
	var msgs [][]byte
	var cur []byte
	next := uint32(1)
	stream := func(arg byte) uint32 {
		if next == 1 {
			return 1
		}
		back := uint32(arg%4) * 2
		if back >= next {
			return 1
		}
		return next - 2 - back
	}
	for i := 0; i < len(script); i++ {
		op, arg := script[i]>>4, script[i]&0x0f
		switch op {
		case 0x1: // OPEN
			p, _ := muxwire.Open(routes[int(arg)%len(routes)], nil, []string{"", "1S", "1m", "x"}[arg/8%4])
			cur = muxwire.AppendFrame(cur, muxwire.TypeOpen, 0, next, p)
			next += 2
		case 0x2: // a whole small message: a valid EchoRequest/BidiRequest/… (field 1, a string)
			cur = muxwire.AppendFrame(cur, muxwire.TypeData, muxwire.FlagEndMessage, stream(arg), []byte{0x0a, 0x01, 'a' + arg})
		case 0x3: // a chunk, not the last, of arg*64 bytes
			cur = muxwire.AppendFrame(cur, muxwire.TypeData, 0, stream(arg), make([]byte, int(arg)*64))
		case 0x4:
			cur = muxwire.AppendFrame(cur, muxwire.TypeEndSend, 0, stream(arg), nil)
		case 0x5:
			cur = muxwire.AppendFrame(cur, muxwire.TypeCancel, 0, stream(arg), nil)
		case 0x6: // WINDOW on the connection or a stream
			id := uint32(0)
			if arg&1 == 1 {
				id = stream(arg >> 1)
			}
			cur = muxwire.AppendFrame(cur, muxwire.TypeWindow, 0, id, muxwire.Window(uint32(arg)*1024+1))
		case 0x7:
			cur = muxwire.AppendFrame(cur, muxwire.TypePing, arg&1, 0, make([]byte, muxwire.PingSize))
		case 0x8:
			cur = muxwire.AppendFrame(cur, muxwire.TypeToken, 0, 0, []byte{'t', 'a' + arg})
		case 0x9: // raw bytes: the next arg bytes of the script, as they are
			n := min(int(arg), len(script)-i-1)
			cur = append(cur, script[i+1:i+1+n]...)
			i += n
		case 0xa: // a frame for a stream never opened
			cur = muxwire.AppendFrame(cur, muxwire.TypeData, muxwire.FlagEndMessage, next+uint32(arg)*2, nil)
		case 0xf:
			if len(cur) > 0 {
				msgs = append(msgs, cur)
				cur = nil
			}
		}
	}
	if len(cur) > 0 {
		msgs = append(msgs, cur)
	}
	return msgs
}
