package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// A session is one accepted connection and its RPC. The goroutine that
// calls serve owns it: serve runs downstream itself and upstream in one more
// goroutine, and returns when both have. Pings run from a timer and are
// waited for too.
type session struct {
	h     *Handler
	route *route
	json  bool
	conn  *websocket.Conn
	log   *slog.Logger
	start time.Time

	cancel context.CancelFunc // cancels the backend stream; set before the session is shared

	mu       sync.Mutex
	failed   *failure // the first failure; overrides the backend's status
	ending   bool     // downstream is writing the end; read errors are the close handshake
	stopped  bool     // no more pings
	pinger   *time.Timer
	idler    *time.Timer // ends an idle RPC; nil without an idle timeout
	pinging  sync.WaitGroup
	watchdog *time.Timer // closes a connection whose write stalls
	stalled  atomic.Bool
	sending  atomic.Bool // upstream is in SendMsg: pongs go unread meanwhile
	outcome  codes.Code  // what ended the RPC, for the log
	obs      StreamObserver
	lastMsg  atomic.Int64 // time.Now().UnixNano() of the last message either way, for the idle timeout
	msgsIn   int64        // written by upstream only
	bytesIn  int64
	msgsOut  int64 // written by downstream only
	bytesOut int64
}

func newSession(h *Handler, rt *route, json bool, conn *websocket.Conn, log *slog.Logger) *session {
	s := &session{h: h, route: rt, json: json, conn: conn, log: log, start: time.Now(), cancel: func() {}, obs: nopObserver{}}
	s.watchdog = time.AfterFunc(time.Hour, s.writeStalled)
	s.watchdog.Stop()
	return s
}

// fail ends the RPC for a reason of the bridge's own. The first failure
// wins; every one cancels the backend stream, which makes downstream end.
func (s *session) fail(f *failure) {
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return // the status is decided and on its way
	}
	if s.failed == nil {
		s.failed = f
	}
	cancel := s.cancel
	s.mu.Unlock()
	cancel()
}

func (s *session) failure() *failure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// pumps are the protocol-specific halves of a session: protocol v1's, or
// grpc-websockets'. end writes the final status and closes the connection.
type pumps interface {
	upstream(stream grpc.ClientStream)
	downstream(stream grpc.ClientStream)
	end(stream grpc.ClientStream, err error)
}

// serve opens the backend stream and pumps until the RPC ends.
func (s *session) serve(ctx context.Context, md metadata.MD, timeout time.Duration) {
	s.run(ctx, md, timeout, s)
}

// run opens the backend stream and runs p until the RPC ends: upstream in
// a goroutine of its own, downstream in the caller's.
func (s *session) run(ctx context.Context, md metadata.MD, timeout time.Duration, p pumps) {
	defer s.conn.CloseNow() // the backstop; a no-op after a clean close

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	s.mu.Lock()
	s.cancel = cancel
	failed := s.failed
	s.mu.Unlock()
	if failed != nil { // Shutdown came first
		cancel()
	}

	ctx = metadata.NewOutgoingContext(ctx, md)
	stream, err := s.route.conn.NewStream(ctx, s.route.desc, s.route.Method,
		grpc.ForceCodecV2(rawCodec{}),
		grpc.MaxCallRecvMsgSize(s.route.maxMsg),
		grpc.MaxCallSendMsgSize(s.route.maxMsg))
	s.obs = s.h.cfg.observer.Accepted(s.route.Route)
	if err != nil {
		p.end(nil, err)
		s.logEnd()
		return
	}

	s.startTimers()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.upstream(stream)
	}()
	p.downstream(stream)
	wg.Wait()
	s.stopTimers()
	s.logEnd()
}

// upstream alone reads from the client and sends to the backend. It reads
// the next frame only when the backend has taken the previous message.
func (s *session) upstream(stream grpc.ClientStream) {
	// Reads are ended by closing the connection, never by a context:
	// cancelling a read's context closes the connection too early.
	ctx := context.Background()
	halfClosed := false // no more messages from the client
	sendDone := false   // the backend stream ended: drop what the client still sends
	closeSend := func() {
		halfClosed = true
		if !sendDone {
			_ = stream.CloseSend() // fails only when the stream has ended; RecvMsg reports that
		}
	}
	var out frame // reused: Marshal takes its buffers
	for {
		typ, r, err := s.conn.Reader(ctx)
		if err != nil {
			s.readFailed(err)
			return
		}
		buf, err := readMessage(r)
		if err != nil {
			s.readFailed(err)
			return
		}
		b := buf.ReadOnlyData()
		if typ == websocket.MessageText {
			if f := s.control(b, &halfClosed); f != nil {
				buf.Free()
				switch f {
				case errSkip:
					continue
				case errEndSend:
					closeSend()
					continue
				}
				s.fail(f)
				return
			}
			// a JSON message
		}
		if halfClosed {
			buf.Free()
			s.fail(invalidArgument("grpcws: message after end of send"))
			return
		}
		msg, f := s.decode(typ, b, buf)
		if f != nil {
			s.fail(f)
			return
		}
		s.msgsIn++
		s.bytesIn += int64(len(b))
		s.obs.ClientMessage(len(b))
		s.active()
		if sendDone {
			msg.Free()
		} else {
			out.Data = msg
			s.sending.Store(true)
			err := stream.SendMsg(&out)
			s.sending.Store(false)
			if err != nil {
				// io.EOF: the RPC ended, and RecvMsg returns its status.
				sendDone = true
			}
			if out.Data != nil { // SendMsg failed before it took the buffers
				out.Data.Free()
				out.Data = nil
			}
		}
		if !s.route.ClientStreams {
			closeSend()
		}
	}
}

// Results of control for frames that end no RPC.
var (
	errSkip    = &failure{}
	errEndSend = &failure{}
)

// control handles a text frame: a control frame returns errSkip, errEndSend
// or a failure; a JSON message returns nil.
func (s *session) control(b []byte, halfClosed *bool) *failure {
	if !utf8.Valid(b) {
		return &failure{status: status.New(codes.InvalidArgument, "grpcws: text frame is not valid UTF-8"), code: closeInvalidUTF8}
	}
	if len(b) == 0 || b[0] != '#' {
		if !s.json {
			return invalidArgument("grpcws: text frame that is not a control frame (those start with '#'): send messages as binary frames")
		}
		return nil
	}
	c, err := parseClientControl(b)
	if err != nil {
		return invalidArgument("grpcws: malformed control frame: " + err.Error())
	}
	switch {
	case c.GetEndSend() == nil:
		return errSkip // a control frame of a later version
	case *halfClosed:
		return invalidArgument("grpcws: end of send after end of send")
	case !s.route.ClientStreams:
		return invalidArgument("grpcws: end of send before the request: this method takes exactly one message")
	}
	return errEndSend
}

// decode turns a message frame from the client, b in buf, into the
// protobuf message to send. It consumes buf: it frees it, or passes it on in
// the result.
func (s *session) decode(typ websocket.MessageType, b []byte, buf mem.Buffer) (mem.BufferSlice, *failure) {
	switch {
	case typ == websocket.MessageBinary && s.json:
		buf.Free()
		return nil, invalidArgument("grpcws: binary frame in the JSON encoding: send messages as text frames")
	case s.json:
		defer buf.Free()
		m := s.route.input.New().Interface()
		if err := (protojson.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
			return nil, invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s in JSON: %v", m.ProtoReflect().Descriptor().FullName(), err))
		}
		out, err := proto.Marshal(m)
		if err != nil {
			return nil, invalidArgument(fmt.Sprintf("grpcws: message: %v", err))
		}
		return mem.BufferSlice{mem.SliceBuffer(out)}, nil
	case s.h.cfg.validation:
		m := s.route.input.New().Interface()
		if err := (proto.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
			buf.Free()
			return nil, invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s: %v", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	return mem.BufferSlice{buf}, nil
}

// readFailed classifies the error that ended reading from the client.
func (s *session) readFailed(err error) {
	s.mu.Lock()
	ending := s.ending
	s.mu.Unlock()
	if ending {
		return // the close handshake downstream started, or its aftermath
	}
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		s.fail(&failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client closed the connection (%d) before the end", ce.Code)})
	case errors.Is(err, websocket.ErrMessageTooBig):
		// The WebSocket layer has already closed with 1009.
		s.fail(&failure{silent: true, code: closeTooBig, status: status.Newf(codes.ResourceExhausted,
			"grpcws: client message larger than %d bytes", s.route.maxMsg)})
	case connectionGone(err):
		s.fail(&failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client connection lost: %v", err)})
	default:
		// The client broke the WebSocket protocol (an unmasked frame, a
		// bad length, compressed data that does not inflate). The
		// WebSocket layer does not always say so: close with 1002.
		s.fail(&failure{closeOnly: true, code: websocket.StatusProtocolError, status: status.Newf(codes.Canceled,
			"grpcws: client broke the WebSocket protocol: %v", err)})
	}
}

// connectionGone reports whether a read error means the connection ended
// (closed, reset, timed out) rather than that the client broke the
// protocol.
func connectionGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// downstream alone receives from the backend and writes to the client, and
// it alone writes the end frame and closes the connection. It receives the
// next message only when the client's socket has taken the previous one.
func (s *session) downstream(stream grpc.ClientStream) {
	// Header blocks until the backend sends headers or the RPC ends. nil
	// means the RPC ended without headers (trailers-only).
	if md, _ := stream.Header(); md != nil {
		b, err := headersFrame(md)
		if err == nil {
			err = s.write(websocket.MessageText, b)
		}
		if err != nil {
			s.writeFailed(err)
		}
	}
	var err error
	var in frame // reused: each message's buffers are freed once written
	for s.failure() == nil {
		if err = stream.RecvMsg(&in); err != nil {
			break
		}
		n, werr := s.writeMessage(in.Data)
		in.Data.Free()
		in.Data = nil
		if werr != nil {
			if s.failure() == nil {
				s.writeFailed(werr)
			}
			break
		}
		s.msgsOut++
		s.bytesOut += int64(n)
		s.obs.ServerMessage(n)
		s.active()
	}
	if err == nil {
		// A failure stopped the loop: the backend stream is cancelled;
		// wait for it to end so its trailers and goroutines are released.
		for err == nil {
			if err = stream.RecvMsg(&in); err == nil {
				in.Data.Free()
				in.Data = nil
			}
		}
	}
	s.end(stream, err)
}

// writeMessage writes one message from the backend to the client and
// returns the bytes written.
func (s *session) writeMessage(data mem.BufferSlice) (int, error) {
	if s.json {
		out, err := s.encodeJSON(data.Materialize())
		if err != nil {
			s.fail(&failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)})
			return 0, err
		}
		return len(out), s.write(websocket.MessageText, out)
	}
	if len(data) == 1 {
		b := data[0].ReadOnlyData()
		return len(b), s.write(websocket.MessageBinary, b)
	}
	// Large messages arrive in several buffers: one WebSocket message.
	return data.Len(), s.writeBuffers(data)
}

// end writes the end frame for the RPC's final status and closes the
// connection. stream is nil when it could not be opened.
func (s *session) end(stream grpc.ClientStream, err error) {
	s.mu.Lock()
	s.ending = true
	f := s.failed
	s.mu.Unlock()

	var st *status.Status
	code := websocket.StatusCode(0)
	var trailers metadata.MD
	switch {
	case f != nil:
		st, code = f.status, f.closeCode()
	case errors.Is(err, io.EOF):
		st = status.New(codes.OK, "")
	default:
		st = status.Convert(err)
		if st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message larger than max") {
			// gRPC's own receive limit: a backend message over ours.
			code = closeTooBig
		}
	}
	if f == nil && stream != nil {
		trailers = stream.Trailer()
	}
	if code == 0 {
		code = closeCode(st)
	}
	s.outcome = st.Code()
	if f != nil && f.silent {
		_ = s.conn.CloseNow()
		return
	}
	if f != nil && f.closeOnly {
		_ = s.conn.Close(code, "")
		return
	}
	b, err := endFrame(st, trailers)
	if err == nil {
		err = s.write(websocket.MessageText, b)
	}
	if err != nil {
		_ = s.conn.CloseNow()
		return
	}
	_ = s.conn.Close(code, closeReason(st.Message()))
}

// errWriteStalled is what a write returns when the watchdog closed the
// connection.
var errWriteStalled = errors.New("write stalled")

// write writes one frame. Writes take no context, which would cost a timer
// per frame: the session's watchdog closes the connection instead when one
// write takes longer than the write timeout.
func (s *session) write(typ websocket.MessageType, b []byte) error {
	s.watchdog.Reset(s.h.cfg.writeTimeout)
	err := s.conn.Write(context.Background(), typ, b)
	return s.wrote(err)
}

// writeBuffers writes data as one binary message.
func (s *session) writeBuffers(data mem.BufferSlice) error {
	s.watchdog.Reset(s.h.cfg.writeTimeout)
	w, err := s.conn.Writer(context.Background(), websocket.MessageBinary)
	if err == nil {
		for _, b := range data {
			if _, err = w.Write(b.ReadOnlyData()); err != nil {
				break
			}
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	return s.wrote(err)
}

func (s *session) wrote(err error) error {
	if !s.watchdog.Stop() && s.stalled.Load() {
		return errWriteStalled
	}
	return err
}

// writeStalled runs when a write took longer than the write timeout.
func (s *session) writeStalled() {
	s.stalled.Store(true)
	s.fail(&failure{silent: true, status: status.Newf(codes.Unavailable, "grpcws: client took no data for %v", s.h.cfg.writeTimeout)})
	_ = s.conn.CloseNow()
}

func (s *session) writeFailed(err error) {
	if s.failure() != nil {
		return // the connection was closed for another reason
	}
	// The client went away, as when a read finds it gone: not a failure.
	s.fail(&failure{silent: true, status: status.New(codes.Canceled, "grpcws: client connection lost: "+err.Error())})
}

func (s *session) encodeJSON(b []byte) ([]byte, error) {
	m := s.route.output.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{Resolver: s.h.routes.types}.Marshal(m)
}

// startTimers starts pinging the client every ping interval, and the idle
// timeout. Both run from timers, so an idle connection costs no goroutine
// between pings.
func (s *session) startTimers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.h.cfg.pingInterval > 0 {
		s.pinger = time.AfterFunc(s.h.cfg.pingInterval, s.ping)
	}
	if s.route.idle > 0 {
		s.active()
		s.idler = time.AfterFunc(s.route.idle, s.checkIdle)
	}
}

// active records a message, for the idle timeout.
func (s *session) active() {
	if s.route.idle > 0 {
		s.lastMsg.Store(time.Now().UnixNano())
	}
}

// checkIdle ends the RPC when no message went either way for the idle
// timeout, and else waits for the rest of it.
func (s *session) checkIdle() {
	quiet := time.Duration(time.Now().UnixNano() - s.lastMsg.Load())
	if quiet < s.route.idle {
		s.mu.Lock()
		if !s.stopped {
			s.idler.Reset(s.route.idle - quiet)
		}
		s.mu.Unlock()
		return
	}
	s.fail(&failure{status: status.Newf(codes.Unavailable, "grpcws: idle timeout: no message for %v", s.route.idle), code: closeGoingAway})
}

func (s *session) ping() {
	s.mu.Lock()
	if s.stopped || s.ending || s.failed != nil {
		s.mu.Unlock()
		return
	}
	s.pinging.Add(1)
	s.mu.Unlock()
	defer s.pinging.Done()

	ctx, cancel := context.WithTimeout(context.Background(), s.h.cfg.pingTimeout)
	err := s.conn.Ping(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if err != nil && timedOut && s.sending.Load() {
		// Upstream is blocked handing a message to a backend that does not
		// take it, so nothing reads the pong: a missing pong is no news
		// about the client. A ping that could not be written is.
		err = nil
	}
	if err != nil {
		s.fail(&failure{silent: true, status: status.Newf(codes.Unavailable,
			"grpcws: client did not answer a ping within %v", s.h.cfg.pingTimeout)})
		_ = s.conn.CloseNow() // unblocks a write to a client that is gone
		return
	}
	s.mu.Lock()
	if !s.stopped {
		s.pinger.Reset(s.h.cfg.pingInterval)
	}
	s.mu.Unlock()
}

func (s *session) stopTimers() {
	s.mu.Lock()
	s.stopped = true
	if s.pinger != nil {
		s.pinger.Stop()
	}
	if s.idler != nil {
		s.idler.Stop()
	}
	s.mu.Unlock()
	s.pinging.Wait()
	s.watchdog.Stop()
}

// logEnd reports the RPC's end to the observer and writes its access
// line.
func (s *session) logEnd() {
	d := time.Since(s.start)
	s.obs.Ended(s.outcome, d)
	level := slog.LevelDebug
	if s.h.cfg.accessLog {
		level = slog.LevelInfo
	}
	f := s.failure()
	switch {
	case f != nil && f.status.Code() == codes.Canceled:
		// the client went away: expected
	case f != nil && f.code == closeGoingAway:
		// shutdown or idle: expected
	case f != nil:
		level = slog.LevelWarn
	case s.outcome != codes.OK:
		level = max(level, slog.LevelInfo)
	}
	attrs := []slog.Attr{
		slog.String("code", s.outcome.String()),
		slog.Duration("duration", d),
		slog.Int64("msgs_in", s.msgsIn),
		slog.Int64("msgs_out", s.msgsOut),
		slog.Int64("bytes_in", s.bytesIn),
		slog.Int64("bytes_out", s.bytesOut),
	}
	if f != nil {
		attrs = append(attrs, slog.String("cause", f.status.Message()))
	}
	s.log.LogAttrs(context.Background(), level, "grpcws: rpc", attrs...)
}
