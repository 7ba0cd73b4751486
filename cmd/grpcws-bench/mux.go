package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/internal/muxwire"
)

// The bench's multiplexed client: one WebSocket speaking grpcws.mux.v1
// (docs/protocol-mux.md) with many streams on it, raw and lean as
// bridgedStream is for protocol v1, so that what it measures is the
// bridge.
//
// A muxSocket has two goroutines. The reader parses every frame
// (muxwire.Next), counts DATA against the windows the client granted and
// hands each stream its messages (their sizes: the bench does not look at
// the bytes). The writer writes the control frames that are due, then one
// DATA frame from each stream that has something to send and credit for it,
// in turn, so that a large message does not hold back the others, as many
// as fit in one WebSocket message of at most the bridge's MAX_WS_MESSAGE.
// A stream's own goroutine only queues and waits.
//
// Flow control: the writer never sends past the stream's or the
// connection's window (the bridge's SETTINGS, grown by its WINDOW frames).
// The client states large windows of its own (muxClientSettings), so that
// the bridge does not wait for credit in a benchmark, and still grants
// credit back as the spec says: for a stream's bytes when its consumer is
// ready for them (waiting in recv, or calling it), for the connection at
// the same moment, each in batches of half the window. A stream nobody
// reads fills its window and stops there.

// muxClientSettings are the bench client's SETTINGS: windows far above
// the defaults (a 4 MiB message fits a stream's window twice), everything
// else as a browser client would state it.
func muxClientSettings() muxwire.Settings {
	s := muxwire.DefaultSettings()
	s.StreamWindow = 8 << 20
	s.ConnWindow = 256 << 20
	return s
}

// errMuxClosed is the error of a stream whose socket the client closed.
var errMuxClosed = errors.New("grpcws-bench: multiplexed socket closed")

// A muxSocket is one grpcws.mux.v1 connection. Its methods are safe for
// concurrent use; each stream has one goroutine that sends and receives.
type muxSocket struct {
	ws   *websocket.Conn
	peer muxwire.Settings // the bridge's
	ours muxwire.Settings
	ctx  context.Context // the reader's and the writer's; cancelled by close
	stop context.CancelFunc
	wake chan struct{} // the writer's
	read chan struct{} // closed when the reader has returned
	wrot chan struct{} // closed when the writer has returned

	mu       sync.Mutex
	err      error // why the socket ended, once it has
	streams  map[uint32]*muxStream
	lastID   uint32
	control  []byte       // control frames due, encoded
	sending  []*muxStream // streams with DATA or an END_SEND due, in turn
	sendConn int64        // what the client may still send on the connection
	recvConn int64        // what the bridge may still send on the connection
	unacked  int64        // connection bytes consumed, not yet granted again
	nControl int          // frames in control
	counts   muxCounts
}

// muxCounts are the WebSocket messages and the frames in them, each way:
// how well each side batches.
type muxCounts struct {
	inMessages, inFrames   int64 // from the bridge
	outMessages, outFrames int64 // to the bridge
}

func (c *muxCounts) add(o muxCounts) {
	c.inMessages += o.inMessages
	c.inFrames += o.inFrames
	c.outMessages += o.outMessages
	c.outFrames += o.outFrames
}

// stats returns the socket's counts so far.
func (m *muxSocket) stats() muxCounts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts
}

// appendControl queues a control frame; m.mu is held.
func (m *muxSocket) appendControl(typ muxwire.Type, flags uint8, stream uint32, p []byte) {
	m.control = muxwire.AppendFrame(m.control, typ, flags, stream, p)
	m.nControl++
	m.wakeWriter()
}

// dialMux opens a multiplexed socket to the bridge at addr (host:port),
// reads the bridge's SETTINGS and sends the client's.
func dialMux(ctx context.Context, addr string) (*muxSocket, error) {
	ws, res, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{
		Subprotocols:    []string{muxwire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	if res.Body != nil {
		res.Body.Close()
	}
	if got := ws.Subprotocol(); got != muxwire.Subprotocol {
		ws.CloseNow()
		return nil, fmt.Errorf("grpcws-bench: the bridge chose subprotocol %q; want %q", got, muxwire.Subprotocol)
	}
	ours := muxClientSettings()
	ws.SetReadLimit(int64(ours.MaxWSMessage))
	_, b, err := ws.Read(ctx)
	if err != nil {
		ws.CloseNow()
		return nil, fmt.Errorf("grpcws-bench: reading the bridge's SETTINGS: %w", err)
	}
	h, p, rest, err := muxwire.Next(b)
	if err == nil && (h.Type != muxwire.TypeSettings || h.StreamID != 0 || len(rest) > 0) {
		err = fmt.Errorf("grpcws-bench: the bridge's first message is %v on stream %d; want SETTINGS alone", h.Type, h.StreamID)
	}
	var peer muxwire.Settings
	if err == nil {
		peer, err = muxwire.ParseSettings(p)
	}
	if err == nil {
		err = ws.Write(ctx, websocket.MessageBinary, muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, ours.Append(nil)))
	}
	if err != nil {
		ws.CloseNow()
		return nil, err
	}
	m := &muxSocket{
		ws: ws, peer: peer, ours: ours,
		wake: make(chan struct{}, 1), read: make(chan struct{}), wrot: make(chan struct{}),
		streams:  map[uint32]*muxStream{},
		sendConn: int64(peer.ConnWindow),
		recvConn: int64(ours.ConnWindow),
	}
	m.ctx, m.stop = context.WithCancel(context.Background())
	go m.reader()
	go m.writer()
	return m, nil
}

// close closes the socket (1000) and waits for its goroutines. The bridge
// ends the streams still open.
func (m *muxSocket) close() {
	m.fail(errMuxClosed)
	_ = m.ws.Close(websocket.StatusNormalClosure, "")
	m.stop()
	<-m.read
	<-m.wrot
}

// fail ends the socket with err, if it has not ended yet, and wakes every
// waiter.
func (m *muxSocket) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return
	}
	m.err = err
	for _, s := range m.streams {
		s.notify()
	}
	m.wakeWriter()
}

func (m *muxSocket) wakeWriter() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// open starts a stream on route with metadata md (nil for none). The OPEN
// goes out with the stream's first message when both are due.
func (m *muxSocket) open(route string, md metadata.MD) (*muxStream, error) {
	p, err := muxwire.Open(route, md, "")
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return nil, m.err
	}
	m.lastID++
	s := &muxStream{
		m: m, id: m.lastID, ready: make(chan struct{}, 1),
		sendWindow: int64(m.peer.StreamWindow),
		recvWindow: int64(m.ours.StreamWindow),
	}
	m.streams[s.id] = s
	m.appendControl(muxwire.TypeOpen, 0, s.id, p)
	return s, nil
}

// A muxStream is one RPC on a muxSocket. One goroutine at a time sends and
// receives on it.
type muxStream struct {
	m     *muxSocket
	id    uint32
	ready chan struct{} // recv's: something arrived

	// Guarded by m.mu.
	out        [][]byte // messages to send, the first from off
	off        int
	queued     bool // in m.sending
	endSend    bool // an END_SEND is due after out
	sendWindow int64
	recvWindow int64 // what the bridge may still send on this stream
	held       int64 // bytes received, not yet consumed
	unacked    int64 // bytes consumed, not yet granted again
	partial    int   // bytes of the message arriving
	msgs       []int // sizes of the whole messages arrived, not yet taken
	received   int64 // every DATA byte that arrived
	waiting    bool  // recv waits: the consumer is ready for bytes
	ended      bool  // END arrived
	end        *status.Status
	gone       bool // closed or cancelled by the client: forgotten
}

// notify wakes recv; m.mu is held.
func (s *muxStream) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// send queues msg, which must not change until the stream has ended.
func (s *muxStream) send(msg []byte) error {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		return m.err
	case s.ended:
		return fmt.Errorf("stream %d ended: %v", s.id, s.end.Err())
	}
	s.out = append(s.out, msg)
	s.queue()
	return nil
}

// queue puts the stream in the writer's turn; m.mu is held.
func (s *muxStream) queue() {
	if !s.queued {
		s.queued = true
		s.m.sending = append(s.m.sending, s)
		s.m.wakeWriter()
	}
}

// recv waits for the next whole message and returns its size. At the
// stream's END it returns io.EOF, or the status's error.
func (s *muxStream) recv(ctx context.Context) (int, error) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		s.consume()
		switch {
		case len(s.msgs) > 0:
			n := s.msgs[0]
			s.msgs = s.msgs[1:]
			return n, nil
		case s.ended:
			if err := s.end.Err(); err != nil {
				return 0, err
			}
			return 0, io.EOF
		case m.err != nil:
			return 0, m.err
		}
		s.waiting = true
		m.mu.Unlock()
		select {
		case <-s.ready:
		case <-ctx.Done():
		}
		m.mu.Lock()
		s.waiting = false
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// roundTrip sends msg and waits for one message back: ping-pong.
func (s *muxStream) roundTrip(ctx context.Context, msg []byte) (int, error) {
	if err := s.send(msg); err != nil {
		return 0, err
	}
	return s.recv(ctx)
}

// consume takes what has arrived off the stream's queue, as a consumer
// ready for it does, and grants it back: to the stream and to the
// connection, each once half its window is due. m.mu is held.
func (s *muxStream) consume() {
	n := s.held
	if n == 0 {
		return
	}
	s.held = 0
	m := s.m
	s.unacked += n
	if s.unacked >= int64(m.ours.StreamWindow)/2 && !s.ended {
		s.recvWindow += s.unacked
		m.appendControl(muxwire.TypeWindow, 0, s.id, muxwire.Window(uint32(s.unacked)))
		s.unacked = 0
	}
	m.consumed(n)
}

// consumed grants the connection's window again for n bytes taken off a
// stream's queue, in batches of half the window. m.mu is held.
func (m *muxSocket) consumed(n int64) {
	m.unacked += n
	if m.unacked >= int64(m.ours.ConnWindow)/2 {
		m.recvConn += m.unacked
		m.appendControl(muxwire.TypeWindow, 0, 0, muxwire.Window(uint32(m.unacked)))
		m.unacked = 0
	}
}

// close half-closes the stream (END_SEND after what it has queued) and
// forgets it: its END and anything else still on the way are dropped.
func (s *muxStream) close() {
	s.forget(func() {
		s.endSend = true
		s.queue()
	})
}

// cancel cancels the stream (CANCEL) and forgets it.
func (s *muxStream) cancel() {
	s.forget(func() {
		s.out, s.off = nil, 0
		s.m.appendControl(muxwire.TypeCancel, 0, s.id, nil)
	})
}

func (s *muxStream) forget(last func()) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.gone {
		return
	}
	s.gone = true
	if !s.ended && m.err == nil {
		last()
	}
	delete(m.streams, s.id)
	// What it holds goes back to the connection, and so will whatever
	// arrives for it from now on.
	m.consumed(s.held)
	s.held, s.msgs = 0, nil
}

// receivedBytes returns the DATA bytes that arrived on the stream.
func (s *muxStream) receivedBytes() int64 {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.received
}

// reader reads the bridge's messages until the socket ends.
func (m *muxSocket) reader() {
	defer close(m.read)
	var buf []byte
	for {
		typ, r, err := m.ws.Reader(m.ctx)
		if err == nil && typ != websocket.MessageBinary {
			err = errors.New("grpcws-bench: the bridge sent a text message")
		}
		if err == nil {
			buf, err = readAll(r, buf[:0])
		}
		if err == nil {
			err = m.frames(buf)
		}
		if err != nil {
			m.fail(err)
			m.stop() // the writer stops too
			return
		}
	}
}

// readAll reads r to its end into buf, reusing its memory.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// frames handles the frames of one message from the bridge.
func (m *muxSocket) frames(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts.inMessages++
	for ; len(b) > 0; m.counts.inFrames++ {
		h, p, rest, err := muxwire.Next(b)
		if err != nil {
			return err
		}
		if err := m.frame(h, p); err != nil {
			return fmt.Errorf("grpcws-bench: %v on stream %d from the bridge: %w", h.Type, h.StreamID, err)
		}
		b = rest
	}
	return nil
}

// frame handles one frame from the bridge; m.mu is held.
func (m *muxSocket) frame(h muxwire.Header, p []byte) error {
	switch h.Type {
	case muxwire.TypeData:
		n := int64(len(p))
		if m.recvConn -= n; m.recvConn < 0 {
			return errors.New("the connection's window exceeded")
		}
		s := m.streams[h.StreamID]
		if s == nil {
			m.consumed(n) // a stream the client forgot
			return nil
		}
		if s.recvWindow -= n; s.recvWindow < 0 {
			return errors.New("the stream's window exceeded")
		}
		s.received += n
		s.held += n
		s.partial += len(p)
		if h.Flags&muxwire.FlagEndMessage != 0 {
			s.msgs = append(s.msgs, s.partial)
			s.partial = 0
		}
		if s.waiting {
			s.consume() // the consumer is ready: chunks go to it as they come
			s.notify()
		}
	case muxwire.TypeHeaders:
	case muxwire.TypeEnd:
		st, _, err := muxwire.ParseEnd(p)
		if err != nil {
			return err
		}
		if s := m.streams[h.StreamID]; s != nil {
			s.ended, s.end = true, st
			delete(m.streams, h.StreamID)
			s.notify()
		}
	case muxwire.TypeWindow:
		n, err := muxwire.ParseWindow(p)
		if err != nil {
			return err
		}
		w := &m.sendConn
		if h.StreamID != 0 {
			s := m.streams[h.StreamID]
			if s == nil {
				return nil
			}
			w = &s.sendWindow
		}
		if *w += int64(n); *w > muxwire.MaxWindow {
			return errors.New("a window past 2^31-1")
		}
		m.wakeWriter()
	case muxwire.TypePing:
		if h.Flags&muxwire.FlagAck == 0 {
			m.appendControl(muxwire.TypePing, muxwire.FlagAck, 0, p)
		}
	case muxwire.TypeGoAway:
		return status.Error(codes.Unavailable, "the bridge sent GOAWAY")
	default:
		return errors.New("a frame the bridge may not send")
	}
	return nil
}

// A muxPart is a DATA or END_SEND frame picked by the writer: its header,
// and its payload, a slice of a stream's message.
type muxPart struct {
	hdr muxwire.Header
	p   []byte
}

// writer writes what is due until the socket ends.
func (m *muxSocket) writer() {
	defer close(m.wrot)
	var (
		batch []byte
		parts []muxPart
	)
	limit := int(m.peer.MaxWSMessage)
	for {
		select {
		case <-m.wake:
		case <-m.ctx.Done():
			return
		}
		for {
			m.mu.Lock()
			if m.err != nil {
				m.mu.Unlock()
				return
			}
			batch = append(batch[:0], m.control...)
			m.control = m.control[:0]
			parts = m.take(parts[:0], len(batch), limit)
			if len(batch) > 0 || len(parts) > 0 {
				m.counts.outMessages++
				m.counts.outFrames += int64(m.nControl + len(parts))
			}
			m.nControl = 0
			m.mu.Unlock()
			if len(batch) == 0 && len(parts) == 0 {
				break
			}
			for _, pt := range parts {
				batch = muxwire.AppendHeader(batch, pt.hdr)
				batch = append(batch, pt.p...)
			}
			if err := m.ws.Write(m.ctx, websocket.MessageBinary, batch); err != nil {
				m.fail(err)
				m.stop()
				return
			}
		}
	}
}

// take picks DATA frames, one per stream in turn, within the windows, and
// the END_SENDs due after them, to follow used bytes in a message of at
// most limit bytes (at least one frame). m.mu is held.
func (m *muxSocket) take(parts []muxPart, used, limit int) []muxPart {
	queue := m.sending
	var blocked []*muxStream
	for len(queue) > 0 {
		s := queue[0]
		if (s.gone && !s.endSend) || s.ended { // cancelled, or ended by the bridge
			queue = queue[1:]
			s.queued = false
			continue
		}
		if len(s.out) == 0 { // only the END_SEND is due
			parts = append(parts, muxPart{hdr: muxwire.Header{Type: muxwire.TypeEndSend, StreamID: s.id}})
			used += muxwire.HeaderSize
			s.endSend, s.queued = false, false
			queue = queue[1:]
			continue
		}
		msg := s.out[0][s.off:]
		n := min(int64(len(msg)), int64(m.peer.MaxFrameSize), s.sendWindow, m.sendConn)
		if n == 0 && len(msg) > 0 {
			// Out of credit: the stream waits for a WINDOW.
			blocked = append(blocked, s)
			queue = queue[1:]
			continue
		}
		if used > 0 && used+muxwire.HeaderSize+int(n) > limit {
			break
		}
		flags := uint8(0)
		if int(n) == len(msg) {
			flags = muxwire.FlagEndMessage
		}
		parts = append(parts, muxPart{hdr: muxwire.Header{Length: int(n), Type: muxwire.TypeData, Flags: flags, StreamID: s.id}, p: msg[:n]})
		used += muxwire.HeaderSize + int(n)
		s.sendWindow -= n
		m.sendConn -= n
		queue = queue[1:]
		if flags != 0 {
			s.out[0] = nil
			s.out, s.off = s.out[1:], 0
		} else {
			s.off += int(n)
		}
		if len(s.out) > 0 || s.endSend {
			queue = append(queue, s) // its next frame after the others'
		} else {
			s.queued = false
		}
	}
	m.sending = append(queue, blocked...)
	return parts
}

// muxPinger is a ping-pong stream on a muxSocket.
type muxPinger struct {
	s   *muxStream
	req []byte
}

func (p muxPinger) roundTrip(ctx context.Context) error {
	_, err := p.s.roundTrip(ctx, p.req)
	return err
}

func (p muxPinger) close() { p.s.close() }

// openMuxAll opens n ping-pong streams on one multiplexed socket and does a
// round trip on each. done closes the streams and then the socket, and
// returns its counts.
func openMuxAll(ctx context.Context, e *env, n, size int) ([]pinger, func() muxCounts, error) {
	m, err := dialMux(ctx, e.bridge.Addr)
	if err != nil {
		return nil, nil, err
	}
	ps, err := openAll(ctx, e, openOnMux(m), n, size)
	if err != nil {
		m.close()
		return nil, nil, err
	}
	return ps, func() muxCounts {
		closeAll(ps)
		c := m.stats()
		m.close()
		return c
	}, nil
}

// openOnMux opens ping-pong streams on m.
func openOnMux(m *muxSocket) openFunc {
	return func(_ context.Context, _ *env, size int) (pinger, error) {
		req, err := proto.Marshal(request(size))
		if err != nil {
			return nil, err
		}
		s, err := m.open(route, nil)
		if err != nil {
			return nil, err
		}
		return muxPinger{s: s, req: req}, nil
	}
}
