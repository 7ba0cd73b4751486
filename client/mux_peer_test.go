package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/client"
	"github.com/grpcws/grpcws/internal/muxwire"
)

// peer is a scripted bridge for the multiplexed protocol, on 127.0.0.1:
// it accepts sockets, sends its SETTINGS, and lets the test read the frames
// the client writes and write the bridge's.
type peer struct {
	url      string
	settings muxwire.Settings
	// first, if set, replaces the first message (the SETTINGS).
	first []byte
	// refuse, if set, closes each socket with this code after the
	// handshake, as the bridge refuses one.
	refuse websocket.StatusCode

	upgrades atomic.Int32
	socks    chan *peerSocket

	mu  sync.Mutex
	all []*peerSocket
}

func newPeer(t *testing.T, settings muxwire.Settings) *peer {
	t.Helper()
	p := &peer{settings: settings, socks: make(chan *peerSocket, 16)}
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	p.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	t.Cleanup(func() {
		p.mu.Lock()
		all := p.all
		p.mu.Unlock()
		for _, s := range all {
			s.ws.CloseNow()
			<-s.readDone
		}
		srv.Close()
	})
	return p
}

// client returns a multiplexed Conn to the peer, closed when the test ends.
func (p *peer) client(t *testing.T, opts ...client.Option) *client.Conn {
	t.Helper()
	conn, err := client.New(p.url, append([]client.Option{client.WithMultiplexing()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (p *peer) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{muxwire.Subprotocol}})
	if err != nil {
		return
	}
	p.upgrades.Add(1)
	ws.SetReadLimit(16 << 20)
	var offer []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for e := range strings.SplitSeq(v, ",") {
			offer = append(offer, strings.TrimSpace(e))
		}
	}
	s := &peerSocket{ws: ws, offer: offer, header: r.Header.Clone(), notify: make(chan struct{}, 1), readDone: make(chan struct{})}
	p.mu.Lock()
	p.all = append(p.all, s)
	p.mu.Unlock()
	go s.read()
	if p.refuse != 0 {
		ws.Close(p.refuse, "")
		return
	}
	first := p.first
	if first == nil {
		first = muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, p.settings.Append(nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageBinary, first); err != nil {
		return
	}
	p.socks <- s
}

// accept waits for the next socket.
func (p *peer) accept(t *testing.T) *peerSocket {
	t.Helper()
	select {
	case s := <-p.socks:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no socket within 5s")
		return nil
	}
}

// peerSocket is one socket of the peer.
type peerSocket struct {
	ws     *websocket.Conn
	offer  []string // Sec-WebSocket-Protocol of the handshake
	header http.Header

	notify   chan struct{}
	readDone chan struct{}
	readErr  error // set before readDone closes

	mu     sync.Mutex
	frames []peerFrame
	pos    int
}

// peerFrame is a frame the client wrote.
type peerFrame struct {
	muxwire.Header
	P      []byte
	Msg    int // which WebSocket message, counted from 0
	MsgLen int // that message's length
}

func (s *peerSocket) read() {
	defer close(s.readDone)
	for i := 0; ; i++ {
		typ, b, err := s.ws.Read(context.Background())
		if err != nil {
			s.readErr = err
			return
		}
		if typ != websocket.MessageBinary {
			s.readErr = errText
			return
		}
		var fs []peerFrame
		for rest := b; len(rest) > 0; {
			h, p, r, err := muxwire.Next(rest)
			if err != nil {
				s.readErr = err
				return
			}
			fs = append(fs, peerFrame{Header: h, P: p, Msg: i, MsgLen: len(b)})
			rest = r
		}
		s.mu.Lock()
		s.frames = append(s.frames, fs...)
		s.mu.Unlock()
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

var errText = errors.New("the client sent a text message")

// next returns the next frame the client wrote, waiting up to 5s.
func (s *peerSocket) next(t *testing.T) peerFrame {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.pos < len(s.frames) {
			f := s.frames[s.pos]
			s.pos++
			s.mu.Unlock()
			return f
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.readDone:
			s.mu.Lock()
			more := s.pos < len(s.frames)
			s.mu.Unlock()
			if !more {
				t.Fatalf("the socket closed (%v) while a frame was awaited", s.readErr)
			}
		case <-timer.C:
			t.Fatal("no frame from the client within 5s")
		}
	}
}

// expect returns the next frame, which must be of type typ on stream id.
func (s *peerSocket) expect(t *testing.T, typ muxwire.Type, id uint32) peerFrame {
	t.Helper()
	f := s.next(t)
	if f.Type != typ || f.StreamID != id {
		t.Fatalf("got %v on stream %d (flags %d, %d bytes); want %v on stream %d", f.Type, f.StreamID, f.Flags, len(f.P), typ, id)
	}
	return f
}

// none checks that the client writes nothing for d.
func (s *peerSocket) none(t *testing.T, d time.Duration) {
	t.Helper()
	time.Sleep(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos < len(s.frames) {
		f := s.frames[s.pos]
		t.Fatalf("got %v on stream %d (%d bytes); want nothing", f.Type, f.StreamID, len(f.P))
	}
}

// send writes frames in one WebSocket message.
func (s *peerSocket) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatalf("peer write: %v", err)
	}
}

// roundTrip sends frames and a PING in one message and waits for the
// ACK, which comes once the client has handled the frames.
func (s *peerSocket) roundTrip(t *testing.T, frames ...[]byte) {
	t.Helper()
	data := []byte("roundtri")
	s.send(t, append(frames, muxwire.AppendFrame(nil, muxwire.TypePing, 0, 0, data))...)
	if f := s.expect(t, muxwire.TypePing, 0); f.Flags != muxwire.FlagAck || string(f.P) != string(data) {
		t.Fatalf("PING flags %d %q; want the ACK", f.Flags, f.P)
	}
}

// closed waits for the socket to close and returns the client's close code.
func (s *peerSocket) closed(t *testing.T) (websocket.StatusCode, string) {
	t.Helper()
	select {
	case <-s.readDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the socket did not close within 5s")
	}
	var ce websocket.CloseError
	if errors.As(s.readErr, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, ""
}

// Frames the bridge sends.

func settingsFrame(s muxwire.Settings) []byte {
	return muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, s.Append(nil))
}

func headersFrame(t *testing.T, id uint32, md metadata.MD) []byte {
	t.Helper()
	p, err := muxwire.Headers(md)
	if err != nil {
		t.Fatal(err)
	}
	return muxwire.AppendFrame(nil, muxwire.TypeHeaders, 0, id, p)
}

func dataFrame(id uint32, last bool, p []byte) []byte {
	var flags uint8
	if last {
		flags = muxwire.FlagEndMessage
	}
	return muxwire.AppendFrame(nil, muxwire.TypeData, flags, id, p)
}

func endFrame(t *testing.T, id uint32, st *status.Status, trailer metadata.MD) []byte {
	t.Helper()
	p, err := muxwire.End(st, trailer)
	if err != nil {
		t.Fatal(err)
	}
	return muxwire.AppendFrame(nil, muxwire.TypeEnd, 0, id, p)
}

func windowFrame(id, n uint32) []byte {
	return muxwire.AppendFrame(nil, muxwire.TypeWindow, 0, id, muxwire.Window(n))
}
