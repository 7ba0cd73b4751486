package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// Multiplexed is the subprotocol of grpcws.mux.v1 (docs/protocol-mux.md):
// many RPCs on one WebSocket, each a stream with its own flow control. A
// Handler serves it to every client that offers it; no route may take the
// name.
const Multiplexed = muxwire.Subprotocol

// The multiplexed protocol has one reader (the connection's ServeHTTP
// goroutine), which parses frames and hands each stream its chunks; one
// writer goroutine, which batches the frames ready at the same moment into
// one WebSocket message; and, for each stream, a session on a muxStream
// framing, as every other protocol has. Flow control is the muxConn's: the
// reader counts what the client sends against the windows the bridge
// granted, a stream's recv grants them again as it consumes, and a
// stream's send waits for the client's grants.

// serveMux serves one grpcws.mux.v1 connection until it closes.
func (h *Handler) serveMux(w http.ResponseWriter, r *http.Request, closing bool) {
	offer, offerErr := v1wire.ParseOffer(r.Header.Values("Sec-WebSocket-Protocol"))
	a := h.admit(r, closing, offer, offerErr, nil)
	defer a.release()
	if a.refusal == nil && a.timeout != 0 {
		a.refusal, a.why = invalidArgument("grpcws: grpc-timeout at the handshake: in grpcws.mux.v1 each stream sets its own in OPEN"), RefusedBadRequest
	}
	conn, err := websocket.Accept(w, r, h.cfg.acceptOptions(Multiplexed))
	if err != nil {
		h.cfg.observer.Refused(RefusedBadRequest)
		a.log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	defer conn.CloseNow()
	if a.refusal != nil {
		h.refused(a.log, a.why, a.refusal, v1CloseCode(a.refusal))
		_ = conn.Close(v1CloseCode(a.refusal), a.refusal.status.Message())
		return
	}
	c := newMuxConn(r.Context(), h, conn, a)
	if !h.rpcs.addMux(c) {
		c.goAway() // Shutdown began after the admission
	}
	defer h.rpcs.removeMux(c)
	c.serve()
}

// A muxConn is one grpcws.mux.v1 connection.
type muxConn struct {
	h    *Handler
	conn *websocket.Conn
	log  *slog.Logger
	addr netip.Addr
	base metadata.MD // the handshake's metadata, less the token
	ours muxwire.Settings
	ctx  context.Context // the connection's; its end ends every stream
	stop context.CancelCauseFunc
	out  muxWriter
	wg   sync.WaitGroup // the streams' goroutines
	obs  MuxConnObserver
	n    int // streams opened, for obs; the reader's

	// The reader's alone.
	lastID      uint32 // also read by goAway: written under mu
	sawSettings bool
	churn       churnBucket
	maxFrame    int // the largest DATA payload the bridge accepts
	recvWindow  int64

	// mu guards the rest, and cond waits on it for the client's grants.
	mu        sync.Mutex
	cond      sync.Cond
	streams   map[uint32]*muxStream
	token     string
	goingAway bool
	closed    bool // no stream may write any more
	peer      muxwire.Settings
	sendConn  int64 // what the bridge may still send, on the connection
	unacked   int64 // bytes consumed, not yet granted again, on the connection
}

func newMuxConn(parent context.Context, h *Handler, conn *websocket.Conn, a admission) *muxConn {
	ours := muxwire.DefaultSettings()
	ours.MaxStreams = uint32(h.cfg.mux.maxStreams)
	ours.StreamWindow = uint32(h.cfg.mux.streamWindow)
	ours.ConnWindow = uint32(h.cfg.mux.connWindow)
	ours.MaxMessageSize = uint32(h.cfg.maxMessageSize)
	base := a.md.Copy()
	if a.token != "" {
		base.Delete("authorization") // the token's; set per stream from c.token
	}
	ctx, stop := context.WithCancelCause(parent)
	c := &muxConn{
		h: h, conn: conn, log: a.log.With(slog.String("protocol", Multiplexed)), addr: a.addr, base: base, ours: ours,
		ctx: ctx, stop: stop,
		churn:      newChurnBucket(h.cfg.mux.maxResets),
		maxFrame:   int(ours.MaxFrameSize),
		recvWindow: int64(ours.ConnWindow),
		streams:    map[uint32]*muxStream{},
		token:      a.token,
		peer:       muxwire.DefaultSettings(),
	}
	c.sendConn = int64(c.peer.ConnWindow)
	c.cond.L = &c.mu
	c.obs = nopObserver{}
	if mo, ok := h.cfg.observer.(MuxObserver); ok {
		c.obs = mo.MuxOpened()
	}
	c.out.init(c)
	c.out.frame(muxwire.TypeSettings, 0, 0, ours.Append(nil)) // first, before anything, GOAWAY included
	conn.SetReadLimit(int64(ours.MaxWSMessage))
	return c
}

// serve reads frames until the connection ends, then ends its streams and
// waits for them.
func (c *muxConn) serve() {
	go c.out.run()
	var alive keepalive
	var sending atomic.Bool // the reader never waits for a backend
	if d := c.h.cfg.pingInterval; d > 0 {
		alive.start(d, c.h.cfg.pingTimeout, wsConn{conn: c.conn}, &sending, c.ctx.Done(), func() {
			c.log.Info("grpcws: client did not answer a ping: closing", slog.Duration("timeout", c.h.cfg.pingTimeout))
			_ = c.conn.CloseNow()
		})
	}
	f := c.read()
	alive.stop()
	c.end(f)
}

// end ends every stream, silently: their clients are gone or cannot be
// trusted. Then it closes the connection with f's code, unless it is closed
// already.
func (c *muxConn) end(f *failure) {
	c.mu.Lock()
	c.closed = true
	streams := make([]*muxStream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	gone := &failure{silent: true, status: status.New(codes.Canceled, "grpcws: connection ended: "+f.status.Message())}
	c.stop(gone)
	for _, s := range streams {
		s.wake()
	}
	c.wg.Wait()
	c.out.stop()
	c.obs.Closed(c.n)
	if f.closeOnly {
		c.log.Warn("grpcws: connection closed", slog.Int("close", int(f.code)), slog.String("cause", f.status.Message()))
		_ = c.conn.Close(f.code, f.status.Message())
	}
}

// protocolError is the failure of a client that broke the framing: the
// connection closes with code and the message as its reason.
func protocolError(code websocket.StatusCode, format string, args ...any) *failure {
	return &failure{closeOnly: true, code: code, status: status.Newf(codes.Internal, format, args...)}
}

// read reads WebSocket messages and handles their frames, until the
// client goes or breaks the protocol.
func (c *muxConn) read() *failure {
	for {
		typ, r, err := c.conn.Reader(context.Background())
		if err != nil {
			return wsConn{conn: c.conn, maxMsg: int(c.ours.MaxWSMessage)}.readFailed(err)
		}
		if typ != websocket.MessageBinary {
			return protocolError(muxwire.CloseUnsupportedData, "grpcws: a text message: grpcws.mux.v1 carries binary messages only")
		}
		buf, err := readMessage(r)
		if err != nil {
			return wsConn{conn: c.conn, maxMsg: int(c.ours.MaxWSMessage)}.readFailed(err)
		}
		for b := buf.ReadOnlyData(); len(b) > 0; {
			hdr, p, rest, err := muxwire.Next(b)
			if err != nil {
				buf.Free()
				return protocolError(muxwire.CloseProtocolError, "%v", err)
			}
			if f := c.handle(hdr, p); f != nil {
				buf.Free()
				return f
			}
			b = rest
		}
		buf.Free()
	}
}

// handle handles one frame from the client. p is valid only during the
// call.
func (c *muxConn) handle(hdr muxwire.Header, p []byte) *failure {
	id := hdr.StreamID
	switch hdr.Type {
	case muxwire.TypeSettings:
		if c.sawSettings || c.lastID != 0 || id != 0 {
			return protocolError(muxwire.CloseProtocolError, "grpcws: SETTINGS must come once, before any OPEN, on stream 0")
		}
		c.sawSettings = true
		s, err := muxwire.ParseSettings(p)
		if err != nil {
			return protocolError(muxwire.CloseProtocolError, "%v", err)
		}
		c.mu.Lock()
		c.peer, c.sendConn = s, int64(s.ConnWindow)
		c.mu.Unlock()
		return nil
	case muxwire.TypeOpen:
		return c.open(id, p)
	case muxwire.TypeData, muxwire.TypeEndSend, muxwire.TypeCancel:
		s, f := c.stream(hdr)
		if f != nil {
			return f
		}
		switch hdr.Type {
		case muxwire.TypeData:
			return c.data(s, hdr, p)
		case muxwire.TypeEndSend:
			if len(p) != 0 {
				return protocolError(muxwire.CloseProtocolError, "grpcws: END_SEND with a payload")
			}
			if s != nil {
				s.push(muxChunk{endSend: true})
			}
		default:
			if len(p) != 0 {
				return protocolError(muxwire.CloseProtocolError, "grpcws: CANCEL with a payload")
			}
			if s != nil {
				s.cancelled.Store(true)
				s.sess.fail(&failure{silent: true, status: status.New(codes.Canceled, "grpcws: the client cancelled the stream")})
				c.closeIfIdle(c.detach(s))
				return c.spend("cancelled")
			}
		}
		return nil
	case muxwire.TypeWindow:
		n, err := muxwire.ParseWindow(p)
		if err != nil {
			return protocolError(muxwire.CloseProtocolError, "%v", err)
		}
		return c.grant(id, int64(n))
	case muxwire.TypePing:
		if id != 0 || len(p) != muxwire.PingSize {
			return protocolError(muxwire.CloseProtocolError, "grpcws: PING must be on stream 0 with 8 bytes")
		}
		if hdr.Flags&muxwire.FlagAck == 0 {
			c.out.frame(muxwire.TypePing, muxwire.FlagAck, 0, append([]byte(nil), p...))
		}
		return nil
	case muxwire.TypeToken:
		if id != 0 {
			return protocolError(muxwire.CloseProtocolError, "grpcws: TOKEN must be on stream 0")
		}
		if !grpcheader.Printable(string(p)) {
			return protocolError(muxwire.CloseProtocolError, "grpcws: TOKEN is not printable ASCII")
		}
		c.mu.Lock()
		c.token = string(p)
		c.mu.Unlock()
		return nil
	case muxwire.TypeHeaders, muxwire.TypeEnd, muxwire.TypeGoAway:
		return protocolError(muxwire.CloseProtocolError, "grpcws: a client may not send %v", hdr.Type)
	default:
		return protocolError(muxwire.CloseProtocolError, "grpcws: unknown frame type %v", hdr.Type)
	}
}

// stream returns the open stream a stream frame is for: nil, and no
// failure, for one that has ended.
func (c *muxConn) stream(hdr muxwire.Header) (*muxStream, *failure) {
	switch {
	case hdr.StreamID == 0:
		return nil, protocolError(muxwire.CloseProtocolError, "grpcws: %v on stream 0", hdr.Type)
	case hdr.StreamID > c.lastID:
		return nil, protocolError(muxwire.CloseProtocolError, "grpcws: stream %d never opened", hdr.StreamID)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[hdr.StreamID], nil
}

// data queues a chunk for its stream, within the windows.
func (c *muxConn) data(s *muxStream, hdr muxwire.Header, p []byte) *failure {
	n := int64(len(p))
	if len(p) > c.maxFrame {
		return protocolError(muxwire.CloseProtocolError, "grpcws: DATA of %d bytes, over MAX_FRAME_SIZE %d", len(p), c.maxFrame)
	}
	if atomic.AddInt64(&c.recvWindow, -n) < 0 {
		return protocolError(muxwire.CloseProtocolError, "grpcws: flow control: connection window exceeded")
	}
	if s == nil {
		c.consumed(n) // the stream ended: its bytes go back to the connection
		return nil
	}
	if !s.take(n) {
		return protocolError(muxwire.CloseProtocolError, "grpcws: flow control: window of stream %d exceeded", s.id)
	}
	var buf mem.Buffer
	if n > 0 {
		buf = mem.Copy(p, mem.DefaultBufferPool())
	}
	s.push(muxChunk{data: buf, n: n, end: hdr.Flags&muxwire.FlagEndMessage != 0})
	return nil
}

// consumed grants the connection's window again for n bytes taken off a
// stream's queue, in batches of half the window.
func (c *muxConn) consumed(n int64) {
	c.mu.Lock()
	c.unacked += n
	grant := int64(0)
	// Half a window at a time; sooner when the client has less left than
	// it is owed, as when stalled streams hold most of the window.
	if c.unacked >= int64(c.ours.ConnWindow)/2 || c.unacked >= atomic.LoadInt64(&c.recvWindow) {
		grant, c.unacked = c.unacked, 0
	}
	c.mu.Unlock()
	if grant > 0 {
		c.recvGranted(grant)
		c.out.frame(muxwire.TypeWindow, 0, 0, muxwire.Window(uint32(grant)))
	}
}

// recvGranted adds back to the connection's receive window. The reader
// alone spends it, and streams grant it, so it is atomic.
func (c *muxConn) recvGranted(n int64) {
	atomic.AddInt64(&c.recvWindow, n)
}

// grant adds the client's credit to the connection's or a stream's send
// window.
func (c *muxConn) grant(id uint32, n int64) *failure {
	if id > c.lastID {
		return protocolError(muxwire.CloseProtocolError, "grpcws: stream %d never opened", id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &c.sendConn
	if id != 0 {
		s := c.streams[id]
		if s == nil {
			return nil // ended
		}
		w = &s.sendWindow
	}
	if *w += n; *w > muxwire.MaxWindow {
		return protocolError(muxwire.CloseProtocolError, "grpcws: flow control: WINDOW takes a window past %d", muxwire.MaxWindow)
	}
	c.cond.Broadcast()
	return nil
}

// spend takes a token from the churn bucket for a cancelled or refused
// stream, and fails the connection when there is none left.
func (c *muxConn) spend(what string) *failure {
	if c.churn.take(time.Now()) {
		return nil
	}
	return protocolError(muxwire.ClosePolicyViolation, "grpcws: too many streams cancelled or refused (the last one %s): at most %d in %ds",
		what, c.h.cfg.mux.maxResets, muxwire.ChurnWindowSeconds)
}

// open starts a stream, or refuses it with an END of its own.
func (c *muxConn) open(id uint32, p []byte) *failure {
	if id == 0 || id <= c.lastID {
		if id == 0 {
			return protocolError(muxwire.CloseProtocolError, "grpcws: OPEN on stream 0")
		}
		return protocolError(muxwire.CloseProtocolError, "grpcws: stream id %d reused: ids must grow", id)
	}
	c.mu.Lock()
	c.lastID = id
	c.mu.Unlock()
	o, err := muxwire.ParseOpen(p)
	if err != nil {
		return protocolError(muxwire.CloseProtocolError, "%v", err)
	}
	log := c.log.With(slog.Uint64("stream", uint64(id)), slog.String("route", o.GetRoute()))
	refuse := func(why Refusal, f *failure) *failure {
		c.h.cfg.observer.Refused(why)
		log.Info("grpcws: stream refused", slog.String("refusal", string(why)), slog.String("reason", f.status.Message()))
		c.endStream(id, f.status)
		return c.spend("refused")
	}
	rt, json := c.h.routes.lookup(o.GetRoute())
	if rt == nil {
		return refuse(RefusedUnknownRoute, &failure{status: status.Newf(codes.Unimplemented, "grpcws: no route named %q", o.GetRoute())})
	}
	c.mu.Lock()
	goingAway, open, token := c.goingAway, len(c.streams), c.token
	c.mu.Unlock()
	if goingAway {
		return refuse(RefusedShutdown, errShuttingDown)
	}
	if open >= c.h.cfg.mux.maxStreams {
		return refuse(RefusedOverLimit, &failure{status: status.Newf(codes.ResourceExhausted,
			"grpcws: too many streams on this connection: at most %d at once", c.h.cfg.mux.maxStreams)})
	}
	md, timeout, err := c.metadata(o.GetMetadata().GetEntries(), o.GetTimeout(), token, log)
	if err != nil {
		return refuse(RefusedBadRequest, invalidArgument(err.Error()))
	}
	release, f := c.h.cfg.acquire(c.addr)
	if f != nil {
		return refuse(RefusedOverLimit, f)
	}
	s := &muxStream{c: c, id: id, route: rt, json: json, window: int64(c.ours.StreamWindow), release: release,
		ready: make(chan struct{}, 1), copied: make(chan struct{}, 1), stop: make(chan struct{})}
	c.mu.Lock()
	s.sendWindow = int64(c.peer.StreamWindow)
	c.streams[id] = s
	c.mu.Unlock()
	sess, ctx := newSession(c.ctx, c.h, rt, s, log)
	s.sess = sess
	c.n++
	c.wg.Go(func() {
		if !c.h.rpcs.add(sess) {
			sess.fail(errShuttingDown)
		}
		sess.run(ctx, md, timeout)
		c.h.rpcs.remove(sess)
		c.closeIfIdle(c.detach(s))
	})
	return nil
}

// metadata builds a stream's request metadata: the handshake's, the
// connection's current token, then the OPEN's own under v1's rules.
func (c *muxConn) metadata(entries map[string]*grpcwsv1.MetadataValues, timeout, token string, log *slog.Logger) (metadata.MD, time.Duration, error) {
	md := c.base.Copy()
	if token != "" {
		md.Set("authorization", "Bearer "+token)
	}
	own := c.h.cfg.metadata.start()
	for k, vs := range entries {
		for _, v := range vs.GetValues() {
			if err := own.client(k, v); err != nil {
				return nil, 0, err
			}
		}
	}
	if len(own.dropped) > 0 {
		log.Debug("grpcws: metadata keys not allowed, not forwarded", slog.Any("keys", own.dropped))
	}
	for k, vs := range own.md {
		if k == "authorization" {
			md[k] = vs // the stream's own wins
			continue
		}
		md[k] = append(md[k], vs...)
	}
	if timeout == "" {
		return md, 0, nil
	}
	d, err := grpcheader.ParseTimeout(timeout)
	return md, d, err
}

// endStream sends the END of a stream the bridge refused: it never had a
// session.
func (c *muxConn) endStream(id uint32, st *status.Status) {
	p, err := muxwire.End(st, nil)
	if err != nil {
		c.log.Error("grpcws: END frame", slog.Any("error", err))
		return
	}
	c.out.frame(muxwire.TypeEnd, 0, id, p)
}

// detach forgets a stream once its END is queued or the client cancelled
// it, so that its place counts for a new stream at once, as the client
// counts it: its place in the limits, and what it still holds of the
// connection's window, go back. It reports whether the connection is
// going away and this was its last stream: then the caller closes it with
// closeIfIdle, after what it still has to send. It does something once.
func (c *muxConn) detach(s *muxStream) (last bool) {
	s.abort()
	c.mu.Lock()
	if s.detached {
		c.mu.Unlock()
		return false
	}
	s.detached = true
	delete(c.streams, s.id)
	last = c.goingAway && len(c.streams) == 0
	c.mu.Unlock()
	s.mu.Lock()
	var queued int64
	for _, ch := range s.chunks {
		queued += ch.n
		if ch.data != nil {
			ch.data.Free()
		}
	}
	s.chunks = nil
	s.mu.Unlock()
	s.release()
	if queued > 0 {
		c.consumed(queued)
	}
	return last
}

// closeIfIdle closes a connection that is going away, once what is queued
// is written, when last says its last stream has ended.
func (c *muxConn) closeIfIdle(last bool) {
	if last {
		c.out.closeAfter(websocket.StatusGoingAway, errShuttingDown.status.Message())
	}
}

// goAway tells the client to open no more streams: the connection closes
// once its streams have ended.
func (c *muxConn) goAway() {
	c.mu.Lock()
	if c.goingAway {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	last := c.lastID // an OPEN racing with the GOAWAY is refused all the same
	idle := len(c.streams) == 0
	c.mu.Unlock()
	c.out.frame(muxwire.TypeGoAway, 0, 0, muxwire.GoAway(last, errShuttingDown.status.Message()))
	if idle {
		c.out.closeAfter(websocket.StatusGoingAway, errShuttingDown.status.Message())
	}
}

// A churnBucket counts the streams a client cancels or has refused: it
// holds max tokens and refills at max per muxwire.ChurnWindowSeconds.
type churnBucket struct {
	max, tokens float64
	last        time.Time
}

func newChurnBucket(max int) churnBucket {
	return churnBucket{max: float64(max), tokens: float64(max)}
}

func (b *churnBucket) take(now time.Time) bool {
	if !b.last.IsZero() {
		b.tokens = min(b.max, b.tokens+now.Sub(b.last).Seconds()*b.max/muxwire.ChurnWindowSeconds)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// A muxChunk is a DATA payload queued for a stream's recv, or the
// client's END_SEND.
type muxChunk struct {
	data    mem.Buffer // nil when empty
	n       int64
	end     bool // the last chunk of a message
	endSend bool
}

// A muxStream is one RPC of a grpcws.mux.v1 connection: the framing of its
// session.
type muxStream struct {
	c         *muxConn
	id        uint32
	route     *route
	json      bool
	sess      *session
	cancelled atomic.Bool // the client sent CANCEL: the bridge sends nothing more
	ready     chan struct{}
	copied    chan struct{} // the writer took this stream's frame
	stop      chan struct{} // closed when the stream stops

	release  func() // the place in the limits
	detached bool   // guarded by c.mu

	mu      sync.Mutex
	chunks  []muxChunk
	window  int64 // what the client may still send on this stream
	unacked int64 // bytes consumed, not yet granted again
	stopped bool  // the stream ended: recv and send return

	// upstream's alone
	halfClosed bool
	eofDue     bool

	sendWindow int64 // guarded by c.mu
}

// take spends n of the stream's receive window; false when the client
// exceeded it.
func (s *muxStream) take(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window -= n
	return s.window >= 0
}

func (s *muxStream) push(ch muxChunk) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		if ch.data != nil {
			ch.data.Free()
		}
		s.c.consumed(ch.n)
		return
	}
	s.chunks = append(s.chunks, ch)
	s.mu.Unlock()
	s.wake()
}

// wake tells recv that something changed.
func (s *muxStream) wake() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// next returns the next chunk, waiting for one; ok is false once the
// stream has stopped.
func (s *muxStream) next() (ch muxChunk, ok bool) {
	for {
		s.mu.Lock()
		if s.stopped || s.c.ctx.Err() != nil {
			s.mu.Unlock()
			return muxChunk{}, false
		}
		if len(s.chunks) > 0 {
			ch = s.chunks[0]
			s.chunks[0] = muxChunk{}
			s.chunks = s.chunks[1:]
			s.unacked += ch.n
			grant := int64(0)
			if s.unacked >= int64(s.c.ours.StreamWindow)/2 {
				grant, s.unacked = s.unacked, 0
				s.window += grant
			}
			s.mu.Unlock()
			if grant > 0 {
				s.c.out.frame(muxwire.TypeWindow, 0, s.id, muxwire.Window(uint32(grant)))
			}
			s.c.consumed(ch.n)
			return ch, true
		}
		s.mu.Unlock()
		<-s.ready
	}
}

func (s *muxStream) recv() (mem.BufferSlice, int, error) {
	if s.eofDue {
		s.eofDue = false
		return nil, 0, io.EOF
	}
	var msg mem.BufferSlice
	size := 0
	fail := func(f *failure) (mem.BufferSlice, int, error) {
		msg.Free()
		return nil, 0, f
	}
	for {
		ch, ok := s.next()
		if !ok {
			msg.Free()
			return nil, 0, errInputDone
		}
		if ch.endSend {
			switch {
			case len(msg) > 0 || size > 0:
				return fail(invalidArgument("grpcws: end of send in the middle of a message"))
			case s.halfClosed:
				return fail(invalidArgument("grpcws: end of send after end of send"))
			case !s.route.ClientStreams:
				return fail(invalidArgument("grpcws: end of send before the request: this method takes exactly one message"))
			}
			s.halfClosed = true
			return nil, 0, io.EOF
		}
		if s.halfClosed {
			if ch.data != nil {
				ch.data.Free()
			}
			return fail(invalidArgument("grpcws: message after end of send"))
		}
		size += int(ch.n)
		if ch.data != nil {
			msg = append(msg, ch.data)
		}
		if size > s.route.maxMsg {
			return fail(&failure{status: status.Newf(codes.ResourceExhausted, "grpcws: client message larger than %d bytes", s.route.maxMsg)})
		}
		if !ch.end {
			continue
		}
		out, f := s.decode(msg)
		if f != nil {
			return nil, 0, f
		}
		if !s.route.ClientStreams {
			s.halfClosed, s.eofDue = true, true
		}
		return out, size, nil
	}
}

// decode turns a message from the client into the protobuf message to
// send. It consumes msg.
func (s *muxStream) decode(msg mem.BufferSlice) (mem.BufferSlice, *failure) {
	switch {
	case s.json:
		defer msg.Free()
		return s.c.h.fromJSON(s.route, msg.Materialize())
	case s.c.h.cfg.validation:
		if f := s.c.h.validate(s.route, msg.Materialize()); f != nil {
			msg.Free()
			return nil, f
		}
	}
	return msg, nil
}

// errStreamStopped is what a write returns on a stream that has ended.
var errStreamStopped = errors.New("bridge: stream stopped")

func (s *muxStream) sendHeader(md metadata.MD) error {
	p, err := muxwire.Headers(md)
	if err != nil {
		return err
	}
	return s.write(muxwire.TypeHeaders, 0, p)
}

func (s *muxStream) send(data mem.BufferSlice) (int, error) {
	parts := make([][]byte, 0, len(data))
	if s.json {
		out, f := s.c.h.toJSON(s.route, data)
		if f != nil {
			return 0, f
		}
		parts = append(parts, out)
	} else {
		// A large message comes in several buffers: its frames are cut
		// from each as it is, not from a copy of them all.
		for _, b := range data {
			parts = append(parts, b.ReadOnlyData())
		}
	}
	size := 0
	for _, b := range parts {
		size += len(b)
	}
	if size == 0 { // one empty DATA frame
		if _, err := s.credit(0); err != nil {
			return 0, err
		}
		return 0, s.writeWait(muxwire.TypeData, muxwire.FlagEndMessage, nil)
	}
	left := size
	for _, b := range parts {
		for len(b) > 0 {
			n, err := s.credit(len(b))
			if err != nil {
				return 0, err
			}
			left -= n
			flags := uint8(0)
			if left == 0 {
				flags = muxwire.FlagEndMessage
			}
			if err := s.writeWait(muxwire.TypeData, flags, b[:n]); err != nil {
				return 0, err
			}
			b = b[n:]
		}
	}
	return size, nil
}

// credit waits until the client's windows allow sending some of want
// bytes, and takes what it may send now: at most one frame. An empty
// message needs no credit.
func (s *muxStream) credit(want int) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for stalled := false; ; stalled = true {
		if c.closed || s.isStopped() {
			return 0, errStreamStopped
		}
		if want == 0 {
			return 0, nil
		}
		if n := min(int64(want), int64(c.peer.MaxFrameSize), s.sendWindow, c.sendConn); n > 0 {
			s.sendWindow -= n
			c.sendConn -= n
			return int(n), nil
		}
		if !stalled {
			c.obs.Stalled()
		}
		c.cond.Wait()
	}
}

func (s *muxStream) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// write queues a frame of the stream's.
func (s *muxStream) write(typ muxwire.Type, flags uint8, p []byte) error {
	if s.cancelled.Load() || s.isStopped() {
		return errStreamStopped
	}
	if !s.c.out.frame(typ, flags, s.id, p) {
		return errStreamStopped
	}
	return nil
}

// writeWait queues a frame whose payload is not the stream's to keep, and
// waits until the writer has copied it.
func (s *muxStream) writeWait(typ muxwire.Type, flags uint8, p []byte) error {
	if s.cancelled.Load() || s.isStopped() {
		return errStreamStopped
	}
	if !s.c.out.frameWait(typ, flags, s.id, p, s.copied, s.stop) {
		return errStreamStopped
	}
	return nil
}

// end writes the stream's END, nothing when the client cancelled it or the
// connection has ended, and stops the stream: upstream's recv returns.
func (s *muxStream) end(st *status.Status, trailers metadata.MD, _ *failure) error {
	// The stream stops counting before its END can reach the client, which
	// may open the next stream as soon as it reads it.
	last := s.c.detach(s)
	defer s.c.closeIfIdle(last)
	if s.cancelled.Load() {
		return nil
	}
	p, err := muxwire.End(st, trailers)
	if err != nil {
		return err
	}
	if !s.c.out.frame(muxwire.TypeEnd, 0, s.id, p) {
		return errStreamStopped
	}
	return nil
}

// abort stops the stream: recv returns, and a send waiting for credit
// gives up. The session still writes its END, unless the client is gone.
func (s *muxStream) abort() {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.stop)
	}
	s.mu.Unlock()
	s.wake()
	s.c.mu.Lock()
	s.c.cond.Broadcast()
	s.c.mu.Unlock()
}

func (*muxStream) protocol() Protocol { return ProtocolMux }

// A muxWriter is a connection's one writer: frames queued by any
// goroutine go out in order, those ready at the same moment batched into
// one WebSocket message of at most the client's MAX_WS_MESSAGE.
type muxWriter struct {
	c *muxConn

	mu       sync.Mutex
	queue    []muxOut
	wake     chan struct{}
	done     chan struct{} // closed when run returns
	stopped  bool
	closeMsg *websocket.CloseError // close the connection once the queue is empty
	batch    []byte                // run's alone
	stall    watchdog              // run's alone
}

type muxOut struct {
	hdr    muxwire.Header
	p      []byte
	copied chan<- struct{} // told when p has been copied; nil for frames that own p
}

func (w *muxWriter) init(c *muxConn) {
	w.c = c
	w.wake = make(chan struct{}, 1)
	w.done = make(chan struct{})
}

// frame queues a frame whose payload the writer may keep; false when the
// writer has stopped.
func (w *muxWriter) frame(typ muxwire.Type, flags uint8, stream uint32, p []byte) bool {
	return w.push(muxOut{hdr: muxwire.Header{Length: len(p), Type: typ, Flags: flags, StreamID: stream}, p: p})
}

// frameWait queues a frame and waits until the writer has copied its
// payload, or has stopped.
func (w *muxWriter) frameWait(typ muxwire.Type, flags uint8, stream uint32, p []byte, copied chan struct{}, stop <-chan struct{}) bool {
	if !w.push(muxOut{hdr: muxwire.Header{Length: len(p), Type: typ, Flags: flags, StreamID: stream}, p: p, copied: copied}) {
		return false
	}
	select {
	case <-copied:
		return true
	case <-w.done:
		return false
	case <-stop:
		return w.withdraw(copied)
	}
}

// withdraw takes back a frame queued with frameWait, whose sender stops
// waiting: the writer must not read its payload later. It reports whether
// the frame had been copied already.
func (w *muxWriter) withdraw(copied chan struct{}) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, o := range w.queue {
		if o.copied == copied {
			w.queue = append(w.queue[:i], w.queue[i+1:]...)
			return false
		}
	}
	// The writer copies under w.mu and signals at once: the signal is there.
	<-copied
	return true
}

func (w *muxWriter) push(o muxOut) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.queue = append(w.queue, o)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// closeAfter closes the connection with code once the queue is empty:
// frames queued until then are written first.
func (w *muxWriter) closeAfter(code websocket.StatusCode, reason string) {
	w.mu.Lock()
	if w.closeMsg == nil {
		w.closeMsg = &websocket.CloseError{Code: code, Reason: reason}
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stop stops the writer without writing what is queued, and waits for it.
func (w *muxWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	<-w.done
}

func (w *muxWriter) run() {
	defer close(w.done)
	w.stall.init(w.c.h.cfg.writeTimeout, func() { _ = w.c.conn.CloseNow() }) // a client that takes no data
	defer w.stall.stop()
	for range w.wake {
		for {
			w.mu.Lock()
			if w.stopped {
				w.mu.Unlock()
				return
			}
			if len(w.queue) == 0 {
				cm := w.closeMsg
				if cm != nil {
					w.stopped = true // no more frames: they would come after the close
				}
				w.mu.Unlock()
				if cm != nil {
					_ = w.c.conn.Close(cm.Code, cm.Reason)
					return
				}
				break
			}
			w.c.mu.Lock()
			limit := int(w.c.peer.MaxWSMessage)
			w.c.mu.Unlock()
			w.batch = w.batch[:0]
			n := 0
			for _, o := range w.queue {
				if n > 0 && len(w.batch)+muxwire.HeaderSize+len(o.p) > limit {
					break
				}
				w.batch = muxwire.AppendHeader(w.batch, o.hdr)
				w.batch = append(w.batch, o.p...)
				if o.copied != nil {
					o.copied <- struct{}{}
				}
				n++
			}
			clear(w.queue[:n])
			w.queue = w.queue[n:]
			w.mu.Unlock()
			// The watchdog, not a context: a deadline context per write
			// costs a timer in the WebSocket layer each time.
			err := w.stall.guard(func() error { return w.c.conn.Write(context.Background(), websocket.MessageBinary, w.batch) })
			if err != nil {
				w.c.log.Debug("grpcws: write failed: closing", slog.Any("error", err))
				_ = w.c.conn.CloseNow() // the reader sees it and ends the streams
				w.mu.Lock()
				w.stopped = true
				w.mu.Unlock()
				return
			}
		}
	}
}
