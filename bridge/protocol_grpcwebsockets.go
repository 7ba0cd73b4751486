package bridge

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/v1wire"
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

// serveGRPCWebsockets serves one grpc-websockets connection: the method
// comes from the URL path, the request metadata from the first client
// message, and every later message in either direction holds gRPC-Web
// frames. Refusals complete the handshake and send a trailers frame with
// the status, which is what these clients read.
func (h *Handler) serveGRPCWebsockets(w http.ResponseWriter, r *http.Request, closing bool) {
	offer, offerErr := v1wire.ParseOffer(r.Header.Values("Sec-WebSocket-Protocol"))
	rt := h.routes.lookupMethod(r.URL.Path)
	var noRoute *failure
	if rt == nil {
		noRoute = &failure{status: status.Newf(codes.Unimplemented, "grpcws: no route for the path %q: the URL path must end in /package.Service/Method", r.URL.Path)}
	}
	a := h.admit(r, closing, offer, offerErr, noRoute)
	defer a.release()
	log := a.log.With(slog.String("protocol", GRPCWebsockets))

	conn, err := websocket.Accept(w, r, h.cfg.acceptOptions(GRPCWebsockets))
	if err != nil {
		h.cfg.observer.Refused(RefusedBadRequest)
		log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	defer conn.CloseNow()
	if a.refusal != nil {
		h.refuseGRPCWebsockets(conn, log, a.refusal, a.why)
		return
	}
	// One message is the control byte, the 5-byte prefix and the message.
	conn.SetReadLimit(int64(rt.maxMsg) + 6)

	f := &gwsFraming{wsConn: wsConn{conn: conn, maxMsg: rt.maxMsg}, h: h, route: rt}
	s, ctx := newSession(r.Context(), h, rt, f, log.With(slog.String("route", rt.Method)))
	if !h.rpcs.add(s) {
		s.fail(errShuttingDown)
	}
	defer h.rpcs.remove(s)

	hdrCtx, cancel := context.WithTimeout(ctx, headerBlockTimeout)
	md, timeout, fail := f.readHeaderBlock(hdrCtx)
	cancel()
	if fail != nil {
		if failureOf(ctx) != nil || fail.silent {
			// Shutdown, or a client gone: the read closed the connection.
			h.cfg.observer.Refused(RefusedBadRequest)
			return
		}
		h.refuseGRPCWebsockets(conn, log, fail, RefusedBadRequest)
		return
	}
	for k, vs := range md {
		a.md[k] = append(a.md[k], vs...)
	}
	if timeout > 0 {
		a.timeout = timeout
	}
	s.run(ctx, a.md, a.timeout)
}

// refuseGRPCWebsockets ends a connection before its RPC started: one
// trailers frame with the status, as a trailers-only gRPC-Web response,
// then the close.
func (h *Handler) refuseGRPCWebsockets(conn *websocket.Conn, log *slog.Logger, f *failure, why Refusal) {
	code := gwsCloseCode(f)
	h.refused(log, why, f, code)
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.writeTimeout)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageBinary, gwsTrailers(f.status, nil)); err != nil {
		return
	}
	_ = conn.Close(code, v1wire.CloseReason(f.status.Message()))
}

// gwsCloseCode is the close code after the trailers: 1000, as the status is
// in the trailers, but 1001 when the bridge shuts down or the RPC was idle
// (reconnect), and 1013 over a connection limit (retry later).
func gwsCloseCode(f *failure) websocket.StatusCode {
	if f != nil && (f.code == v1wire.CloseGoingAway || f.code == v1wire.CloseTryAgainLater) {
		return f.code
	}
	return v1wire.CloseNormal
}

// A gwsFraming carries one RPC in grpc-websockets.
type gwsFraming struct {
	wsConn
	h     *Handler
	route *route

	// upstream's alone
	queue    []mem.BufferSlice // messages read and not yet returned
	pending  []byte            // an incomplete frame from the client
	finished bool              // the client sent finish-send
	sent     bool              // a message went up
	eofSent  bool              // recv returned io.EOF
}

// readHeaderBlock reads the client's first message: its request headers, as
// HTTP/1 header lines. It returns the metadata and the grpc-timeout they
// carry. The context ends the wait.
func (f *gwsFraming) readHeaderBlock(ctx context.Context) (metadata.MD, time.Duration, *failure) {
	_, b, err := f.conn.Read(ctx)
	if err != nil {
		return nil, 0, &failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: no request headers: %v", err)}
	}
	md, timeout, err := parseHeaderBlock(b, &f.h.cfg.metadata)
	if err != nil {
		return nil, 0, invalidArgument(err.Error())
	}
	return md, timeout, nil
}

// parseHeaderBlock parses the request headers a grpc-websockets client
// sends first: "key: value" lines ended by CRLF. Keys become metadata, with
// the rules of every protocol, less the headers that describe gRPC-Web
// itself.
func parseHeaderBlock(b []byte, rules *metadataRules) (metadata.MD, time.Duration, error) {
	md := rules.start()
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
		key := strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		add := md.client
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
		case "authorization", "traceparent", "tracestate":
			// How these clients carry credentials, like the bearer token of
			// protocol v1, and trace context: not limited by the allowlist.
			add = md.chosen
		}
		if err := add(key, value); err != nil {
			return nil, 0, err
		}
	}
	return md.md, timeout, nil
}

func (*gwsFraming) protocol() Protocol { return ProtocolGRPCWebsockets }

func (f *gwsFraming) recv() (mem.BufferSlice, int, error) {
	for {
		halfClosed := f.finished || (!f.route.ClientStreams && f.sent)
		if halfClosed && !f.eofSent {
			f.eofSent = true
			return nil, 0, io.EOF
		}
		if len(f.queue) == 0 {
			if err := f.readData(); err != nil {
				return nil, 0, err
			}
			continue
		}
		msg := f.queue[0]
		f.queue[0] = nil
		f.queue = f.queue[1:]
		if halfClosed {
			msg.Free()
			return nil, 0, invalidArgument("grpcws: grpc-websockets: more than one request message: this method takes exactly one")
		}
		f.sent = true
		if f.h.cfg.validation {
			if fail := f.h.validate(f.route, msg.Materialize()); fail != nil {
				msg.Free()
				return nil, 0, fail
			}
		}
		return msg, msg.Len(), nil
	}
}

// readData reads one WebSocket message: finish-send, or data frames, which
// go to the queue.
func (f *gwsFraming) readData() error {
	typ, buf, err := f.read()
	if err != nil {
		return err
	}
	b := buf.ReadOnlyData()
	var fail *failure
	switch {
	case typ != websocket.MessageBinary:
		fail = invalidArgument("grpcws: grpc-websockets: text message: every message is binary")
	case len(b) == 0:
		fail = invalidArgument("grpcws: grpc-websockets: empty message: every message starts with a control byte")
	case b[0] == gwsFinishSend && len(b) == 1:
		switch {
		case f.finished:
			fail = invalidArgument("grpcws: grpc-websockets: finish-send after finish-send")
		case len(f.pending) > 0:
			fail = invalidArgument("grpcws: grpc-websockets: finish-send in the middle of a message")
		case !f.route.ClientStreams && !f.sent && len(f.queue) == 0:
			fail = invalidArgument("grpcws: grpc-websockets: finish-send before the request: this method takes exactly one message")
		}
		buf.Free()
		if fail != nil {
			return fail
		}
		f.finished = true
		return nil
	case b[0] != gwsData:
		fail = invalidArgument(fmt.Sprintf("grpcws: grpc-websockets: unknown control byte 0x%02x", b[0]))
	case f.finished:
		fail = invalidArgument("grpcws: grpc-websockets: message after finish-send")
	}
	if fail != nil {
		buf.Free()
		return fail
	}
	msgs, fail := f.frames(buf)
	if fail != nil {
		return fail
	}
	f.queue = append(f.queue, msgs...)
	return nil
}

// frames splits the gRPC-Web frames out of a data message, whose first
// byte is the control byte. A frame may span messages: the rest waits in
// f.pending. It consumes buf: the messages it returns hold references to
// it, or copies.
func (f *gwsFraming) frames(buf mem.Buffer) ([]mem.BufferSlice, *failure) {
	defer buf.Free()
	data := buf.ReadOnlyData()[1:]
	base := 1 // offset of data in buf
	if len(f.pending) > 0 {
		f.pending = append(f.pending, data...)
		data, base = f.pending, -1
	}
	var msgs []mem.BufferSlice
	for len(data) >= 5 {
		flags, n := data[0], binary.BigEndian.Uint32(data[1:5])
		var fail *failure
		switch {
		case flags&gwebTrailers != 0:
			fail = invalidArgument("grpcws: grpc-websockets: trailers frame from the client")
		case flags&gwebCompressed != 0:
			fail = &failure{status: status.New(codes.Unimplemented, "grpcws: grpc-websockets: compressed messages are not supported")}
		case uint64(n) > uint64(f.route.maxMsg):
			fail = &failure{status: status.Newf(codes.ResourceExhausted, "grpcws: client message larger than %d bytes", f.route.maxMsg)}
		}
		if fail != nil {
			for _, m := range msgs {
				m.Free()
			}
			return nil, fail
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
	f.pending = append(f.pending[:0], data...)
	return msgs, nil
}

// sendHeader writes the headers frame. nice-grpc-web requires headers
// before the first message, so they go out even when the backend sent
// none.
func (f *gwsFraming) sendHeader(md metadata.MD) error {
	return f.conn.Write(context.Background(), websocket.MessageBinary, gwsFrame(gwebTrailers, headerBlock(md, nil)))
}

// send writes one message from the backend as one gRPC-Web data frame in
// one WebSocket message.
func (f *gwsFraming) send(data mem.BufferSlice) (int, error) {
	var prefix [5]byte
	n := data.Len()
	binary.BigEndian.PutUint32(prefix[1:], uint32(n))
	return n, f.write(websocket.MessageBinary, prefix[:], data)
}

// end writes the trailers frame for the RPC's final status and closes the
// connection.
//
// Without a headers frame before it, as when the backend sent none, the
// trailers frame is a trailers-only response: both clients read a lone
// metadata frame that holds grpc-status as headers and trailers at once.
func (f *gwsFraming) end(st *status.Status, trailers metadata.MD, fail *failure) error {
	if fail != nil && fail.silent {
		return f.conn.CloseNow()
	}
	if err := f.conn.Write(context.Background(), websocket.MessageBinary, gwsTrailers(st, trailers)); err != nil {
		return f.conn.CloseNow()
	}
	return f.conn.Close(gwsCloseCode(fail), v1wire.CloseReason(st.Message()))
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
// base64. Content-Type, keys gRPC reserves and values that are not
// printable ASCII are left out: the clients refuse the whole block for one
// such byte.
func headerBlock(md metadata.MD, first []string) []byte {
	var b bytes.Buffer
	for _, l := range first {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, strings.ToLower(k))
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == "content-type" || grpcheader.Reserved(k) || !grpcheader.Printable(k) || strings.ContainsAny(k, " :") {
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
