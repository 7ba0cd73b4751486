package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/status"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// The multiplexed mode (-mux-sockets N): the same RPCs, each a stream of
// grpcws.mux.v1 on one of N long-lived sockets, slot i on socket i mod N.
// A socket that ends is dialled again by the next RPC that needs it.
// Besides the backend kills, two client faults: an RPC the plan drops is
// cancelled (CANCEL), and every -mux-drop-every one socket, at random, is
// dropped with all its streams (TCP reset, TCP close or WebSocket close).
// A stream must end with its END frame, unless its client cancelled it or
// dropped its socket: a socket the bridge ends leaves its streams without a
// status, which the checks count.

// muxSettings are the soak client's SETTINGS: windows large enough that
// the bridge never waits for credit from a client that reads.
func muxSettings() muxwire.Settings {
	s := muxwire.DefaultSettings()
	s.StreamWindow = 1 << 20
	s.ConnWindow = 64 << 20
	return s
}

// A muxSocket is one grpcws.mux.v1 connection of the soak. A goroutine
// reads it and sorts what arrives by stream; streams write their own
// frames.
type muxSocket struct {
	ws   *websocket.Conn
	slot *connSlot
	peer muxwire.Settings
	ours muxwire.Settings
	read chan struct{} // closed when the reader has returned

	opening sync.Mutex // OPENs go out in the order of their ids

	mu        sync.Mutex
	cond      sync.Cond // waits for credit
	err       error     // why it ended, once it has
	droppedBy dropMode  // the client's drop that ended it, if one did
	streams   map[uint32]*muxStream
	lastID    uint32
	sendConn  int64
	recvConn  int64
	unacked   int64
	breaches  []string // the bridge's breaches of the protocol
}

// dialMux opens a socket from the source address of d's client i; ctx
// bounds the handshake and the exchange of SETTINGS.
func dialMux(ctx context.Context, d *dialers, i int, url string) (*muxSocket, error) {
	slot := &connSlot{}
	ws, res, err := websocket.Dial(context.WithValue(ctx, connSlotKey{}, slot), url, &websocket.DialOptions{
		HTTPClient:      d.clients[i%len(d.clients)],
		Subprotocols:    []string{muxwire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if res != nil && res.Body != nil {
		res.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	ours := muxSettings()
	ws.SetReadLimit(int64(ours.MaxWSMessage))
	fail := func(err error) (*muxSocket, error) {
		ws.CloseNow()
		return nil, err
	}
	if got := ws.Subprotocol(); got != muxwire.Subprotocol {
		return fail(fmt.Errorf("the bridge selected subprotocol %q", got))
	}
	_, b, err := ws.Read(ctx)
	if err != nil {
		return fail(fmt.Errorf("reading SETTINGS: %w", err))
	}
	h, p, rest, err := muxwire.Next(b)
	if err == nil && (h.Type != muxwire.TypeSettings || h.StreamID != 0 || len(rest) > 0) {
		err = fmt.Errorf("the bridge's first message is %v on stream %d; want SETTINGS alone", h.Type, h.StreamID)
	}
	var peer muxwire.Settings
	if err == nil {
		peer, err = muxwire.ParseSettings(p)
	}
	if err == nil {
		err = ws.Write(ctx, websocket.MessageBinary, muxwire.AppendFrame(nil, muxwire.TypeSettings, 0, 0, ours.Append(nil)))
	}
	if err != nil {
		return fail(err)
	}
	m := &muxSocket{
		ws: ws, slot: slot, peer: peer, ours: ours, read: make(chan struct{}),
		streams:  map[uint32]*muxStream{},
		sendConn: int64(peer.ConnWindow),
		recvConn: int64(ours.ConnWindow),
	}
	m.cond.L = &m.mu
	go m.reader()
	return m, nil
}

// ended returns why the socket ended, nil while it is open.
func (m *muxSocket) ended() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// fail ends the socket with err, once, and wakes every stream.
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
	m.cond.Broadcast()
}

// drop ends the socket as a client that leaves does, with all its streams.
func (m *muxSocket) drop(how dropMode) {
	m.mu.Lock()
	if m.err == nil {
		m.droppedBy = how
	}
	m.mu.Unlock()
	m.fail(fmt.Errorf("soak: socket dropped by the client (%s)", dropNames[how]))
	switch how {
	case dropReset:
		m.slot.mu.Lock()
		c := m.slot.conn
		m.slot.mu.Unlock()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
			_ = tc.Close()
			break
		}
		m.ws.CloseNow()
	case dropFIN:
		m.ws.CloseNow()
	default:
		_ = m.ws.Close(websocket.StatusNormalClosure, "soak: client leaves")
	}
	<-m.read
}

// close closes the socket normally, at the end of the run.
func (m *muxSocket) close() {
	m.fail(errors.New("soak: socket closed at the end of the run"))
	_ = m.ws.Close(websocket.StatusNormalClosure, "")
	<-m.read
}

// breach records a breach of the protocol by the bridge; m.mu is held.
func (m *muxSocket) breach(format string, args ...any) {
	if len(m.breaches) < maxExamples {
		m.breaches = append(m.breaches, fmt.Sprintf(format, args...))
	}
}

// write writes frames, in one message. Its context is the socket's, never
// a stream's: coder/websocket closes the connection when a write's context
// ends, which must not happen when one stream is done. A write that takes
// 30 s closes it.
func (m *muxSocket) write(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.ws.Write(ctx, websocket.MessageBinary, b)
}

func (m *muxSocket) reader() {
	defer close(m.read)
	for {
		typ, b, err := m.ws.Read(context.Background())
		if err == nil && typ != websocket.MessageBinary {
			err = errors.New("a text message")
			m.mu.Lock()
			m.breach("the bridge sent a text message")
			m.mu.Unlock()
		}
		if err == nil {
			err = m.frames(b)
		}
		if err != nil {
			m.fail(err)
			m.ws.CloseNow()
			return
		}
	}
}

// frames handles one message from the bridge: a breach of the framing or
// of the windows ends the socket.
func (m *muxSocket) frames(b []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(b) > 0 {
		h, p, rest, err := muxwire.Next(b)
		if err != nil {
			m.breach("a malformed frame: %v", err)
			return err
		}
		if err := m.frame(h, p); err != nil {
			m.breach("%v on stream %d: %v", h.Type, h.StreamID, err)
			return err
		}
		b = rest
	}
	return nil
}

// frame handles one frame; m.mu is held.
func (m *muxSocket) frame(h muxwire.Header, p []byte) error {
	if h.StreamID > m.lastID {
		return fmt.Errorf("stream %d never opened", h.StreamID)
	}
	switch h.Type {
	case muxwire.TypeData:
		n := int64(len(p))
		if m.recvConn -= n; m.recvConn < 0 {
			return errors.New("the connection's window exceeded")
		}
		s := m.streams[h.StreamID]
		if s == nil {
			m.consumed(n) // cancelled, or ended: its bytes go back
			return nil
		}
		if s.recvWindow -= n; s.recvWindow < 0 {
			return errors.New("the stream's window exceeded")
		}
		s.held += n
		s.partial = append(s.partial, p...)
		if h.Flags&muxwire.FlagEndMessage != 0 {
			s.msgs = append(s.msgs, s.partial)
			s.partial = nil
		}
		s.notify()
	case muxwire.TypeHeaders:
		if s := m.streams[h.StreamID]; s != nil {
			if _, err := muxwire.ParseHeaders(p); err != nil {
				return err
			}
			if s.headers || len(s.msgs) > 0 || s.received > 0 {
				s.protocol = append(s.protocol, "HEADERS after HEADERS or DATA")
			}
			s.headers = true
		}
	case muxwire.TypeEnd:
		st, _, err := muxwire.ParseEnd(p)
		if err != nil {
			return err
		}
		if s := m.streams[h.StreamID]; s != nil {
			s.end, s.endAt = st, time.Now()
			if len(s.partial) > 0 {
				s.protocol = append(s.protocol, "END in the middle of a message")
			}
			delete(m.streams, h.StreamID)
			m.consumed(s.held) // what the consumer will not take now
			s.held = 0
			s.notify()
			m.cond.Broadcast() // a send waiting for credit gives up
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
		m.cond.Broadcast()
	case muxwire.TypePing:
		if h.Flags&muxwire.FlagAck == 0 {
			return errors.New("the bridge sent a PING of its own")
		}
	case muxwire.TypeGoAway:
		m.breach("GOAWAY: the bridge is not shutting down")
	default:
		return errors.New("a frame the bridge may not send")
	}
	return nil
}

// consumed grants the connection's window again for n bytes, in batches
// of half the window; m.mu is held. The grant goes out with the next frame
// a stream writes.
func (m *muxSocket) consumed(n int64) {
	m.unacked += n
}

// grants returns the WINDOW frames due on the connection; m.mu is held.
func (m *muxSocket) grants(b []byte) []byte {
	if m.unacked >= int64(m.ours.ConnWindow)/2 {
		b = muxwire.AppendFrame(b, muxwire.TypeWindow, 0, 0, muxwire.Window(uint32(m.unacked)))
		m.recvConn += m.unacked
		m.unacked = 0
	}
	return b
}

// A muxStream is one RPC on a socket, as its client sees it.
type muxStream struct {
	m     *muxSocket
	id    uint32
	ready chan struct{}

	// Guarded by m.mu.
	sendWindow int64
	recvWindow int64
	held       int64 // received, not yet consumed
	unacked    int64 // consumed, not yet granted
	partial    []byte
	msgs       [][]byte
	received   int
	headers    bool
	end        *status.Status
	endAt      time.Time
	cancelled  bool
	protocol   []string
}

func (s *muxStream) notify() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// open opens a stream on route and writes its OPEN.
func (m *muxSocket) open(route string) (*muxStream, error) {
	p, err := muxwire.Open(route, nil, "")
	if err != nil {
		return nil, err
	}
	m.opening.Lock()
	defer m.opening.Unlock()
	m.mu.Lock()
	if m.err != nil {
		m.mu.Unlock()
		return nil, m.err
	}
	m.lastID++
	s := &muxStream{m: m, id: m.lastID, ready: make(chan struct{}, 1),
		sendWindow: int64(m.peer.StreamWindow), recvWindow: int64(m.ours.StreamWindow)}
	m.streams[s.id] = s
	m.mu.Unlock()
	return s, m.write(muxwire.AppendFrame(nil, muxwire.TypeOpen, 0, s.id, p))
}

// send writes one message within the windows, waiting for credit.
func (s *muxStream) send(ctx context.Context, msg []byte) error {
	m := s.m
	stop := context.AfterFunc(ctx, func() {
		m.mu.Lock()
		m.cond.Broadcast()
		m.mu.Unlock()
	})
	defer stop()
	var b []byte
	for first := true; first || len(msg) > 0; first = false {
		m.mu.Lock()
		n := int64(0)
		for {
			if m.err != nil || s.end != nil || s.cancelled || ctx.Err() != nil {
				m.mu.Unlock()
				return errStreamOver
			}
			n = min(int64(len(msg)), int64(m.peer.MaxFrameSize), s.sendWindow, m.sendConn)
			if n > 0 || len(msg) == 0 {
				break
			}
			m.cond.Wait() // the reader's WINDOW, or the end, wakes it
		}
		s.sendWindow -= n
		m.sendConn -= n
		flags := uint8(0)
		if int(n) == len(msg) {
			flags = muxwire.FlagEndMessage
		}
		b = muxwire.AppendFrame(s.grants(b[:0]), muxwire.TypeData, flags, s.id, msg[:n])
		m.mu.Unlock()
		if err := m.write(b); err != nil {
			return err
		}
		msg = msg[n:]
	}
	return nil
}

// errStreamOver is what send returns once the stream, or its socket, ended.
var errStreamOver = errors.New("soak: stream over")

// grants appends the WINDOW frames due on the stream and the connection;
// m.mu is held.
func (s *muxStream) grants(b []byte) []byte {
	if s.unacked >= int64(s.m.ours.StreamWindow)/2 && s.end == nil {
		b = muxwire.AppendFrame(b, muxwire.TypeWindow, 0, s.id, muxwire.Window(uint32(s.unacked)))
		s.recvWindow += s.unacked
		s.unacked = 0
	}
	return s.m.grants(b)
}

// control writes a frame without payload (END_SEND, CANCEL), with the
// grants due.
func (s *muxStream) control(typ muxwire.Type) error {
	m := s.m
	m.mu.Lock()
	if m.err != nil || s.end != nil {
		m.mu.Unlock()
		return errStreamOver
	}
	if typ == muxwire.TypeCancel {
		s.cancelled = true
		delete(m.streams, s.id)
		m.consumed(s.held)
		s.held, s.msgs = 0, nil
		s.notify()
		m.cond.Broadcast()
	}
	b := muxwire.AppendFrame(s.grants(nil), typ, 0, s.id, nil)
	m.mu.Unlock()
	return m.write(b)
}

// next waits for the next message; at the end it returns nil and the END's
// status, or the socket's error when there was no END.
func (s *muxStream) next(ctx context.Context) ([]byte, *status.Status, error) {
	m := s.m
	for {
		m.mu.Lock()
		// The consumer is ready: what arrived is taken off the queue and
		// granted back, in batches of half the window.
		s.unacked += s.held
		m.consumed(s.held)
		s.held = 0
		var grant []byte
		if s.end == nil && m.err == nil {
			grant = s.grants(nil)
		}
		switch {
		case len(s.msgs) > 0:
			b := s.msgs[0]
			s.msgs[0] = nil
			s.msgs = s.msgs[1:]
			s.received++
			m.mu.Unlock()
			return b, nil, s.flush(grant)
		case s.end != nil:
			st := s.end
			m.mu.Unlock()
			return nil, st, nil
		case s.cancelled:
			m.mu.Unlock()
			return nil, nil, errStreamOver
		case m.err != nil:
			err := m.err
			m.mu.Unlock()
			return nil, nil, err
		}
		m.mu.Unlock()
		if err := s.flush(grant); err != nil {
			return nil, nil, err
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// flush writes grants, if any.
func (s *muxStream) flush(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return s.m.write(b)
}

// muxPool holds the soak's sockets: slot i uses socket i mod n, dialled
// again when it has ended.
type muxPool struct {
	d   *dialers
	url string

	mu      sync.Mutex
	sockets []*muxSocket
	dialing []sync.Mutex // one per socket, so that one dial at a time fills it
	dials   int
	dropped [dropModes]int
	broken  []string // the bridge's breaches, from ended sockets
	brokenN int
}

func newMuxPool(d *dialers, url string, n int) *muxPool {
	return &muxPool{d: d, url: url, sockets: make([]*muxSocket, n), dialing: make([]sync.Mutex, n)}
}

// get returns socket i, dialling it when it is not open.
func (p *muxPool) get(ctx context.Context, i int) (*muxSocket, error) {
	i %= len(p.sockets)
	p.dialing[i].Lock()
	defer p.dialing[i].Unlock()
	p.mu.Lock()
	m := p.sockets[i]
	p.mu.Unlock()
	if m != nil && m.ended() == nil {
		return m, nil
	}
	if m != nil {
		p.retire(m)
	}
	// The socket outlives the RPC that dials it: not its context, a
	// bound of its own.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	m, err := dialMux(dctx, p.d, i, p.url)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.sockets[i] = m
	p.dials++
	p.mu.Unlock()
	return m, nil
}

// retire keeps the breaches of an ended socket for the report.
func (p *muxPool) retire(m *muxSocket) {
	m.mu.Lock()
	b := m.breaches
	m.breaches = nil
	m.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.brokenN += len(b)
	for _, x := range b {
		if len(p.broken) < maxExamples {
			p.broken = append(p.broken, x)
		}
	}
}

// dropper drops a socket at random, with a random drop mode, about every
// every (0.5 to 1.5 times it) until end.
func (p *muxPool) dropper(ctx context.Context, seed uint64, every time.Duration, end time.Time) {
	if every <= 0 {
		return
	}
	rng := rand.New(rand.NewPCG(seed, 1<<61))
	for range int(time.Until(end)/(every/2)) + 1 {
		wait := time.Duration(float64(every) * (0.5 + rng.Float64()))
		if time.Now().Add(wait).After(end) || !sleep(ctx, wait) {
			return
		}
		i := rng.IntN(len(p.sockets))
		how := dropMode(1 + rng.IntN(int(dropModes-1)))
		p.mu.Lock()
		m := p.sockets[i]
		p.mu.Unlock()
		if m == nil || m.ended() != nil {
			continue
		}
		m.drop(how)
		p.mu.Lock()
		p.dropped[how]++
		p.mu.Unlock()
	}
}

// close closes every socket, and keeps their breaches.
func (p *muxPool) close() {
	p.mu.Lock()
	sockets := p.sockets
	p.mu.Unlock()
	for _, m := range sockets {
		if m != nil {
			m.close()
			p.retire(m)
		}
	}
}

// runMuxStream runs one RPC as a stream of a pooled socket, checking it as
// runStream does.
func runMuxStream(ctx context.Context, pool *muxPool, slot int, p plan) result {
	s := &stream{p: p}
	s.res.plan = p
	s.res.mux = true
	s.res.started = time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.life+streamSlack)
	defer cancel()
	var (
		m   *muxSocket
		ms  *muxStream
		err error
	)
	for range 3 {
		if m, err = pool.get(ctx, slot); err != nil {
			break
		}
		if ms, err = m.open(routes[p.kind]); err == nil {
			break
		}
		// The client itself dropped the socket just now: take its next.
		m.mu.Lock()
		dropped := m.droppedBy != keep
		m.mu.Unlock()
		if !dropped {
			break
		}
	}
	if err != nil {
		s.res.dialErr = err
		s.res.ended = time.Now()
		return s.res
	}
	s.seq.init(p.msgs)

	// The writer sends at the plan's pace, and cancels when the plan drops
	// the RPC; the reader, this goroutine, takes what arrives.
	wctx, stopWriter := context.WithCancel(ctx)
	written := make(chan struct{})
	go func() {
		defer close(written)
		s.writeMux(wctx, ms)
	}()
	var end *status.Status
	for {
		b, st, err := ms.next(ctx)
		if err != nil {
			m.mu.Lock()
			cancelled, droppedBy := ms.cancelled, m.droppedBy
			m.mu.Unlock()
			switch {
			case cancelled:
				s.dropped = true
				s.res.drop = dropCancel
			case droppedBy != keep:
				s.dropped = true
				s.res.drop = droppedBy
			case ctx.Err() != nil:
				s.res.hung = true
			default:
				s.res.reason = err.Error() // the socket ended under it
			}
			break
		}
		if st != nil {
			end = st
			break
		}
		s.res.received++
		s.message(b)
	}
	stopWriter()
	<-written
	m.mu.Lock()
	s.res.protocol = append(s.res.protocol, ms.protocol...)
	s.res.endAt = ms.endAt
	m.mu.Unlock()
	if end != nil {
		s.res.end = v1wire.FromStatus(end)
		if s.res.end == nil {
			s.res.end = &grpcwsv1.Status{}
		}
	}
	s.res.ended = time.Now()
	s.finish(ctx)
	return s.res
}

// writeMux sends the plan's messages at its pace and, for the kinds whose
// client streams, END_SEND. When the plan drops the RPC it cancels it,
// unless its END has come.
func (s *stream) writeMux(ctx context.Context, ms *muxStream) {
	var dropC <-chan time.Time
	if s.p.drop != keep {
		t := time.NewTimer(s.p.dropAt)
		defer t.Stop()
		dropC = t.C
	}
	cancel := func() { _ = ms.control(muxwire.TypeCancel) }
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
		case <-dropC:
			cancel()
		}
		return false
	}
	n := 1
	if s.p.kind == clientStreaming || s.p.kind == bidi {
		n = s.p.msgs
	}
	for seq := 1; seq <= n; seq++ {
		if seq > 1 && !wait(s.p.interval) {
			return
		}
		if err := ms.send(ctx, s.request(seq)); err != nil {
			return // the RPC ended; the reader has its outcome
		}
		s.res.sent++
	}
	if s.p.kind == clientStreaming || s.p.kind == bidi {
		if ms.control(muxwire.TypeEndSend) != nil {
			return
		}
	}
	wait(s.p.life + streamSlack) // ctx ends it first
}
