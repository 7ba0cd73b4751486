package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// kind is an RPC kind; each has its method of EchoService.
type kind int

const (
	unary kind = iota
	serverStreaming
	clientStreaming
	bidi
	kinds
)

var (
	kindNames = [kinds]string{"unary", "server-streaming", "client-streaming", "bidi"}
	routes    = [kinds]string{
		"examples.echo.v1.EchoService.Echo",
		"examples.echo.v1.EchoService.Ticker",
		"examples.echo.v1.EchoService.Upload",
		"examples.echo.v1.EchoService.Bidi",
	}
)

// dropMode is how the client leaves an RPC before its end, if it does.
type dropMode int

const (
	keep      dropMode = iota
	dropReset          // TCP reset
	dropFIN            // TCP close, no WebSocket close
	dropClose          // WebSocket close 1000 before the end: a cancel
	dropModes

	// dropCancel is a CANCEL of one stream of grpcws.mux.v1 (the
	// multiplexed mode's per-RPC drop; the other modes drop a whole
	// socket there).
	dropCancel = dropModes
)

var dropNames = [dropModes + 1]string{"", "TCP reset", "TCP close", "WebSocket close", "CANCEL"}

// Pacing of every RPC, chosen at random within these bounds.
const (
	minLife     = time.Second
	minInterval = 500 * time.Millisecond // between messages of a stream
	maxInterval = 3 * time.Second
	maxPayload  = 256
	// streamSlack is how long an RPC may take past its planned life before
	// it counts as hung.
	streamSlack = 30 * time.Second
)

// plan is what one RPC will do.
type plan struct {
	id       int64
	kind     kind
	life     time.Duration // how long it should last
	msgs     int           // messages the side that streams sends
	interval time.Duration // between them
	payload  int           // bytes of payload per message, besides the sequence number
	drop     dropMode
	dropAt   time.Duration // after the handshake
}

func newPlan(rng *rand.Rand, id int64, maxLife time.Duration, dropFraction float64) plan {
	p := plan{
		id:       id,
		kind:     kind(rng.IntN(int(kinds))),
		life:     minLife + time.Duration(rng.Int64N(int64(maxLife-minLife))),
		interval: minInterval + time.Duration(rng.Int64N(int64(maxInterval-minInterval))),
		payload:  rng.IntN(maxPayload + 1),
	}
	p.msgs = max(1, int(p.life/p.interval))
	if rng.Float64() < dropFraction {
		p.drop = dropMode(1 + rng.IntN(int(dropModes-1)))
		p.dropAt = time.Duration(rng.Int64N(int64(p.life)))
	}
	return p
}

// result is how one RPC went, as its client saw it.
type result struct {
	plan
	started, ended       time.Time
	endAt                time.Time // when the end frame came
	dialErr              error
	sent                 int // messages written
	received             int // messages read
	end                  *grpcwsv1.Status
	close                websocket.StatusCode
	reason               string
	dropped              bool // the client dropped it before its end
	mux                  bool // a stream of grpcws.mux.v1: no close code of its own
	hung                 bool // it outlived its life and the slack
	lost, dup, reordered int
	protocol             []string // breaches of protocol v1
}

// dialers connect from several source addresses, so that many connections
// and their TIME_WAITs do not run out of ports.
type dialers struct {
	clients []*http.Client
}

// connSlotKey is the context key of the *connSlot that a dial fills in.
type connSlotKey struct{}

// connSlot receives the TCP connection of one handshake, so that the client
// can reset it.
type connSlot struct {
	mu   sync.Mutex
	conn net.Conn
}

func newDialers(n int) *dialers {
	d := &dialers{}
	for i := range n {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i))}, Timeout: 30 * time.Second}
		d.clients = append(d.clients, &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := nd.DialContext(ctx, network, addr)
				if slot, ok := ctx.Value(connSlotKey{}).(*connSlot); ok && err == nil {
					slot.mu.Lock()
					slot.conn = c
					slot.mu.Unlock()
				}
				return c, err
			},
			// Each handshake dials its own connection, so that the slot
			// holds the connection of this RPC.
			DisableKeepAlives: true,
		}})
	}
	return d
}

// stream runs one RPC to its end.
type stream struct {
	p    plan
	conn *websocket.Conn
	slot *connSlot
	res  result
	seq  seqTracker

	mu      sync.Mutex
	endSeen bool // the end frame came: too late to drop
	dropped bool
}

func runStream(ctx context.Context, d *dialers, url string, p plan) result {
	s := &stream{p: p, slot: &connSlot{}}
	s.res.plan = p
	s.res.started = time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.life+streamSlack)
	defer cancel()

	c, res, err := websocket.Dial(context.WithValue(ctx, connSlotKey{}, s.slot), url, &websocket.DialOptions{
		HTTPClient:      d.clients[int(p.id)%len(d.clients)],
		Subprotocols:    []string{routes[p.kind]},
		CompressionMode: websocket.CompressionDisabled,
	})
	if res != nil && res.Body != nil {
		res.Body.Close()
	}
	if err != nil {
		s.res.dialErr = err
		s.res.ended = time.Now()
		return s.res
	}
	s.conn = c
	if got := c.Subprotocol(); got != routes[p.kind] {
		s.protocol("the bridge selected subprotocol %q", got)
	}
	s.seq.init(p.msgs)

	read := make(chan struct{})
	go func() {
		defer close(read)
		s.read(ctx)
	}()
	s.write(ctx, read)
	<-read
	c.CloseNow()
	s.res.ended = time.Now()
	s.finish(ctx)
	return s.res
}

func (s *stream) protocol(format string, args ...any) {
	s.res.protocol = append(s.res.protocol, fmt.Sprintf(format, args...))
}

// write sends the plan's messages at its pace and, for the kinds whose
// client streams, the end of send; then it waits for the end. It drops the
// RPC when the plan says so. It returns early when the RPC ends.
func (s *stream) write(ctx context.Context, read <-chan struct{}) {
	var dropC <-chan time.Time
	if s.p.drop != keep {
		t := time.NewTimer(s.p.dropAt)
		defer t.Stop()
		dropC = t.C
	}
	// wait waits for d and reports whether to go on.
	wait := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-read:
		case <-ctx.Done():
		case <-dropC:
			s.drop()
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
		if err := s.conn.Write(ctx, websocket.MessageBinary, s.request(seq)); err != nil {
			return // the RPC ended; read has its outcome
		}
		s.res.sent++
	}
	if s.p.kind == clientStreaming || s.p.kind == bidi {
		if err := s.conn.Write(ctx, websocket.MessageText, v1wire.EndSend); err != nil {
			return
		}
	}
	wait(s.p.life + streamSlack) // ctx ends it first
}

// drop leaves the RPC as the plan says, unless its end frame has come.
func (s *stream) drop() {
	s.mu.Lock()
	if s.endSeen {
		s.mu.Unlock()
		return
	}
	s.dropped = true
	s.mu.Unlock()
	switch s.p.drop {
	case dropReset:
		s.slot.mu.Lock()
		c := s.slot.conn
		s.slot.mu.Unlock()
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
			_ = tc.Close()
			return
		}
		s.conn.CloseNow()
	case dropFIN:
		s.conn.CloseNow()
	case dropClose:
		_ = s.conn.Close(v1wire.CloseNormal, "soak: client leaves")
	}
}

// payload returns the payload of message seq: bytes derived from the
// stream and the sequence number, so that the echo can be checked.
func (s *stream) payload(seq int) []byte {
	b := make([]byte, s.p.payload)
	x := uint64(s.p.id)*0x9E3779B97F4A7C15 + uint64(seq)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

// request encodes message seq of the plan.
func (s *stream) request(seq int) []byte {
	id := strconv.FormatInt(s.p.id, 10)
	var m proto.Message
	switch s.p.kind {
	case unary:
		m = &echov1.EchoRequest{Message: id, Payload: s.payload(seq), Delay: durationpb.New(s.p.life)}
	case serverStreaming:
		m = &echov1.TickerRequest{Message: id, Count: int32(s.p.msgs), Interval: durationpb.New(s.p.interval)}
	case clientStreaming:
		chunk := binary.BigEndian.AppendUint64(nil, uint64(seq))
		m = &echov1.UploadRequest{Chunk: append(chunk, s.payload(seq)...)}
	case bidi:
		m = &echov1.BidiRequest{Message: strconv.Itoa(seq), Payload: s.payload(seq)}
	}
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err) // the messages above always marshal
	}
	return b
}

// read reads frames until the connection closes, checking each against
// protocol v1 and the plan.
func (s *stream) read(ctx context.Context) {
	headers := false
	for {
		typ, b, err := s.conn.Read(ctx)
		if err != nil {
			s.res.close = websocket.CloseStatus(err)
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				s.res.reason = ce.Reason
			}
			if ctx.Err() != nil {
				s.res.hung = true
			}
			return
		}
		if s.res.end != nil {
			s.protocol("a frame after the end frame")
			continue
		}
		if typ == websocket.MessageBinary {
			s.res.received++
			s.message(b)
			continue
		}
		c, err := v1wire.ParseServerControl(b)
		if err != nil {
			s.protocol("a malformed control frame: %v", err)
			continue
		}
		switch {
		case c.GetHeaders() != nil:
			if headers || s.res.received > 0 {
				s.protocol("headers after headers or messages")
			}
			headers = true
		case c.GetEnd() != nil:
			s.mu.Lock()
			s.endSeen = true
			s.mu.Unlock()
			s.res.endAt = time.Now()
			s.res.end = c.GetEnd().GetStatus()
			if s.res.end == nil {
				s.res.end = &grpcwsv1.Status{}
			}
		}
	}
}

// message checks one message from the bridge.
func (s *stream) message(b []byte) {
	id := strconv.FormatInt(s.p.id, 10)
	switch s.p.kind {
	case unary:
		var m echov1.EchoResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			s.protocol("a response that does not parse: %v", err)
			return
		}
		if m.GetMessage() != id || !bytes.Equal(m.GetPayload(), s.payload(1)) {
			s.protocol("an echo that differs from the request")
		}
		if s.res.received > 1 {
			s.res.dup++
		}
	case serverStreaming:
		var m echov1.TickerResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			s.protocol("a response that does not parse: %v", err)
			return
		}
		if m.GetMessage() != id {
			s.protocol("a tick for another stream")
		}
		s.seq.add(int(m.GetIndex()))
	case clientStreaming:
		var m echov1.UploadResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			s.protocol("a response that does not parse: %v", err)
			return
		}
		if s.res.received > 1 {
			s.res.dup++
			return
		}
		// The backend checked the order; the count says none went missing.
		total := int64(s.p.msgs) * int64(8+s.p.payload)
		if got := int(m.GetMessages()); got < s.p.msgs {
			s.res.lost += s.p.msgs - got
		} else if got > s.p.msgs {
			s.res.dup += got - s.p.msgs
		} else if m.GetBytes() != total {
			s.protocol("upload counted %d bytes; sent %d", m.GetBytes(), total)
		}
	case bidi:
		var m echov1.BidiResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			s.protocol("a response that does not parse: %v", err)
			return
		}
		// The backend numbers what it received; the message is what the
		// client numbered. They differ when a message went missing or
		// came twice on the way up.
		i := int(m.GetIndex())
		switch sent, err := strconv.Atoi(m.GetMessage()); {
		case err != nil:
			s.protocol("a bidi response with message %q", m.GetMessage())
		case sent > i:
			s.res.lost += sent - i
		case sent < i:
			s.res.dup++
		case !bytes.Equal(m.GetPayload(), s.payload(sent)):
			s.protocol("a bidi echo that differs from the request")
		}
		s.seq.add(i)
	}
}

// finish totals the sequence checks once the RPC has ended.
func (s *stream) finish(ctx context.Context) {
	s.mu.Lock()
	s.res.dropped = s.dropped
	s.mu.Unlock()
	if s.res.dropped {
		s.res.hung = false // the client ended it
	}
	s.res.dup += s.seq.dup
	s.res.reordered += s.seq.reordered
	if s.res.end.GetCode() != 0 || s.res.end == nil || s.res.dropped {
		return // loss is expected where the RPC did not end OK
	}
	switch s.p.kind {
	case unary, clientStreaming:
		if s.res.received == 0 {
			s.res.lost++
		}
	case serverStreaming, bidi:
		s.res.lost += s.p.msgs - s.seq.distinct
	}
}

// seqTracker checks that sequence numbers 1, 2, ..., n arrive once each and
// in order.
type seqTracker struct {
	seen           []bool
	top, distinct  int
	dup, reordered int
}

func (t *seqTracker) init(n int) { t.seen = make([]bool, n+1) }

func (t *seqTracker) add(i int) {
	switch {
	case i < 1 || i >= len(t.seen):
		t.dup++ // more messages than were asked for
	case t.seen[i]:
		t.dup++
	default:
		t.seen[i] = true
		t.distinct++
		if i < t.top {
			t.reordered++
		}
		t.top = max(t.top, i)
	}
}
