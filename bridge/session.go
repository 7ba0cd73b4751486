package bridge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
	pinging  sync.WaitGroup
	outcome  string // what ended the RPC, for the log
	msgsIn   int64  // written by upstream only
	bytesIn  int64
	msgsOut  int64 // written by downstream only
	bytesOut int64
}

func newSession(h *Handler, rt *route, json bool, conn *websocket.Conn, log *slog.Logger) *session {
	return &session{h: h, route: rt, json: json, conn: conn, log: log, start: time.Now(), cancel: func() {}}
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

// serve opens the backend stream and pumps until the RPC ends.
func (s *session) serve(ctx context.Context, md metadata.MD, timeout time.Duration) {
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
		grpc.MaxCallRecvMsgSize(s.h.cfg.maxMessageSize),
		grpc.MaxCallSendMsgSize(s.h.cfg.maxMessageSize))
	if err != nil {
		s.end(nil, err)
		s.logEnd()
		return
	}

	s.startPings()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.upstream(stream)
	}()
	s.downstream(stream)
	wg.Wait()
	s.stopPings()
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
	for {
		typ, b, err := s.conn.Read(ctx)
		if err != nil {
			s.readFailed(err)
			return
		}
		if typ == websocket.MessageText && !utf8.Valid(b) {
			s.fail(&failure{status: status.New(codes.InvalidArgument, "grpcws: text frame is not valid UTF-8"), code: closeInvalidUTF8})
			return
		}
		if typ == websocket.MessageText && len(b) > 0 && b[0] == '#' {
			c, err := parseClientControl(b)
			if err != nil {
				s.fail(invalidArgument("grpcws: malformed control frame: " + err.Error()))
				return
			}
			if c.GetEndSend() == nil {
				continue // a control frame of a later version: skip it
			}
			switch {
			case halfClosed:
				s.fail(invalidArgument("grpcws: end of send after end of send"))
				return
			case !s.route.ClientStreams:
				s.fail(invalidArgument("grpcws: end of send before the request: this method takes exactly one message"))
				return
			}
			closeSend()
			continue
		}

		if halfClosed {
			s.fail(invalidArgument("grpcws: message after end of send"))
			return
		}
		msg, f := s.decode(typ, b)
		if f != nil {
			s.fail(f)
			return
		}
		s.msgsIn++
		s.bytesIn += int64(len(b))
		if !sendDone {
			if err := stream.SendMsg(&frame{b: msg}); err != nil {
				// io.EOF: the RPC ended, and RecvMsg returns its status.
				sendDone = true
			}
		}
		if !s.route.ClientStreams {
			closeSend()
		}
	}
}

// decode turns a message frame from the client into protobuf bytes.
func (s *session) decode(typ websocket.MessageType, b []byte) ([]byte, *failure) {
	switch {
	case typ == websocket.MessageBinary && s.json:
		return nil, invalidArgument("grpcws: binary frame in the JSON encoding: send messages as text frames")
	case typ == websocket.MessageText && !s.json:
		return nil, invalidArgument("grpcws: text frame that is not a control frame (those start with '#'): send messages as binary frames")
	case s.json:
		m := s.route.input.New().Interface()
		if err := (protojson.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
			return nil, invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s in JSON: %v", m.ProtoReflect().Descriptor().FullName(), err))
		}
		out, err := proto.Marshal(m)
		if err != nil {
			return nil, invalidArgument(fmt.Sprintf("grpcws: message: %v", err))
		}
		return out, nil
	case s.h.cfg.validation:
		m := s.route.input.New().Interface()
		if err := (proto.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
			return nil, invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s: %v", m.ProtoReflect().Descriptor().FullName(), err))
		}
	}
	return b, nil
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
			"grpcws: client message larger than %d bytes", s.h.cfg.maxMessageSize)})
	default:
		s.fail(&failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client connection lost: %v", err)})
	}
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
	for s.failure() == nil {
		var f frame
		if err = stream.RecvMsg(&f); err != nil {
			break
		}
		out, typ := f.b, websocket.MessageBinary
		if s.json {
			if out, err = s.encodeJSON(f.b); err != nil {
				s.fail(&failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)})
				break
			}
			typ = websocket.MessageText
		}
		if werr := s.write(typ, out); werr != nil {
			s.writeFailed(werr)
			break
		}
		s.msgsOut++
		s.bytesOut += int64(len(out))
	}
	if err == nil {
		// A failure stopped the loop: the backend stream is cancelled;
		// wait for it to end so its trailers and goroutines are released.
		for err == nil {
			var f frame
			err = stream.RecvMsg(&f)
		}
	}
	s.end(stream, err)
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
	s.outcome = st.Code().String()
	if f != nil && f.silent {
		_ = s.conn.CloseNow()
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

// write writes one frame within the write timeout. On timeout the
// WebSocket layer closes the connection.
func (s *session) write(typ websocket.MessageType, b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.cfg.writeTimeout)
	defer cancel()
	return s.conn.Write(ctx, typ, b)
}

func (s *session) writeFailed(err error) {
	if s.failure() != nil {
		return // the connection was closed for another reason
	}
	msg := "grpcws: client connection lost: " + err.Error()
	if errors.Is(err, context.DeadlineExceeded) {
		msg = fmt.Sprintf("grpcws: client took no data for %v", s.h.cfg.writeTimeout)
	}
	s.fail(&failure{silent: true, status: status.New(codes.Unavailable, msg)})
}

func (s *session) encodeJSON(b []byte) ([]byte, error) {
	m := s.route.output.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(b, m); err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{Resolver: s.h.routes.types}.Marshal(m)
}

// startPings pings the client every ping interval from a timer, so an idle
// connection costs no goroutine between pings.
func (s *session) startPings() {
	if s.h.cfg.pingInterval <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pinger = time.AfterFunc(s.h.cfg.pingInterval, s.ping)
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
	cancel()
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

func (s *session) stopPings() {
	s.mu.Lock()
	s.stopped = true
	if s.pinger != nil {
		s.pinger.Stop()
	}
	s.mu.Unlock()
	s.pinging.Wait()
}

// logEnd writes one line per RPC.
func (s *session) logEnd() {
	level := slog.LevelDebug
	f := s.failure()
	switch {
	case f != nil && f.status.Code() == codes.Canceled:
		// the client went away: expected
	case f != nil && f.code == closeGoingAway:
		// shutdown: expected
	case f != nil:
		level = slog.LevelWarn
	case s.outcome != codes.OK.String():
		level = slog.LevelInfo
	}
	attrs := []slog.Attr{
		slog.String("code", s.outcome),
		slog.Duration("duration", time.Since(s.start)),
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
