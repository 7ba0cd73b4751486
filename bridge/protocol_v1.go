package bridge

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// Protocol v1 (docs/protocol.md): one WebSocket per RPC, the route named by
// the subprotocol, one binary frame per message (a text frame in the JSON
// encoding), and control frames starting with '#' for the headers, the end
// of send and the end. The wire rules are in internal/v1wire.

// serveV1 serves one protocol v1 connection.
func (h *Handler) serveV1(w http.ResponseWriter, r *http.Request, closing bool) {
	offer, offerErr := v1wire.ParseOffer(r.Header.Values("Sec-WebSocket-Protocol"))
	var (
		rt       *route
		json     bool
		selected string
	)
	for _, name := range offer.Names {
		if rt, json = h.routes.lookup(name); rt != nil {
			selected = name
			break
		}
	}
	echo := selected
	if echo == "" && len(offer.Names) > 0 {
		echo = offer.Names[0] // so a browser completes the handshake and reads the close code
	}
	var noRoute *failure
	switch {
	case rt == nil && echo == "":
		noRoute = &failure{status: status.New(codes.Unimplemented, "grpcws: no subprotocol offered: offer one that names a method")}
	case rt == nil:
		noRoute = &failure{status: status.Newf(codes.Unimplemented, "grpcws: no route named %q", echo)}
	}
	a := h.admit(r, closing, offer, offerErr, noRoute)
	defer a.release()

	var subprotocols []string
	if echo != "" {
		subprotocols = []string{echo}
	}
	conn, err := websocket.Accept(w, r, h.cfg.acceptOptions(subprotocols...))
	if err != nil {
		// Accept has written an HTTP error to the client.
		h.cfg.observer.Refused(RefusedBadRequest)
		a.log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	defer conn.CloseNow() // the backstop; a no-op after a clean close
	if a.refusal != nil {
		h.refused(a.log, a.why, a.refusal, v1CloseCode(a.refusal))
		_ = conn.Close(v1CloseCode(a.refusal), v1wire.CloseReason(a.refusal.status.Message()))
		return
	}
	conn.SetReadLimit(int64(rt.maxMsg))
	f := &v1Framing{wsConn: wsConn{conn: conn, maxMsg: rt.maxMsg}, h: h, route: rt, json: json}
	h.serveSession(r, rt, f, a, a.log.With(slog.String("route", selected)), false)
}

// v1Metadata collects the request metadata and the timeout (zero for none)
// of a protocol v1 upgrade: Grpc-Metadata-* headers and the query are the
// client's, chosen headers and trace context the operator's. See
// docs/protocol.md, section 2.
func v1Metadata(r *http.Request, md *requestMD) (time.Duration, error) {
	var timeout string
	for name, values := range r.Header {
		name = strings.ToLower(name)
		if name == grpcheader.TimeoutKey {
			timeout = values[0]
			continue
		}
		add := md.chosen
		key, ok := strings.CutPrefix(name, strings.ToLower(v1wire.MetadataHeaderPrefix))
		switch {
		case ok:
			add = md.client
		case md.rules.isChosen(name):
			key = name
		default:
			continue
		}
		for _, v := range values {
			if err := add(key, v); err != nil {
				return 0, err
			}
		}
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return 0, fmt.Errorf("grpcws: malformed query: %w", err)
	}
	for name, values := range query {
		key := strings.ToLower(name)
		if key == grpcheader.TimeoutKey {
			timeout = values[0]
			continue
		}
		for _, v := range values {
			if err := md.client(key, v); err != nil {
				return 0, err
			}
		}
	}
	if timeout == "" {
		return 0, nil
	}
	return grpcheader.ParseTimeout(timeout)
}

// v1CloseCode is the close code of a failure in protocol v1.
func v1CloseCode(f *failure) websocket.StatusCode {
	if f.code != 0 {
		return f.code
	}
	return v1wire.CloseCode(f.status.Code())
}

// A v1Framing carries one RPC in protocol v1.
type v1Framing struct {
	wsConn
	h     *Handler
	route *route
	json  bool

	// upstream's alone
	halfClosed bool // the client sent all its messages
	eofDue     bool // the next recv returns io.EOF: a unary request was sent
}

func (*v1Framing) protocol() Protocol { return ProtocolV1 }

func (f *v1Framing) recv() (mem.BufferSlice, int, error) {
	if f.eofDue {
		f.eofDue = false
		return nil, 0, io.EOF
	}
	for {
		typ, buf, err := f.read()
		if err != nil {
			return nil, 0, err
		}
		b := buf.ReadOnlyData()
		if typ == websocket.MessageText {
			eof, isControl, fail := f.control(b)
			if fail != nil {
				buf.Free()
				return nil, 0, fail
			}
			if isControl {
				buf.Free()
				if eof {
					f.halfClosed = true
					return nil, 0, io.EOF
				}
				continue
			}
			// a JSON message
		}
		if f.halfClosed {
			buf.Free()
			return nil, 0, invalidArgument("grpcws: message after end of send")
		}
		msg, fail := f.decode(typ, b, buf)
		if fail != nil {
			return nil, 0, fail
		}
		if !f.route.ClientStreams {
			f.halfClosed, f.eofDue = true, true
		}
		return msg, len(b), nil
	}
}

// control handles a text frame: a control frame (eof when it is the end of
// send) or a failure; a JSON message is neither.
func (f *v1Framing) control(b []byte) (eof, isControl bool, fail *failure) {
	if !utf8.Valid(b) {
		return false, false, &failure{status: status.New(codes.InvalidArgument, "grpcws: text frame is not valid UTF-8"), code: v1wire.CloseInvalidUTF8}
	}
	if len(b) == 0 || b[0] != v1wire.ControlPrefix {
		if !f.json {
			return false, false, invalidArgument("grpcws: text frame that is not a control frame (those start with '#'): send messages as binary frames")
		}
		return false, false, nil
	}
	c, err := v1wire.ParseClientControl(b)
	switch {
	case err != nil:
		return false, false, invalidArgument("grpcws: malformed control frame: " + err.Error())
	case c.GetEndSend() == nil:
		return false, true, nil // a control frame of a later version
	case f.halfClosed:
		return false, false, invalidArgument("grpcws: end of send after end of send")
	case !f.route.ClientStreams:
		return false, false, invalidArgument("grpcws: end of send before the request: this method takes exactly one message")
	}
	return true, true, nil
}

// decode turns a message frame from the client, b in buf, into the
// protobuf message to send. It consumes buf: it frees it, or passes it on in
// the result.
func (f *v1Framing) decode(typ websocket.MessageType, b []byte, buf mem.Buffer) (mem.BufferSlice, *failure) {
	switch {
	case typ == websocket.MessageBinary && f.json:
		buf.Free()
		return nil, invalidArgument("grpcws: binary frame in the JSON encoding: send messages as text frames")
	case f.json:
		defer buf.Free()
		return f.h.fromJSON(f.route, b)
	case f.h.cfg.validation:
		if fail := f.h.validate(f.route, b); fail != nil {
			buf.Free()
			return nil, fail
		}
	}
	return mem.BufferSlice{buf}, nil
}

func (f *v1Framing) sendHeader(md metadata.MD) error {
	b, err := v1wire.HeadersFrame(md)
	if err != nil {
		return err
	}
	return f.conn.Write(context.Background(), websocket.MessageText, b)
}

func (f *v1Framing) send(data mem.BufferSlice) (int, error) {
	if f.json {
		out, fail := f.h.toJSON(f.route, data)
		if fail != nil {
			return 0, fail
		}
		return len(out), f.conn.Write(context.Background(), websocket.MessageText, out)
	}
	// Large messages arrive in several buffers: one WebSocket message.
	return data.Len(), f.write(websocket.MessageBinary, nil, data)
}

// end writes the end frame and closes with the status's code: nothing for
// a client that is gone, the close code only for one that broke the
// WebSocket protocol.
func (f *v1Framing) end(st *status.Status, trailers metadata.MD, fail *failure) error {
	var code websocket.StatusCode
	switch {
	case fail != nil && fail.silent:
		return f.conn.CloseNow()
	case fail != nil && fail.closeOnly:
		return f.conn.Close(fail.code, "")
	case fail != nil:
		code = v1CloseCode(fail)
	case st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message larger than max"):
		code = v1wire.CloseTooBig // gRPC's own receive limit: a backend message over ours
	default:
		code = v1wire.CloseCode(st.Code())
	}
	b, err := v1wire.EndFrame(st, trailers)
	if err == nil {
		err = f.conn.Write(context.Background(), websocket.MessageText, b)
	}
	if err != nil {
		return f.conn.CloseNow()
	}
	return f.conn.Close(code, v1wire.CloseReason(st.Message()))
}

// fromJSON turns a message from the client in protobuf JSON into the
// binary message to send to the backend.
func (h *Handler) fromJSON(rt *route, b []byte) (mem.BufferSlice, *failure) {
	m := rt.input.New().Interface()
	if err := (protojson.UnmarshalOptions{Resolver: h.routes.types}).Unmarshal(b, m); err != nil {
		return nil, invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s in JSON: %v", m.ProtoReflect().Descriptor().FullName(), err))
	}
	out, err := proto.Marshal(m)
	if err != nil {
		return nil, invalidArgument(fmt.Sprintf("grpcws: message: %v", err))
	}
	return mem.BufferSlice{mem.SliceBuffer(out)}, nil
}

// toJSON turns a message from the backend into protobuf JSON for the
// client.
func (h *Handler) toJSON(rt *route, data mem.BufferSlice) ([]byte, *failure) {
	m := rt.output.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: h.routes.types}).Unmarshal(data.Materialize(), m); err != nil {
		return nil, &failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)}
	}
	out, err := protojson.MarshalOptions{Resolver: h.routes.types}.Marshal(m)
	if err != nil {
		return nil, &failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)}
	}
	return out, nil
}
