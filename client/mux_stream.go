package client

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// muxStream is one RPC on a multiplexed socket. Its fields below call are
// guarded by the socket's mu. The socket's reader queues what arrives and
// records the outcome; SendMsg hands the writer a message and waits until
// it has all gone out; RecvMsg takes chunks off the queue, which grants the
// bridge credit; its context's end, through onDone, cancels the stream.
type muxStream struct {
	call
	conn *Conn
	m    *muxConn
	id   uint32

	finished bool // the outcome is recorded; no more frames go out for it

	out        *outgoing // the message being sent, if any
	sendWindow int64     // the stream's window for our DATA

	chunks     []muxChunk    // DATA received, not yet taken by RecvMsg
	recvWindow int64         // what the bridge may still send on the stream
	unacked    int64         // bytes taken off chunks, not yet granted back
	recvWake   chan struct{} // one token: a chunk arrived, or the stream ended
}

// outgoing is a message SendMsg waits on while the writer sends it.
type outgoing struct {
	b    []byte
	off  int           // how much has gone out
	done chan struct{} // closed when it has all gone out, or the stream ended
	err  error         // io.EOF if the stream ended first
}

// muxChunk is the payload of one DATA frame.
type muxChunk struct {
	b    []byte
	last bool // END_MESSAGE
}

var _ grpc.ClientStream = (*muxStream)(nil)

// newMuxStream opens a stream on the socket, connecting first if needed.
// It waits while the socket has the bridge's MAX_CONCURRENT_STREAMS open,
// as gRPC waits on HTTP/2's.
func (c *Conn) newMuxStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts []grpc.CallOption) (grpc.ClientStream, error) {
	route, err := v1wire.RouteName(method)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	if err := checkContext(ctx); err != nil {
		return nil, err
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	s := &muxStream{conn: c, recvWake: make(chan struct{}, 1)}
	s.init(ctx, desc, c.maxMsg, opts)
	s.ctx, s.cancel = context.WithCancel(ctx)
	if !c.track(&s.call) {
		s.cancel()
		return nil, errConnClosed
	}
	fail := func(err error) (grpc.ClientStream, error) {
		if cerr := s.clientErr(); cerr != nil {
			err = cerr
		}
		c.untrack(&s.call)
		s.cancel()
		return nil, err
	}
	for {
		m, err := c.socket(s.ctx)
		if err != nil {
			return fail(err)
		}
		var timeout string
		if deadline, ok := s.ctx.Deadline(); ok {
			d := time.Until(deadline)
			if d <= 0 {
				return fail(status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error()))
			}
			timeout = grpcheader.EncodeTimeout(d)
		}
		payload, err := muxwire.Open(route, md, timeout)
		if err != nil {
			return fail(status.Errorf(codes.Internal, "grpcws: %v", err))
		}
		wait, err := m.open(s, payload)
		if err == nil {
			break
		}
		if !errors.Is(err, errRetry) {
			return fail(err)
		}
		if wait != nil {
			select {
			case <-wait:
			case <-s.ctx.Done():
				return fail(s.contextErr())
			}
		}
	}
	context.AfterFunc(s.ctx, s.onDone)
	return s, nil
}

// onDone runs once the stream's context is done: cancelled, past its
// deadline, closed by Close, or released after the stream ended. A stream
// still open is cancelled (CANCEL); an ended one drops what RecvMsg left.
func (s *muxStream) onDone() {
	m := s.m
	m.mu.Lock()
	m.endStream(s, s.contextErr(), nil, endByClient)
	m.drop(s)
	m.mu.Unlock()
	s.conn.untrack(&s.call)
}

// SendMsg sends one message, in DATA frames no larger than the bridge's
// MAX_FRAME_SIZE. It returns once the message has gone to the socket's
// writer, waiting while the stream's or the connection's window is
// exhausted. Like gRPC's, it returns io.EOF when the RPC has ended,
// whatever ended it: RecvMsg then returns the status. Errors it makes
// itself (marshalling, size, misuse) it returns as a status.
func (s *muxStream) SendMsg(msg any) error {
	b, err := s.prepareSend(msg)
	if err != nil {
		return err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.checkSend(); err != nil {
		return err
	}
	o := s.m.send(s, b)
	if o == nil {
		return io.EOF
	}
	select {
	case <-o.done:
	case <-s.ctx.Done():
		return io.EOF // onDone cancels the stream
	}
	if o.err != nil {
		return io.EOF
	}
	s.sentMsgs++
	return nil
}

// send hands the writer a message of s, or returns nil if s has ended.
func (m *muxConn) send(s *muxStream, b []byte) *outgoing {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.finished {
		return nil
	}
	o := &outgoing{b: b, done: make(chan struct{})}
	s.out = o
	m.sendq = append(m.sendq, s)
	m.wakeWriter()
	return o
}

// CloseSend half-closes the request stream with END_SEND. For methods
// whose client does not stream the bridge half-closes after the request,
// so there is nothing to send. Like gRPC's, it reports no errors: RecvMsg
// has the status.
func (s *muxStream) CloseSend() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.sentEnd {
		return nil
	}
	s.sentEnd = true
	if !s.desc.ClientStreams {
		return nil
	}
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	// A message still going out belongs to a SendMsg that gave up on a
	// done context: the stream is being cancelled.
	if !s.finished && s.out == nil {
		m.queue(muxwire.TypeEndSend, 0, s.id, nil)
	}
	return nil
}

// RecvMsg receives one message into m. It returns io.EOF when the RPC ended
// with OK, and the status error when it did not. Messages that arrived
// before the end are received first.
func (s *muxStream) RecvMsg(m any) error {
	b, err := s.m.recv(s)
	if err != nil {
		return err
	}
	if err := s.unmarshal(b, m); err != nil {
		s.cancel()
		return status.Errorf(codes.Internal, "grpcws: failed to unmarshal the received message: %v", err)
	}
	return nil
}

// recv assembles s's next message from its queue, waiting for chunks as
// they come. Each chunk taken grants credit, so the bridge sends on while a
// message larger than the window is assembled, and stops once the window
// is full of chunks that RecvMsg does not take.
func (m *muxConn) recv(s *muxStream) ([]byte, error) {
	var msg []byte
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		m.checkContext(s)
		for len(s.chunks) > 0 {
			c := s.chunks[0]
			s.chunks[0] = muxChunk{}
			s.chunks = s.chunks[1:]
			m.consumed(s, int64(len(c.b)))
			if len(msg)+len(c.b) > s.maxRecv {
				err := status.Errorf(codes.ResourceExhausted, "grpcws: received message larger than max (%d vs. %d)", len(msg)+len(c.b), s.maxRecv)
				m.endStream(s, err, nil, endByClient)
				return nil, err
			}
			msg = append(msg, c.b...)
			if c.last {
				m.release(s)
				return msg, nil
			}
		}
		if s.finished {
			// A partial message, cut short by the end, is dropped.
			m.release(s)
			if s.err == nil {
				return nil, io.EOF
			}
			return nil, s.err
		}
		m.mu.Unlock()
		<-s.recvWake
		m.mu.Lock()
	}
}

// checkContext ends a stream whose context is done now, rather than when
// onDone runs, so that RecvMsg returns the context's status, not a message
// queued before the cancel.
func (m *muxConn) checkContext(s *muxStream) {
	if s.ctx.Err() != nil {
		m.endStream(s, s.contextErr(), nil, endByClient)
		m.drop(s)
	}
}

func (s *muxStream) abort() {
	s.cancel()
	<-s.ended
}

// finish waits for the end of a unary RPC after its response.
func (s *muxStream) finish() error {
	m := s.m
	m.mu.Lock()
	m.checkContext(s)
	for len(s.chunks) == 0 && !s.finished {
		m.mu.Unlock()
		<-s.recvWake
		m.mu.Lock()
	}
	if len(s.chunks) > 0 {
		m.mu.Unlock()
		s.cancel()
		<-s.ended
		return status.Error(codes.Internal, "grpcws: more than one response to a unary RPC")
	}
	err := s.err
	m.release(s)
	m.mu.Unlock()
	return err
}
