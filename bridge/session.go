package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/passthrough"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// A framing is how one protocol carries one RPC between the bridge and a
// client: protocol v1 (protocol_v1.go), grpc-websockets
// (protocol_grpcwebsockets.go), or an HTTP call behind vanguard
// (protocol_http.go). It is the seam between the protocols and the
// session, which holds everything else: the two pumps, backpressure, the
// limits in time, the first error, the observer and the log.
//
// The session's upstream pump alone calls recv; its downstream pump alone
// calls sendHeader, send and end, each under the write watchdog; abort
// may be called from any goroutine.
type framing interface {
	// recv returns the next message from the client, and its size on the
	// wire for the observer. It returns io.EOF when the client has sent
	// all its messages; after that, it may be called again to learn how
	// the client goes on: errInputDone when nothing more can come. Any
	// other error is a *failure.
	recv() (msg mem.BufferSlice, size int, err error)
	// sendHeader writes the backend's response headers.
	sendHeader(md metadata.MD) error
	// send writes one message from the backend and returns its size on
	// the wire. It does not keep msg.
	send(msg mem.BufferSlice) (size int, err error)
	// end writes the final status and the backend's trailers and closes.
	// f is the bridge's own failure, nil when the status is the
	// backend's.
	end(st *status.Status, trailers metadata.MD, f *failure) error
	// abort cuts the transport at once: the client is gone or too slow.
	abort()
	// protocol names the protocol, for the observer.
	protocol() Protocol
}

// A pinger is a framing whose connection the session keeps alive with
// pings: a client that answers none is gone.
type pinger interface {
	ping(ctx context.Context) error
}

// A faultFinder is a framing that can tell, after the fact, that the
// client broke the RPC (an HTTP body that stopped or was cut short), which
// is then the RPC's status, whatever else ended it first: the same fault
// may also have cancelled the request's context.
type faultFinder interface {
	clientFault() *failure
}

// errInputDone is what recv returns after io.EOF when nothing more can
// come from the client.
var errInputDone = errors.New("bridge: no more input")

// A failure is how the bridge ends an RPC for a reason of its own: the
// status to send and, on a WebSocket, the close code.
type failure struct {
	status *status.Status
	code   websocket.StatusCode // zero: v1wire.CloseCode of the status
	// silent failures send nothing: the client is gone.
	silent bool
	// closeOnly failures send no status, only the close code: the client
	// broke the WebSocket protocol.
	closeOnly bool
}

func (f *failure) Error() string { return f.status.Message() }

func invalidArgument(msg string) *failure {
	return &failure{status: status.New(codes.InvalidArgument, msg)}
}

// errEnded is the cause of a session's context once the RPC has its final
// status: failures after it change nothing.
var errEnded = errors.New("bridge: the RPC ended")

// failureOf returns the failure that ended the RPC of ctx, or nil. It runs
// for every message: while ctx is live it costs one atomic load.
func failureOf(ctx context.Context) *failure {
	if ctx.Err() == nil {
		return nil
	}
	f, _ := context.Cause(ctx).(*failure) // fail passes failures as they are
	return f
}

// A session is one RPC: a framing on the client's side, a stream on the
// backend's. The goroutine that calls run owns it: run runs downstream
// itself and upstream in one more goroutine, and returns when both have.
// The first error wins: every end of the RPC (a failure, the backend's
// status, shutdown) cancels the session's context with its cause, which
// also cancels the backend stream.
type session struct {
	h       *Handler
	route   *route
	f       framing
	log     *slog.Logger
	start   time.Time
	cancel  context.CancelCauseFunc
	obs     StreamObserver
	writes  watchdog
	idle    *idleTimer  // nil without an idle timeout
	alive   keepalive   // not started without pings, or when the framing has none
	sending atomic.Bool // upstream is in SendMsg: the client is not read meanwhile
	counts  counters
	outcome codes.Code
	failure *failure // the bridge's reason for the outcome, if it was its own
	// readFirst reads a unary request whole before the backend stream
	// opens, as HTTP calls can: a malformed request never reaches the
	// backend.
	readFirst bool
}

// newSession returns a session and its context, which the caller passes to
// run. Until run, fail only records the failure.
func newSession(ctx context.Context, h *Handler, rt *route, f framing, log *slog.Logger) (*session, context.Context) {
	ctx, cancel := context.WithCancelCause(ctx)
	s := &session{h: h, route: rt, f: f, log: log, start: time.Now(), cancel: cancel, obs: nopObserver{}}
	s.writes.init(h.cfg.writeTimeout, func() {
		s.fail(&failure{silent: true, status: status.Newf(codes.Unavailable, "grpcws: client took no data for %v", h.cfg.writeTimeout)})
		f.abort()
	})
	return s, ctx
}

// fail ends the RPC for a reason of the bridge's own, unless it has ended
// already.
func (s *session) fail(err error) { s.cancel(err) }

// run opens the backend stream with md and the timeout (zero: none) and
// pumps until the RPC ends.
func (s *session) run(ctx context.Context, md metadata.MD, timeout time.Duration) {
	defer s.cancel(errEnded)
	if rt := s.route.maxLife; rt > 0 && (timeout == 0 || rt < timeout) {
		timeout = rt
	}
	if timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeout(ctx, timeout)
		defer stop()
	}
	rt := s.route.Route
	rt.Protocol = s.f.protocol()
	s.obs = s.h.cfg.observer.Accepted(rt)
	var first mem.BufferSlice
	if s.readFirst && !s.route.ClientStreams {
		var err error
		if first, err = s.recvOne(); err != nil {
			s.fail(err)
			s.end(ctx, nil, err)
			s.logEnd()
			return
		}
	}
	stream, err := s.route.conn.NewStream(metadata.NewOutgoingContext(ctx, md), s.route.desc, s.route.Method,
		grpc.ForceCodecV2(passthrough.Codec{}),
		grpc.MaxCallRecvMsgSize(s.route.maxMsg),
		grpc.MaxCallSendMsgSize(s.route.maxMsg))
	if err != nil {
		first.Free()
		s.end(ctx, nil, err)
		s.logEnd()
		return
	}
	s.startTimers(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { s.upstream(ctx, stream, first) })
	s.downstream(ctx, stream)
	wg.Wait()
	s.stopTimers()
	s.logEnd()
}

// Errors of a method that takes one request message.
var (
	errNoRequest    = invalidArgument("grpcws: no request message: the method takes exactly one")
	errManyRequests = invalidArgument("grpcws: more than one request message: the method takes exactly one")
)

// recvOne reads the one message of a method that is not client-streaming,
// and the end of the request after it.
func (s *session) recvOne() (mem.BufferSlice, error) {
	msg, n, err := s.f.recv()
	if errors.Is(err, io.EOF) || errors.Is(err, errInputDone) {
		return nil, errNoRequest
	}
	if err != nil {
		return nil, err
	}
	s.counted(n)
	switch extra, _, err := s.f.recv(); {
	case err == nil:
		extra.Free()
		msg.Free()
		return nil, errManyRequests
	case !errors.Is(err, io.EOF) && !errors.Is(err, errInputDone):
		msg.Free()
		return nil, err
	}
	return msg, nil
}

// upstream alone reads from the client and sends to the backend. It reads
// the next message only when the backend has taken the previous one.
// first, when not nil, is the request that run read first.
func (s *session) upstream(ctx context.Context, stream grpc.ClientStream, first mem.BufferSlice) {
	sendDone := false // the backend stream ended: drop what the client still sends
	var out passthrough.Frame
	send := func(msg mem.BufferSlice) {
		if sendDone {
			msg.Free()
			return
		}
		out.Data = msg
		s.sending.Store(true)
		err := stream.SendMsg(&out)
		s.sending.Store(false)
		if err != nil {
			sendDone = true // io.EOF: the RPC ended, and RecvMsg returns its status
		}
		if out.Data != nil { // SendMsg failed before it took the buffers
			out.Data.Free()
			out.Data = nil
		}
	}
	if first != nil {
		send(first) // and CloseSend: the method takes one message
	}
	for {
		msg, n, err := s.f.recv()
		switch {
		case errors.Is(err, io.EOF):
			if !sendDone {
				_ = stream.CloseSend() // fails only when the stream has ended; RecvMsg reports that
			}
			continue
		case errors.Is(err, errInputDone):
			return
		case err != nil:
			s.fail(err)
			return
		}
		s.counted(n)
		send(msg)
	}
}

// counted records a message from the client.
func (s *session) counted(n int) {
	s.counts.msgsIn++
	s.counts.bytesIn += int64(n)
	s.obs.ClientMessage(n)
	s.idle.active()
}

// downstream alone receives from the backend and writes to the client, and
// it alone writes the final status. It receives the next message only when
// the client has taken the previous one.
func (s *session) downstream(ctx context.Context, stream grpc.ClientStream) {
	// Header blocks until the backend sends headers or the RPC ends. nil
	// means the RPC ended without headers (trailers-only).
	if md, _ := stream.Header(); md != nil {
		if err := s.writes.guard(func() error { return s.f.sendHeader(md) }); err != nil {
			s.writeFailed(err)
		}
	}
	var err error
	var in passthrough.Frame // reused: each message's buffers are freed once written
	for failureOf(ctx) == nil {
		if err = stream.RecvMsg(&in); err != nil {
			break
		}
		var n int
		werr := s.writes.guard(func() (err error) {
			n, err = s.f.send(in.Data)
			return err
		})
		in.Data.Free()
		in.Data = nil
		if werr != nil {
			s.writeFailed(werr)
			break
		}
		s.counts.msgsOut++
		s.counts.bytesOut += int64(n)
		s.obs.ServerMessage(n)
		s.idle.active()
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
	s.end(ctx, stream, err)
}

// writeFailed classifies a write that failed: a failure of the framing's
// own, or a client that went away, which is not a failure of the RPC.
func (s *session) writeFailed(err error) {
	var f *failure
	if errors.As(err, &f) {
		s.fail(f)
		return
	}
	s.fail(&failure{silent: true, status: status.New(codes.Canceled, "grpcws: client connection lost: "+err.Error())})
}

// end writes the RPC's final status: the bridge's failure, if one came
// first, else the backend's status and trailers. stream is nil when it
// could not be opened.
func (s *session) end(ctx context.Context, stream grpc.ClientStream, err error) {
	s.cancel(errEnded)
	f := failureOf(ctx)
	if f == nil {
		errors.As(err, &f) // a failure before the stream opened
	}
	if ff, ok := s.f.(faultFinder); ok {
		if c := ff.clientFault(); c != nil {
			f = c
		}
	}
	var st *status.Status
	var trailers metadata.MD
	switch {
	case f != nil:
		st = f.status
	case errors.Is(err, io.EOF):
		st = status.New(codes.OK, "")
	default:
		st = status.Convert(err)
	}
	if f == nil && stream != nil {
		trailers = stream.Trailer()
	}
	s.outcome, s.failure = st.Code(), f
	_ = s.writes.guard(func() error { return s.f.end(st, trailers, f) })
}

// counters are an RPC's messages and bytes each way. The In fields are
// upstream's alone, the Out fields downstream's; logEnd reads them after
// both.
type counters struct {
	msgsIn, bytesIn   int64
	msgsOut, bytesOut int64
}

// logEnd reports the RPC's end to the observer and writes its access line.
func (s *session) logEnd() {
	d := time.Since(s.start)
	s.obs.Ended(s.outcome, d)
	level := slog.LevelDebug
	if s.h.cfg.accessLog {
		level = slog.LevelInfo
	}
	f := s.failure
	switch {
	case f != nil && f.status.Code() == codes.Canceled:
		// the client went away: expected
	case f != nil && f.code == v1wire.CloseGoingAway:
		// shutdown or idle: expected
	case f != nil:
		level = slog.LevelWarn
	case s.outcome != codes.OK:
		level = max(level, slog.LevelInfo)
	}
	attrs := []slog.Attr{
		slog.String("code", s.outcome.String()),
		slog.Duration("duration", d),
		slog.Int64("msgs_in", s.counts.msgsIn),
		slog.Int64("msgs_out", s.counts.msgsOut),
		slog.Int64("bytes_in", s.counts.bytesIn),
		slog.Int64("bytes_out", s.counts.bytesOut),
	}
	if f != nil {
		attrs = append(attrs, slog.String("cause", f.status.Message()))
	}
	s.log.LogAttrs(context.Background(), level, "grpcws: rpc", attrs...)
}

// startTimers starts the idle timeout and the pings. Both run from timers,
// so an idle RPC costs no goroutine between them.
func (s *session) startTimers(ctx context.Context) {
	if d := s.route.idle; d > 0 {
		s.idle = newIdleTimer(d, func() {
			s.fail(&failure{status: status.Newf(codes.Unavailable, "grpcws: idle timeout: no message for %v", d), code: v1wire.CloseGoingAway})
		})
	}
	if p, ok := s.f.(pinger); ok && s.h.cfg.pingInterval > 0 {
		s.alive.start(s.h.cfg.pingInterval, s.h.cfg.pingTimeout, p, &s.sending, ctx.Done(), func() {
			s.fail(&failure{silent: true, status: status.Newf(codes.Unavailable,
				"grpcws: client did not answer a ping within %v", s.h.cfg.pingTimeout)})
			s.f.abort() // unblocks a write to a client that is gone
		})
	}
}

func (s *session) stopTimers() {
	s.idle.stop()
	s.alive.stop()
	s.writes.stop()
}
