package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// GRPCWebsockets is the subprotocol of improbable-eng's grpc-web WebSocket
// transport, the protocol grpcwebproxy speaks. A Handler serves it, besides
// protocol v1, to every client that offers it: see docs/grpc-websockets.md.
const GRPCWebsockets = "grpc-websockets"

// The grpc-websockets protocol, client to bridge: every WebSocket message
// after the header block starts with one control byte.
const (
	gwsData       = 0x00 // followed by gRPC-Web length-prefixed messages
	gwsFinishSend = 0x01 // alone: the client sends no more messages
)

// gRPC-Web frame flags, the first byte of the 5-byte prefix.
const (
	gwebCompressed = 0x01
	gwebTrailers   = 0x80
)

// headerBlockTimeout bounds the wait for a grpc-websockets client's first
// message, its request headers, which the clients send as soon as the
// connection opens.
const headerBlockTimeout = 10 * time.Second

// offersGRPCWebsockets reports whether r offers the grpc-websockets
// subprotocol.
func offersGRPCWebsockets(r *http.Request) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.TrimSpace(p) == GRPCWebsockets {
				return true
			}
		}
	}
	return false
}

// serveGRPCWebsockets serves one grpc-websockets connection: the method
// comes from the URL path, the request metadata from the first client
// message, and every later message in either direction holds gRPC-Web
// frames. It shares the Handler's origin check, limits, observer, logs and
// shutdown with protocol v1. Refusals complete the handshake and send a
// trailers frame with the status, which is what these clients read.
func (h *Handler) serveGRPCWebsockets(w http.ResponseWriter, r *http.Request) {
	closing := h.acquire()
	defer h.release()

	offer, offerErr := parseOffer(r)
	rt := h.routes.lookupMethod(r.URL.Path)
	var noRoute *failure
	if rt == nil {
		noRoute = &failure{status: status.Newf(codes.Unimplemented, "grpcws: no route for the path %q: the URL path must end in /package.Service/Method", r.URL.Path)}
	}
	a := h.admit(r, closing, offer, offerErr, noRoute)
	defer a.release()
	log := a.log.With(slog.String("protocol", GRPCWebsockets))
	refusal, why, md, timeout := a.refusal, a.why, a.md, a.timeout

	conn, err := websocket.Accept(w, r, h.acceptOptions(GRPCWebsockets))
	if err != nil {
		h.cfg.observer.Refused(RefusedBadRequest)
		log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	if refusal != nil {
		h.refuseGRPCWebsockets(conn, log, refusal, why)
		return
	}
	// One message is the control byte, the 5-byte prefix and the message.
	conn.SetReadLimit(int64(rt.maxMsg) + 6)

	s := &gwsSession{session: newSession(h, rt, false, conn, log.With(slog.String("route", rt.Method)))}
	if !h.track(s.session) {
		s.fail(errShuttingDown) // Shutdown began after the check above
	}
	defer h.untrack(s.session)

	hdr, hdrTimeout, f := s.readHeaderBlock()
	if f == nil {
		f = s.failure()
	}
	if f != nil {
		if f.silent {
			h.cfg.observer.Refused(RefusedBadRequest)
			_ = conn.CloseNow()
			return
		}
		why := RefusedBadRequest
		if f == errShuttingDown {
			why = RefusedShutdown
		}
		h.refuseGRPCWebsockets(conn, log, f, why)
		return
	}
	for k, vs := range hdr {
		md[k] = append(md[k], vs...)
	}
	if hdrTimeout > 0 {
		timeout = hdrTimeout
	}
	if rt.maxLife > 0 && (timeout == 0 || rt.maxLife < timeout) {
		timeout = rt.maxLife
	}
	s.serve(r.Context(), md, timeout)
}

// refuseGRPCWebsockets ends a connection before its RPC started: one
// trailers frame with the status, as a trailers-only gRPC-Web response,
// then the close.
func (h *Handler) refuseGRPCWebsockets(conn *websocket.Conn, log *slog.Logger, f *failure, why Refusal) {
	defer conn.CloseNow()
	h.cfg.observer.Refused(why)
	code := gwsCloseCode(f)
	log.Warn("grpcws: connection refused",
		slog.String("refusal", string(why)),
		slog.Int("close", int(code)),
		slog.String("reason", f.status.Message()))
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.writeTimeout)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageBinary, gwsTrailers(f.status, nil)); err != nil {
		return
	}
	_ = conn.Close(code, closeReason(f.status.Message()))
}

// gwsCloseCode is the close code after the trailers: 1000, as the status is
// in the trailers, but 1001 when the bridge shuts down or the RPC was idle
// (reconnect), and 1013 over a connection limit (retry later).
func gwsCloseCode(f *failure) websocket.StatusCode {
	if f != nil && (f.code == closeGoingAway || f.code == closeTryAgainLater) {
		return f.code
	}
	return websocket.StatusNormalClosure
}

// A gwsSession is a session that speaks grpc-websockets. It uses the
// session's failure, timers, watchdog and logging, with its own pumps.
type gwsSession struct {
	*session

	pending []byte // an incomplete frame from the client, upstream's alone
}

// readHeaderBlock reads the client's first message: its request headers, as
// HTTP/1 header lines. It returns the metadata and the grpc-timeout they
// carry. A Handler.Close while it waits ends the wait.
func (s *gwsSession) readHeaderBlock() (metadata.MD, time.Duration, *failure) {
	ctx, cancel := context.WithTimeout(context.Background(), headerBlockTimeout)
	defer cancel()
	s.mu.Lock()
	s.cancel = cancel
	failed := s.failed
	s.mu.Unlock()
	if failed != nil {
		return nil, 0, failed
	}
	_, b, err := s.conn.Read(ctx)
	s.mu.Lock()
	s.cancel = func() {}
	s.mu.Unlock()
	if err != nil {
		if f := s.failure(); f != nil {
			return nil, 0, &failure{silent: true, status: f.status} // the read closed the connection
		}
		return nil, 0, &failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: no request headers: %v", err)}
	}
	md, timeout, err := parseHeaderBlock(b, s.h.cfg)
	if err != nil {
		return nil, 0, invalidArgument(err.Error())
	}
	return md, timeout, nil
}

// parseHeaderBlock parses the request headers a grpc-websockets client
// sends first: "key: value" lines ended by CRLF. Keys become metadata, with
// the rules of docs/protocol.md, section 2, less the headers that describe
// the HTTP request rather than the RPC.
func parseHeaderBlock(b []byte, cfg *config) (metadata.MD, time.Duration, error) {
	md := metadata.MD{}
	var timeout time.Duration
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if !grpcheader.Printable(strings.ReplaceAll(line, "\t", " ")) {
			return nil, 0, fmt.Errorf("grpcws: request headers: a line is not printable ASCII")
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, 0, fmt.Errorf("grpcws: request headers: line %q has no colon", line)
		}
		key := lower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		switch key {
		case "content-type", "x-grpc-web", "x-user-agent", "user-agent", "te",
			"grpc-accept-encoding", "grpc-encoding":
			// The client's description of gRPC-Web itself, not metadata.
			continue
		case grpcheader.TimeoutKey:
			d, err := grpcheader.ParseTimeout(value)
			if err != nil {
				return nil, 0, err
			}
			timeout = d
			continue
		case "authorization":
			// How these clients carry credentials: like the bearer token of
			// protocol v1, not limited by the allowlist.
		default:
			if err := checkAllowed(cfg.metadataAllow, key); err != nil {
				return nil, 0, err
			}
		}
		if err := grpcheader.Append(md, key, value); err != nil {
			return nil, 0, err
		}
	}
	return md, timeout, nil
}

// serve opens the backend stream and pumps until the RPC ends, as
// session.serve does for protocol v1.
func (s *gwsSession) serve(ctx context.Context, md metadata.MD, timeout time.Duration) {
	s.run(ctx, md, timeout, s)
}

// upstream alone reads from the client and sends to the backend.
func (s *gwsSession) upstream(stream grpc.ClientStream) {
	ctx := context.Background() // reads end when the connection closes
	halfClosed := false         // CloseSend called: no more messages
	finished := false           // the client sent finish-send
	sendDone := false           // the backend stream ended: drop what the client still sends
	sent := false               // a message went to the backend
	closeSend := func() {
		halfClosed = true
		if !sendDone {
			_ = stream.CloseSend()
		}
	}
	var out frame
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
		var f *failure
		switch {
		case typ != websocket.MessageBinary:
			f = invalidArgument("grpcws: grpc-websockets: text message: every message is binary")
		case len(b) == 0:
			f = invalidArgument("grpcws: grpc-websockets: empty message: every message starts with a control byte")
		case b[0] == gwsFinishSend && len(b) == 1:
			switch {
			case finished:
				f = invalidArgument("grpcws: grpc-websockets: finish-send after finish-send")
			case len(s.pending) > 0:
				f = invalidArgument("grpcws: grpc-websockets: finish-send in the middle of a message")
			case !s.route.ClientStreams && !sent:
				f = invalidArgument("grpcws: grpc-websockets: finish-send before the request: this method takes exactly one message")
			}
			if f == nil {
				buf.Free()
				finished = true
				if !halfClosed {
					closeSend()
				}
				continue
			}
		case b[0] != gwsData:
			f = invalidArgument(fmt.Sprintf("grpcws: grpc-websockets: unknown control byte 0x%02x", b[0]))
		case finished:
			f = invalidArgument("grpcws: grpc-websockets: message after finish-send")
		}
		if f != nil {
			buf.Free()
			s.fail(f)
			return
		}
		msgs, f := s.frames(buf)
		for i, msg := range msgs {
			if f == nil && halfClosed {
				f = invalidArgument("grpcws: grpc-websockets: more than one request message: this method takes exactly one")
			}
			if f != nil {
				for _, m := range msgs[i:] {
					m.Free()
				}
				break
			}
			n := msg.Len()
			if err := s.validate(msg); err != nil {
				f = err
				msg.Free()
				continue
			}
			s.msgsIn++
			s.bytesIn += int64(n)
			s.obs.ClientMessage(n)
			s.active()
			sent = true
			if sendDone {
				msg.Free()
			} else {
				out.Data = msg
				if err := stream.SendMsg(&out); err != nil {
					sendDone = true // the RPC ended: RecvMsg returns its status
				}
				if out.Data != nil {
					out.Data.Free()
					out.Data = nil
				}
			}
			if !s.route.ClientStreams {
				closeSend()
			}
		}
		if f != nil {
			s.fail(f)
			return
		}
	}
}

// validate parses a message as the method's input type, when the operator
// turned validation on.
func (s *gwsSession) validate(msg mem.BufferSlice) *failure {
	if !s.h.cfg.validation {
		return nil
	}
	m := s.route.input.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: s.h.routes.types}).Unmarshal(msg.Materialize(), m); err != nil {
		return invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s: %v", m.ProtoReflect().Descriptor().FullName(), err))
	}
	return nil
}

// frames splits the gRPC-Web frames out of a data message, whose first
// byte is the control byte. A frame may span messages: the rest waits in
// s.pending. It consumes buf: the messages it returns hold references to
// it, or copies.
func (s *gwsSession) frames(buf mem.Buffer) ([]mem.BufferSlice, *failure) {
	defer buf.Free()
	data := buf.ReadOnlyData()[1:]
	base := 1 // offset of data in buf
	if len(s.pending) > 0 {
		s.pending = append(s.pending, data...)
		data, base = s.pending, -1
	}
	var msgs []mem.BufferSlice
	for len(data) >= 5 {
		flags, n := data[0], binary.BigEndian.Uint32(data[1:5])
		var f *failure
		switch {
		case flags&gwebTrailers != 0:
			f = invalidArgument("grpcws: grpc-websockets: trailers frame from the client")
		case flags&gwebCompressed != 0:
			f = &failure{status: status.New(codes.Unimplemented, "grpcws: grpc-websockets: compressed messages are not supported")}
		case uint64(n) > uint64(s.route.maxMsg):
			f = &failure{status: status.Newf(codes.ResourceExhausted, "grpcws: client message larger than %d bytes", s.route.maxMsg)}
		}
		if f != nil {
			for _, m := range msgs {
				m.Free()
			}
			return nil, f
		}
		if len(data)-5 < int(n) {
			break
		}
		if base >= 0 {
			start := base + 5
			msgs = append(msgs, mem.BufferSlice{buf.Slice(start, start+int(n))})
			base += 5 + int(n)
		} else {
			msgs = append(msgs, mem.BufferSlice{mem.Copy(data[5:5+n], mem.DefaultBufferPool())})
		}
		data = data[5+n:]
	}
	s.pending = append(s.pending[:0], data...)
	return msgs, nil
}

// downstream alone receives from the backend and writes to the client: a
// headers frame, the messages, and at the end the trailers frame and the
// close.
func (s *gwsSession) downstream(stream grpc.ClientStream) {
	if md, _ := stream.Header(); md != nil {
		// nice-grpc-web requires headers before the first message, so they
		// go out even when the backend sent none.
		err := s.write(websocket.MessageBinary, gwsFrame(gwebTrailers, headerBlock(withoutContentType(md), nil)))
		if err != nil {
			s.writeFailed(err)
		}
	}
	var err error
	var in frame
	for s.failure() == nil {
		if err = stream.RecvMsg(&in); err != nil {
			break
		}
		n := in.Data.Len()
		werr := s.writeMessage(in.Data)
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
		for err == nil {
			if err = stream.RecvMsg(&in); err == nil {
				in.Data.Free()
				in.Data = nil
			}
		}
	}
	s.end(stream, err)
}

// writeMessage writes one message from the backend as one gRPC-Web data
// frame in one WebSocket message.
func (s *gwsSession) writeMessage(data mem.BufferSlice) error {
	var prefix [5]byte
	binary.BigEndian.PutUint32(prefix[1:], uint32(data.Len()))
	s.watchdog.Reset(s.h.cfg.writeTimeout)
	w, err := s.conn.Writer(context.Background(), websocket.MessageBinary)
	if err == nil {
		_, err = w.Write(prefix[:])
		for _, b := range data {
			if err != nil {
				break
			}
			_, err = w.Write(b.ReadOnlyData())
		}
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}
	return s.wrote(err)
}

// end writes the trailers frame for the RPC's final status and closes the
// connection. stream is nil when it could not be opened.
//
// Without a headers frame before it, as when the backend sent none, the
// trailers frame is a trailers-only response: both clients read a lone
// metadata frame that holds grpc-status as headers and trailers at once.
func (s *gwsSession) end(stream grpc.ClientStream, err error) {
	s.mu.Lock()
	s.ending = true
	f := s.failed
	s.mu.Unlock()

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
	s.outcome = st.Code()
	if f != nil && f.silent {
		_ = s.conn.CloseNow()
		return
	}
	if err := s.write(websocket.MessageBinary, gwsTrailers(st, withoutContentType(trailers))); err != nil {
		_ = s.conn.CloseNow()
		return
	}
	_ = s.conn.Close(gwsCloseCode(f), closeReason(st.Message()))
}

// gwsFrame returns a gRPC-Web frame: flags, length, payload.
func gwsFrame(flags byte, payload []byte) []byte {
	b := make([]byte, 5+len(payload))
	b[0] = flags
	binary.BigEndian.PutUint32(b[1:5], uint32(len(payload)))
	copy(b[5:], payload)
	return b
}

// gwsTrailers returns the trailers frame for st and the backend's
// trailers: grpc-status, grpc-message (percent-encoded),
// grpc-status-details-bin, then the trailers, every name lower-case.
func gwsTrailers(st *status.Status, trailers metadata.MD) []byte {
	var first []string
	for _, f := range grpcheader.Status(st) {
		first = append(first, f[0]+": "+f[1])
	}
	return gwsFrame(gwebTrailers, headerBlock(trailers, first))
}

// headerBlock encodes metadata as HTTP/1 header lines, after the lines in
// first: lower-case names, sorted, one line per value; -bin values in
// base64. Keys gRPC reserves and values that are not printable ASCII are
// left out: the clients refuse the whole block for one such byte.
func headerBlock(md metadata.MD, first []string) []byte {
	var b bytes.Buffer
	for _, l := range first {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, lower(k))
	}
	slices.Sort(keys)
	for _, k := range keys {
		if grpcheader.Reserved(k) || !grpcheader.Printable(k) || strings.ContainsAny(k, " :") {
			continue
		}
		for _, v := range md[k] {
			if strings.HasSuffix(k, "-bin") {
				v = grpcheader.EncodeBinary(v)
			} else if !grpcheader.Printable(v) {
				continue
			}
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	return b.Bytes()
}
