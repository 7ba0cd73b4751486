package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// The multiplexed protocol, grpcws.mux.v1 (docs/protocol-mux.md): the
// client's side of one WebSocket that carries many streams.
//
// Who owns what, per socket: run owns the WebSocket. It starts write, the
// only goroutine that writes, runs read, the only one that reads, and
// returns when both have. Everything else (SendMsg, RecvMsg, CloseSend, a
// stream's context, SetToken) changes state under muxConn.mu and wakes the
// writer. The first error wins: fail records it, ends every stream with it,
// and the writer closes the socket.

var (
	// errRetry is open's answer when the socket takes no new stream: it is
	// draining, failed or out of stream ids, or (with a channel to wait
	// on) at the bridge's MAX_CONCURRENT_STREAMS.
	errRetry = errors.New("grpcws: the socket takes no new stream")
	// errDrained ends a socket that the bridge drained, or that ran out of
	// stream ids, once its last stream has ended. No stream sees it.
	errDrained = status.Error(codes.Unavailable, "grpcws: the connection was drained")
	// errWindow is the error of a bridge that sent more than it was granted.
	errWindow = errors.New("grpcws: flow control: window exceeded")
)

// muxDial is a handshake under way. Other RPCs wait for it rather than
// open sockets of their own.
type muxDial struct {
	done  chan struct{}
	err   error
	retry bool // the handshake failed with its caller's context: others try again
}

// socket returns the socket new streams open on, connecting if there is
// none or if the current one takes no new streams. The first RPC to find
// none connects, with its own context; the others wait for it.
func (c *Conn) socket(ctx context.Context) (*muxConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errConnClosed
		}
		if m := c.mux; m != nil && m.usable() {
			c.mu.Unlock()
			return m, nil
		}
		if d := c.dialing; d != nil {
			c.mu.Unlock()
			select {
			case <-d.done:
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
			if d.err != nil && !d.retry {
				return nil, d.err
			}
			continue
		}
		d := &muxDial{done: make(chan struct{})}
		c.dialing = d
		token := c.token
		c.mu.Unlock()

		m, wctx, first, err := c.dialMux(ctx, token)
		c.mu.Lock()
		c.dialing = nil
		if err == nil && c.closed {
			m.stop()
			m.ws.CloseNow()
			err = errConnClosed
		}
		if err != nil {
			d.err, d.retry = err, ctx.Err() != nil
			close(d.done)
			c.mu.Unlock()
			return nil, err
		}
		if c.token != token {
			// SetToken ran during the handshake: the TOKEN frame goes
			// ahead of every OPEN.
			m.sendToken(c.token)
		}
		c.mux = m
		c.muxes[m] = struct{}{}
		go m.run(wctx, first)
		close(d.done)
		c.mu.Unlock()
		return m, nil
	}
}

// dialMux opens a multiplexed socket and reads the bridge's SETTINGS. It
// returns the socket, the context of its writes, and what followed the
// SETTINGS in the bridge's first message.
func (c *Conn) dialMux(ctx context.Context, token string) (_ *muxConn, _ context.Context, rest []byte, _ error) {
	ws, res, err := websocket.Dial(ctx, c.target, &websocket.DialOptions{
		HTTPClient:      c.httpClient,
		HTTPHeader:      c.header.Clone(),
		Subprotocols:    offer(muxwire.Subprotocol, token),
		CompressionMode: websocket.CompressionDisabled,
	})
	if res != nil && res.Body != nil {
		res.Body.Close()
	}
	if err != nil {
		return nil, nil, nil, status.Errorf(codes.Unavailable, "grpcws: %v", err)
	}
	if got := ws.Subprotocol(); got != muxwire.Subprotocol {
		ws.CloseNow()
		return nil, nil, nil, status.Errorf(codes.Unavailable, "grpcws: the server selected subprotocol %q, not %q: is it a grpcws bridge that serves the multiplexed protocol?", got, muxwire.Subprotocol)
	}
	ws.SetReadLimit(int64(c.muxLocal.MaxWSMessage))
	typ, b, err := ws.Read(ctx)
	if err != nil {
		// A refused handshake completes and closes with v1's close code.
		ws.CloseNow()
		if ctx.Err() != nil {
			return nil, nil, nil, status.FromContextError(ctx.Err()).Err()
		}
		return nil, nil, nil, readError(err, c.muxLocal)
	}
	protocolErr := func(code websocket.StatusCode, msg string) (*muxConn, context.Context, []byte, error) {
		ws.Close(code, v1wire.CloseReason(msg))
		return nil, nil, nil, status.Error(codes.Internal, msg)
	}
	if typ != websocket.MessageBinary {
		return protocolErr(muxwire.CloseUnsupportedData, "grpcws: the bridge sent a text message")
	}
	h, p, rest, err := muxwire.Next(b)
	if err != nil {
		return protocolErr(muxwire.CloseProtocolError, err.Error())
	}
	if h.Type != muxwire.TypeSettings || h.StreamID != 0 {
		return protocolErr(muxwire.CloseProtocolError, fmt.Sprintf("grpcws: the bridge's first frame is %v on stream %d, not SETTINGS", h.Type, h.StreamID))
	}
	peer, err := muxwire.ParseSettings(p)
	if err != nil {
		return protocolErr(muxwire.CloseProtocolError, err.Error())
	}
	m, wctx := newMuxConn(c, ws, peer)
	return m, wctx, rest, nil
}

// forget drops a socket that has closed.
func (c *Conn) forget(m *muxConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.muxes, m)
	if c.mux == m {
		c.mux = nil
	}
}

// muxConn is one multiplexed WebSocket.
type muxConn struct {
	conn  *Conn
	ws    *websocket.Conn
	peer  muxwire.Settings   // the bridge's: what it accepts
	local muxwire.Settings   // ours: what we accept
	wake  chan struct{}      // one token: the writer has something to look at
	done  chan struct{}      // closed by fail
	stop  context.CancelFunc // ends the writes' context

	mu          sync.Mutex
	err         error // the first error, which ended the socket
	closeCode   websocket.StatusCode
	closeReason string
	stopTimer   *time.Timer           // runs stop, once the socket has failed
	streams     map[uint32]*muxStream // open streams by id
	lastID      uint32                // the highest id opened
	draining    bool                  // GOAWAY, a TOKEN too large, or no ids left: no new streams
	slotFreed   chan struct{}         // closed when a stream ends, for opens over MAX_CONCURRENT_STREAMS

	// Writing: control frames go first, then DATA of the streams in
	// sendq, one chunk each in turn.
	ctrl       []byte
	sendq      []*muxStream
	sendWindow int64 // the connection's window for our DATA

	// Reading.
	recvWindow  int64 // what the bridge may still send on the connection
	recvUnacked int64 // bytes taken off the streams' queues, not yet granted back
}

func newMuxConn(c *Conn, ws *websocket.Conn, peer muxwire.Settings) (*muxConn, context.Context) {
	wctx, stop := context.WithCancel(context.Background())
	m := &muxConn{
		conn:       c,
		ws:         ws,
		peer:       peer,
		local:      c.muxLocal,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		stop:       stop,
		streams:    map[uint32]*muxStream{},
		lastID:     c.firstID - 1,
		sendWindow: int64(peer.ConnWindow),
		recvWindow: int64(c.muxLocal.ConnWindow),
	}
	if m.local != muxwire.DefaultSettings() {
		// Before the first OPEN, as the protocol requires.
		m.queue(muxwire.TypeSettings, 0, 0, m.local.Append(nil))
	}
	return m, wctx
}

// run owns the socket: it runs the two pumps and returns when both have.
func (m *muxConn) run(wctx context.Context, first []byte) {
	defer m.conn.forget(m)
	var wg sync.WaitGroup
	wg.Go(func() { m.write(wctx) })
	m.read(first)
	wg.Wait()
	m.ws.CloseNow()
	m.mu.Lock()
	m.stopTimer.Stop() // read returns only after the socket has failed
	m.mu.Unlock()
	m.stop()
}

// usable reports whether the socket takes new streams.
func (m *muxConn) usable() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.usableLocked()
}

func (m *muxConn) usableLocked() bool {
	return m.err == nil && !m.draining && m.lastID < muxwire.MaxStreamID
}

// fail ends the socket: the first error wins, every stream ends with it,
// and the writer closes the WebSocket with code and reason (0: at once,
// without a close handshake).
func (m *muxConn) fail(err error, code websocket.StatusCode, reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failLocked(err, code, reason)
}

func (m *muxConn) failLocked(err error, code websocket.StatusCode, reason string) {
	if m.err != nil {
		return
	}
	m.err, m.closeCode, m.closeReason = err, code, reason
	for _, s := range m.streams {
		m.endStream(s, err, nil, endByConn)
	}
	m.freeSlot()
	close(m.done)
	// A write in progress when the socket fails is given closeTimeout to
	// finish, so that the close handshake can follow it; then its context
	// ends, which closes the socket, since a bridge that takes nothing
	// would hold the writer for ever.
	m.stopTimer = time.AfterFunc(closeTimeout, m.stop)
	m.ctrl, m.sendq = nil, nil
}

// queue adds a control frame for the writer.
func (m *muxConn) queue(typ muxwire.Type, flags uint8, id uint32, payload []byte) {
	if m.err != nil {
		return
	}
	m.ctrl = muxwire.AppendFrame(m.ctrl, typ, flags, id, payload)
	m.wakeWriter()
}

func (m *muxConn) wakeWriter() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// freeSlot wakes the opens waiting for a stream to end.
func (m *muxConn) freeSlot() {
	if m.slotFreed != nil {
		close(m.slotFreed)
		m.slotFreed = nil
	}
}

// open starts stream s with the OPEN payload. It returns errRetry when the
// socket takes no new stream, with a channel to wait on when the bridge's
// MAX_CONCURRENT_STREAMS is reached.
func (m *muxConn) open(s *muxStream, payload []byte) (<-chan struct{}, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.usableLocked() {
		return nil, errRetry
	}
	if int64(len(m.streams)) >= int64(m.peer.MaxStreams) {
		if m.slotFreed == nil {
			m.slotFreed = make(chan struct{})
		}
		return m.slotFreed, errRetry
	}
	if n := muxwire.HeaderSize + len(payload); n > int(m.peer.MaxWSMessage) {
		return nil, status.Errorf(codes.ResourceExhausted, "grpcws: the stream's OPEN frame takes %d bytes, over the bridge's MAX_WS_MESSAGE of %d", n, m.peer.MaxWSMessage)
	}
	m.lastID++
	if m.lastID == muxwire.MaxStreamID {
		m.draining = true // the next stream goes to a new socket
	}
	s.m, s.id = m, m.lastID
	s.sendWindow = int64(m.peer.StreamWindow)
	s.recvWindow = int64(m.local.StreamWindow)
	m.streams[s.id] = s
	m.queue(muxwire.TypeOpen, 0, s.id, payload)
	return nil, nil
}

// sendToken sends a TOKEN frame, for the streams opened after it. A token
// too large for one WebSocket message cannot go in a frame: the socket
// then takes no new streams, and the next one carries the token in its
// handshake.
func (m *muxConn) sendToken(token string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil || m.draining {
		return
	}
	if muxwire.HeaderSize+len(token) > int(m.peer.MaxWSMessage) {
		m.draining = true
		m.closeIfDrained()
		return
	}
	m.queue(muxwire.TypeToken, 0, 0, []byte(token))
}

// closeIfDrained closes a socket that takes no new streams once it has
// none.
func (m *muxConn) closeIfDrained() {
	if m.err == nil && !m.usableLocked() && len(m.streams) == 0 {
		m.failLocked(errDrained, websocket.StatusNormalClosure, "")
	}
}

// How a stream ends.
type endHow int

const (
	endByBridge endHow = iota // END: the stream is closed on both sides
	endByClient               // the client ends it: CANCEL, and what is queued is dropped
	endByConn                 // the socket ended
)

// endStream records a stream's outcome, once. What is queued stays for
// RecvMsg unless the client ended the stream.
func (m *muxConn) endStream(s *muxStream, err error, trailer metadata.MD, how endHow) {
	if s.finished {
		return
	}
	s.finished = true
	delete(m.streams, s.id)
	m.freeSlot()
	if o := s.out; o != nil {
		s.out = nil
		o.err = io.EOF
		close(o.done)
	}
	if how == endByClient {
		m.queue(muxwire.TypeCancel, 0, s.id, nil)
	}
	if how == endByClient || s.ctx.Err() != nil {
		// The client ended the stream (its context, Close): what is
		// queued will not be received.
		m.drop(s)
	}
	s.call.end(err, trailer)
	signal(s.recvWake)
	m.release(s)
	m.closeIfDrained()
}

// release cancels the context of a stream that has ended and whose
// messages have all been taken, which ends its AfterFunc, onDone.
func (m *muxConn) release(s *muxStream) {
	if s.finished && len(s.chunks) == 0 {
		s.cancel()
	}
}

// drop discards what a stream has queued, and gives it back to the
// bridge as connection credit.
func (m *muxConn) drop(s *muxStream) {
	var n int64
	for _, c := range s.chunks {
		n += int64(len(c.b))
	}
	s.chunks = nil
	m.connConsumed(n)
}

// consumed grants credit for n bytes taken off s's queue: stream credit
// and connection credit, each once half its window has been consumed, or
// sooner if the bridge has less left to send than what it could be given
// back, so that it never waits for bytes already consumed.
func (m *muxConn) consumed(s *muxStream, n int64) {
	if n == 0 {
		return
	}
	if !s.finished {
		s.unacked += n
		m.grantStream(s, int64(m.local.StreamWindow)/2)
	}
	m.connConsumed(n)
}

func (m *muxConn) connConsumed(n int64) {
	m.recvUnacked += n
	m.grantConn(int64(m.local.ConnWindow) / 2)
}

// grantStream sends s a WINDOW for what it consumed, if that reaches
// threshold or what the bridge has left to send on it.
func (m *muxConn) grantStream(s *muxStream, threshold int64) {
	if s.unacked > 0 && (s.unacked >= threshold || s.unacked >= s.recvWindow) {
		m.queue(muxwire.TypeWindow, 0, s.id, muxwire.Window(uint32(s.unacked)))
		s.recvWindow += s.unacked
		s.unacked = 0
	}
}

func (m *muxConn) grantConn(threshold int64) {
	if m.recvUnacked > 0 && (m.recvUnacked >= threshold || m.recvUnacked >= m.recvWindow) {
		m.queue(muxwire.TypeWindow, 0, 0, muxwire.Window(uint32(m.recvUnacked)))
		m.recvWindow += m.recvUnacked
		m.recvUnacked = 0
	}
}

// read is the only reader of the socket. It returns when the socket fails
// or closes.
func (m *muxConn) read(b []byte) {
	for {
		m.mu.Lock()
		if m.err == nil {
			if err := m.handle(b); err != nil {
				code := websocket.StatusCode(muxwire.CloseProtocolError)
				m.failLocked(status.Error(codes.Internal, err.Error()), code, v1wire.CloseReason(err.Error()))
				m.mu.Unlock()
				return
			}
		}
		m.mu.Unlock()
		// After a failure, reading goes on until the close handshake ends.
		typ, next, err := m.ws.Read(context.Background())
		if err != nil {
			m.fail(readError(err, m.local), 0, "")
			return
		}
		if typ != websocket.MessageBinary {
			m.fail(status.Error(codes.Internal, "grpcws: the bridge sent a text message"), muxwire.CloseUnsupportedData, "grpcws: text message")
			return
		}
		b = next
	}
}

// readError maps the error that ended reading a socket.
func readError(err error, local muxwire.Settings) error {
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return status.Errorf(codes.Internal, "grpcws: the bridge sent a WebSocket message over MAX_WS_MESSAGE (%d bytes)", local.MaxWSMessage)
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return v1wire.CloseStatus(ce.Code, ce.Reason).Err()
	}
	return status.Errorf(codes.Unavailable, "grpcws: connection lost: %v", err)
}

// handle dispatches the frames of one WebSocket message. An error breaks
// the protocol: the socket closes with 1002 and the error as the reason.
func (m *muxConn) handle(b []byte) error {
	for len(b) > 0 {
		h, p, rest, err := muxwire.Next(b)
		if err != nil {
			return err
		}
		b = rest
		if err := m.frame(h, p); err != nil {
			return err
		}
	}
	return nil
}

func (m *muxConn) frame(h muxwire.Header, p []byte) error {
	switch h.Type {
	case muxwire.TypeData, muxwire.TypeHeaders, muxwire.TypeEnd:
		if h.StreamID == 0 {
			return fmt.Errorf("grpcws: %v on stream 0", h.Type)
		}
		if h.StreamID > m.lastID {
			return fmt.Errorf("grpcws: stream %d never opened", h.StreamID)
		}
		s := m.streams[h.StreamID] // nil once ended: frames that crossed a CANCEL
		switch h.Type {
		case muxwire.TypeData:
			return m.data(s, h, p)
		case muxwire.TypeHeaders:
			md, err := muxwire.ParseHeaders(p)
			if err != nil {
				return err
			}
			if s != nil {
				s.setHeader(md) // a second HEADERS: keep the first, as v1 does
			}
		default:
			st, trailer, err := muxwire.ParseEnd(p)
			if err != nil {
				return err
			}
			if s != nil {
				m.endStream(s, st.Err(), trailer, endByBridge)
			}
		}
	case muxwire.TypeWindow:
		n, err := muxwire.ParseWindow(p)
		if err != nil {
			return err
		}
		if h.StreamID == 0 {
			if m.sendWindow+int64(n) > muxwire.MaxWindow {
				return fmt.Errorf("grpcws: WINDOW takes the connection's window past %d", muxwire.MaxWindow)
			}
			m.sendWindow += int64(n)
		} else {
			if h.StreamID > m.lastID {
				return fmt.Errorf("grpcws: stream %d never opened", h.StreamID)
			}
			s := m.streams[h.StreamID]
			if s == nil {
				return nil
			}
			if s.sendWindow+int64(n) > muxwire.MaxWindow {
				return fmt.Errorf("grpcws: WINDOW takes stream %d's window past %d", h.StreamID, muxwire.MaxWindow)
			}
			s.sendWindow += int64(n)
		}
		m.wakeWriter()
	case muxwire.TypePing:
		if h.StreamID != 0 {
			return fmt.Errorf("grpcws: PING on stream %d", h.StreamID)
		}
		if len(p) != muxwire.PingSize {
			return fmt.Errorf("grpcws: PING payload of %d bytes; want %d", len(p), muxwire.PingSize)
		}
		if h.Flags&muxwire.FlagAck == 0 {
			m.queue(muxwire.TypePing, muxwire.FlagAck, 0, p)
		}
	case muxwire.TypeGoAway:
		if h.StreamID != 0 {
			return fmt.Errorf("grpcws: GOAWAY on stream %d", h.StreamID)
		}
		if _, _, err := muxwire.ParseGoAway(p); err != nil {
			return err
		}
		// The streams the bridge will not serve get END UNAVAILABLE from
		// it; the others finish here. New ones go to a new socket.
		m.draining = true
		m.freeSlot()
		m.closeIfDrained()
	case muxwire.TypeSettings:
		return errors.New("grpcws: a second SETTINGS")
	case muxwire.TypeOpen, muxwire.TypeEndSend, muxwire.TypeCancel, muxwire.TypeToken:
		return fmt.Errorf("grpcws: the bridge sent %v, a client's frame", h.Type)
	default:
		return fmt.Errorf("grpcws: unknown frame type 0x%02x", uint8(h.Type))
	}
	return nil
}

// data queues a DATA frame's payload on its stream, within the windows.
func (m *muxConn) data(s *muxStream, h muxwire.Header, p []byte) error {
	n := int64(len(p))
	if n > int64(m.local.MaxFrameSize) {
		return fmt.Errorf("grpcws: DATA of %d bytes, over MAX_FRAME_SIZE %d", n, m.local.MaxFrameSize)
	}
	if n > m.recvWindow {
		return errWindow
	}
	m.recvWindow -= n
	if s == nil {
		// The stream has ended: its bytes go back to the connection.
		m.connConsumed(n)
		return nil
	}
	if n > s.recvWindow {
		return errWindow
	}
	s.recvWindow -= n
	// A copy: a slice would keep the whole WebSocket message alive.
	s.chunks = append(s.chunks, muxChunk{b: append([]byte{}, p...), last: h.Flags&muxwire.FlagEndMessage != 0})
	signal(s.recvWake)
	// Credit for bytes consumed earlier, if the bridge is about to run dry.
	m.grantStream(s, int64(m.local.StreamWindow)/2)
	m.grantConn(int64(m.local.ConnWindow) / 2)
	return nil
}

// write is the only writer of the socket: it sends what is ready, batched
// into WebSocket messages of at most the bridge's MAX_WS_MESSAGE, and when
// the socket fails it closes it.
func (m *muxConn) write(ctx context.Context) {
	var b []byte
	for {
		m.mu.Lock()
		if m.err != nil {
			code, reason := m.closeCode, m.closeReason
			m.mu.Unlock()
			if code == 0 {
				m.ws.CloseNow()
			} else {
				m.ws.Close(code, reason)
			}
			return
		}
		b = m.fill(b[:0])
		m.mu.Unlock()
		if len(b) == 0 {
			select {
			case <-m.wake:
			case <-m.done:
			}
			continue
		}
		if err := m.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
			m.fail(status.Errorf(codes.Unavailable, "grpcws: connection lost: %v", err), 0, "")
		}
	}
}

// fill appends to b the next WebSocket message: the control frames that
// fit, then, once they all have, one DATA chunk of each stream with a
// message to send and window for it, in turn, until the message is full
// or no stream can send. A large message thus goes in chunks between
// other streams' frames.
func (m *muxConn) fill(b []byte) []byte {
	limit := int(m.peer.MaxWSMessage)
	n := 0
	for n < len(m.ctrl) {
		size := muxwire.HeaderSize + (int(m.ctrl[n])<<16 | int(m.ctrl[n+1])<<8 | int(m.ctrl[n+2]))
		if len(b)+n+size > limit {
			break
		}
		n += size
	}
	b = append(b, m.ctrl[:n]...)
	m.ctrl = m.ctrl[:copy(m.ctrl, m.ctrl[n:])]
	if len(m.ctrl) > 0 {
		return b // DATA waits for the OPENs queued before it
	}
	var blocked []*muxStream
	for len(m.sendq) > 0 {
		s := m.sendq[0]
		o := s.out
		if s.finished || o == nil {
			m.sendq = m.sendq[1:]
			continue
		}
		room := limit - len(b) - muxwire.HeaderSize
		if room < 0 {
			break
		}
		rest := len(o.b) - o.off
		n := min(rest, int(m.peer.MaxFrameSize), room, int(min(s.sendWindow, m.sendWindow)))
		if n <= 0 && rest > 0 {
			if room == 0 {
				break
			}
			// Out of window: it waits for a WINDOW.
			blocked = append(blocked, s)
			m.sendq = m.sendq[1:]
			continue
		}
		var flags uint8
		if n == rest {
			flags = muxwire.FlagEndMessage
		}
		b = muxwire.AppendFrame(b, muxwire.TypeData, flags, s.id, o.b[o.off:o.off+n])
		o.off += n
		s.sendWindow -= int64(n)
		m.sendWindow -= int64(n)
		m.sendq = m.sendq[1:]
		if n == rest {
			s.out = nil
			close(o.done)
		} else {
			m.sendq = append(m.sendq, s)
		}
	}
	m.sendq = append(m.sendq, blocked...)
	return b
}

// signal hands a one-token channel its token, if it has none.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
