// Package muxtest is a raw grpcws.mux.v1 client for tests: it sends
// frames as a test writes them, and sorts what the bridge sends by stream,
// checking each frame with internal/muxwire. The Go client (package
// client) is the real one; this one lets a test see every frame and send
// any.
package muxtest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/muxwire"
)

// A Stream is what the bridge sent on one stream.
type Stream struct {
	Headers  metadata.MD // nil without a HEADERS frame
	Messages [][]byte    // whole messages
	Chunks   int         // DATA frames
	Bytes    int         // DATA payload bytes
	Status   *status.Status
	Trailers metadata.MD
	Ended    bool

	partial []byte
}

// A Conn is a multiplexed connection that a test drives frame by frame. A
// goroutine reads it; Stream, WaitEnd and the other accessors see what has
// arrived.
type Conn struct {
	WS       *websocket.Conn
	Settings muxwire.Settings // the bridge's

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced when something arrives
	streams  map[uint32]*Stream
	goAway   *uint32
	pings    [][]byte // PING ACK payloads
	windows  map[uint32]int64
	messages int // WebSocket messages read
	closeErr error
	closed   bool
}

// Dial opens a multiplexed connection with subprotocols after
// muxwire.Subprotocol, and waits for the bridge's SETTINGS. settings, when
// not nil, are sent as the client's.
func Dial(t testing.TB, ctx context.Context, url string, header http.Header, settings *muxwire.Settings, subprotocols ...string) *Conn {
	t.Helper()
	ws, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		Subprotocols: append([]string{muxwire.Subprotocol}, subprotocols...),
		HTTPHeader:   header,
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	t.Cleanup(func() { ws.CloseNow() })
	ws.SetReadLimit(64 << 20)
	if got := ws.Subprotocol(); got != muxwire.Subprotocol {
		t.Fatalf("subprotocol %q; want %q", got, muxwire.Subprotocol)
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("reading SETTINGS: %v", err)
	}
	h, p, rest, err := muxwire.Next(b)
	if err != nil || h.Type != muxwire.TypeSettings || h.StreamID != 0 {
		t.Fatalf("first frame %+v (%v); want SETTINGS on stream 0", h, err)
	}
	s, err := muxwire.ParseSettings(p)
	if err != nil {
		t.Fatal(err)
	}
	c := &Conn{WS: ws, Settings: s, changed: make(chan struct{}), streams: map[uint32]*Stream{}, windows: map[uint32]int64{}}
	if settings != nil {
		c.Send(t, ctx, muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, settings.Append(nil)))
	}
	if len(rest) > 0 {
		c.frames(t, rest)
	}
	go c.read(t)
	return c
}

// Send sends frames, each made with muxwire.AppendFrame or a helper below,
// in one WebSocket message.
func (c *Conn) Send(t testing.TB, ctx context.Context, frames ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	if err := c.WS.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Errorf("send: %v", err)
	}
}

// TrySend is Send that returns the error, for a connection the bridge may
// have closed.
func (c *Conn) TrySend(ctx context.Context, frames ...[]byte) error {
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	return c.WS.Write(ctx, websocket.MessageBinary, b)
}

func (c *Conn) read(t testing.TB) {
	for {
		_, b, err := c.WS.Read(context.Background())
		if err != nil {
			c.mu.Lock()
			c.closeErr, c.closed = err, true
			c.notify()
			c.mu.Unlock()
			return
		}
		c.frames(t, b)
	}
}

func (c *Conn) frames(t testing.TB, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.messages++
	defer c.notify()
	for len(b) > 0 {
		h, p, rest, err := muxwire.Next(b)
		if err != nil {
			t.Errorf("bridge sent a malformed frame: %v", err)
			return
		}
		b = rest
		if err := c.frame(h, p); err != nil {
			t.Errorf("bridge sent %v on stream %d: %v", h.Type, h.StreamID, err)
		}
	}
}

func (c *Conn) stream(id uint32) *Stream {
	s := c.streams[id]
	if s == nil {
		s = &Stream{}
		c.streams[id] = s
	}
	return s
}

func (c *Conn) frame(h muxwire.Header, p []byte) error {
	switch h.Type {
	case muxwire.TypeHeaders:
		s := c.stream(h.StreamID)
		if s.Headers != nil || len(s.Messages) > 0 || s.Ended {
			return errors.New("HEADERS after HEADERS, DATA or END")
		}
		md, err := muxwire.ParseHeaders(p)
		if err != nil {
			return err
		}
		s.Headers = md
	case muxwire.TypeData:
		s := c.stream(h.StreamID)
		if s.Ended {
			return errors.New("DATA after END")
		}
		s.Chunks++
		s.Bytes += len(p)
		s.partial = append(s.partial, p...)
		if h.Flags&muxwire.FlagEndMessage != 0 {
			s.Messages = append(s.Messages, s.partial)
			s.partial = nil
		}
	case muxwire.TypeEnd:
		s := c.stream(h.StreamID)
		if s.Ended {
			return errors.New("a second END")
		}
		st, tr, err := muxwire.ParseEnd(p)
		if err != nil {
			return err
		}
		s.Status, s.Trailers, s.Ended = st, tr, true
	case muxwire.TypeWindow:
		n, err := muxwire.ParseWindow(p)
		if err != nil {
			return err
		}
		c.windows[h.StreamID] += int64(n)
	case muxwire.TypePing:
		if h.Flags&muxwire.FlagAck != 0 {
			c.pings = append(c.pings, append([]byte(nil), p...))
		}
	case muxwire.TypeGoAway:
		last, _, err := muxwire.ParseGoAway(p)
		if err != nil {
			return err
		}
		c.goAway = &last
	default:
		return fmt.Errorf("a frame the bridge may not send")
	}
	return nil
}

// notify wakes the waiters; c.mu is held.
func (c *Conn) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// Wait waits until cond holds; it returns false when ctx ends first. cond
// reads the connection through its methods (Stream, Granted, …).
func (c *Conn) Wait(ctx context.Context, cond func(*Conn) bool) bool {
	for {
		c.mu.Lock()
		ch := c.changed
		c.mu.Unlock()
		if cond(c) {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// WaitEnd waits for the stream's END and returns the stream.
func (c *Conn) WaitEnd(t testing.TB, ctx context.Context, id uint32) Stream {
	t.Helper()
	if !c.Wait(ctx, func(c *Conn) bool { return c.Stream(id).Ended }) {
		t.Fatalf("stream %d: no END (%v)", id, c.CloseErr())
	}
	return c.Stream(id)
}

// Stream returns a copy of what arrived on a stream so far.
func (c *Conn) Stream(id uint32) Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.streams[id]; s != nil {
		return *s
	}
	return Stream{}
}

// Granted returns the credit the bridge granted on a stream (0: the
// connection) so far.
func (c *Conn) Granted(id uint32) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.windows[id]
}

// GoAway returns the last stream id of the bridge's GOAWAY, if one came.
func (c *Conn) GoAway() (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goAway == nil {
		return 0, false
	}
	return *c.goAway, true
}

// Pongs returns the payloads of the PING ACKs that came.
func (c *Conn) Pongs() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.pings...)
}

// Messages returns the number of WebSocket messages read.
func (c *Conn) Messages() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.messages
}

// CloseErr returns the error that ended reading, nil while open.
func (c *Conn) CloseErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// WaitClose waits for the connection to close and returns its close code
// and reason (code -1 when it dropped without a close frame).
func (c *Conn) WaitClose(t testing.TB, ctx context.Context) (websocket.StatusCode, string) {
	t.Helper()
	if !c.Wait(ctx, func(c *Conn) bool { return c.CloseErr() != nil }) {
		t.Fatal("the connection did not close")
	}
	err := c.CloseErr()
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

// Open returns an OPEN frame.
func Open(t testing.TB, id uint32, route string, md metadata.MD, timeout string) []byte {
	t.Helper()
	p, err := muxwire.Open(route, md, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return muxwire.AppendFrame(nil, muxwire.TypeOpen, 0, id, p)
}

// Data returns a DATA frame; end marks the message's last chunk.
func Data(id uint32, p []byte, end bool) []byte {
	flags := uint8(0)
	if end {
		flags = muxwire.FlagEndMessage
	}
	return muxwire.AppendFrame(nil, muxwire.TypeData, flags, id, p)
}

// Message returns the DATA frames of a whole message, in chunks of at most
// size bytes.
func Message(id uint32, p []byte, size int) []byte {
	var b []byte
	for first := true; first || len(p) > 0; first = false {
		n := min(len(p), size)
		b = append(b, Data(id, p[:n], n == len(p))...)
		p = p[n:]
	}
	return b
}

// EndSend returns an END_SEND frame.
func EndSend(id uint32) []byte { return muxwire.AppendFrame(nil, muxwire.TypeEndSend, 0, id, nil) }

// Cancel returns a CANCEL frame.
func Cancel(id uint32) []byte { return muxwire.AppendFrame(nil, muxwire.TypeCancel, 0, id, nil) }

// Window returns a WINDOW frame.
func Window(id uint32, n uint32) []byte {
	return muxwire.AppendFrame(nil, muxwire.TypeWindow, 0, id, muxwire.Window(n))
}

// Token returns a TOKEN frame.
func Token(token string) []byte {
	return muxwire.AppendFrame(nil, muxwire.TypeToken, 0, 0, []byte(token))
}

// Ping returns a PING frame.
func Ping(p [muxwire.PingSize]byte) []byte {
	return muxwire.AppendFrame(nil, muxwire.TypePing, 0, 0, p[:])
}
