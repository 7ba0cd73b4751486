package bridge

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"connectrpc.com/vanguard"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/internal/grpcheader"
)

// The HTTP protocols, with WithHTTPProtocols: gRPC-Web, Connect and gRPC
// over HTTP, for the same routes.
//
// connectrpc.com/vanguard turns each call into the gRPC protocol, and
// hands it to serveCall with its messages in the client's codec and
// compression: the gateway reads them itself (httpFraming), within the
// message size limit, decodes JSON and gzip, and runs the call as a
// session, as for a WebSocket. Every call is bounded in time (http.go):
// one read of its body by the read timeout, one write of its response by
// the write timeout. Cross-origin requests are answered with CORS from
// the same origin allowlist as WebSockets; requests from other origins are
// refused before they reach a backend.

// A gateway is the Handler's HTTP side.
type gateway struct {
	h          *Handler
	transcoder *vanguard.Transcoder
}

func newGateway(h *Handler) (*gateway, error) {
	g := &gateway{h: h}
	largest := h.cfg.maxMessageSize
	var services []*vanguard.Service
	for _, svc := range h.routes.services {
		largest = max(largest, svc.maxMsg)
		services = append(services, vanguard.NewServiceWithSchema(svc.desc, http.HandlerFunc(g.serveCall),
			vanguard.WithMaxMessageBufferBytes(uint32(svc.maxMsg)),
		))
	}
	// Vanguard changes only the protocol: messages reach serveCall in the
	// client's codec and compression, and the gateway decodes them itself,
	// within its limits. Its own gzip, which it would use only to
	// transcode, is bounded all the same, by the largest message limit.
	t, err := vanguard.NewTranscoder(services,
		vanguard.WithDefaultServiceOptions(
			vanguard.WithTargetProtocols(vanguard.ProtocolGRPC),
			vanguard.WithTargetCodecs(vanguard.CodecProto, vanguard.CodecJSON),
			vanguard.WithTargetCompression(vanguard.CompressionGzip),
		),
		vanguard.WithUnknownHandler(http.HandlerFunc(g.unknown)),
		vanguard.WithCompression(vanguard.CompressionGzip, gzipCompressor, newBoundedGzip(largest)),
	)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	g.transcoder = t
	return g, nil
}

// isCall reports whether r is a call for the gateway: not a WebSocket
// upgrade, and either a gRPC, gRPC-Web or Connect request by its content
// type (or a Connect GET), or a CORS preflight.
func isCall(r *http.Request) bool {
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return false
	}
	if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
		return true
	}
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(ct, "application/grpc"), // grpc, grpc-web, grpc-web-text, with +codec
		strings.HasPrefix(ct, "application/connect+"):
		return true
	case r.Method == http.MethodPost && (strings.HasPrefix(ct, "application/proto") || strings.HasPrefix(ct, "application/json")):
		return r.Header.Get("Connect-Protocol-Version") != "" // Connect unary; vanguard needs it too
	case r.Method == http.MethodGet:
		return r.URL.Query().Get("connect") == "v1"
	}
	return false
}

// callInfo travels with a call from serve to serveCall, through vanguard,
// in its context.
type callInfo struct {
	protocol     string // "grpc-web", "grpc-web-text", "connect", "connect-streaming", "grpc"
	client       netip.Addr
	forwardedFor string
	request      *http.Request // as the client sent it, for its cookies
	body         *requestBody
	writer       *callWriter
	log          *slog.Logger
}

type callKey struct{}

// serve serves one gRPC-Web, Connect or gRPC call, or a CORS preflight.
func (g *gateway) serve(w http.ResponseWriter, r *http.Request, closing bool) {
	cfg := g.h.cfg
	proto := protocolOf(r)
	rc := http.NewResponseController(w)
	call := &callInfo{protocol: proto, request: r, body: newRequestBody(r, rc, cfg.readTimeout)}
	defer call.body.stop()
	call.writer = newCallWriter(w, r, rc, call.body, cfg.writeTimeout)
	defer call.writer.stop()
	w = call.writer
	r = r.WithContext(context.WithValue(r.Context(), callKey{}, call))
	r.Body = call.body
	call.client, call.forwardedFor = cfg.clientAddr(r)
	call.log = cfg.logger.With(slog.String("client", call.client.String()), slog.String("protocol", proto))

	ok, origin := cfg.origin(r)
	if !ok {
		if r.Method == http.MethodOptions {
			g.refuse(w, call, RefusedOrigin, errOrigin(origin), "")
			http.Error(w, "grpcws: origin not allowed", http.StatusForbidden)
			return
		}
		g.refuse(w, call, RefusedOrigin, errOrigin(origin), proto)
		return
	}
	if origin != "" {
		if r.Method == http.MethodOptions {
			preflight(w, r)
			return
		}
		w = &corsWriter{ResponseWriter: w, origin: origin}
	}
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if closing {
		g.refuse(w, call, RefusedShutdown, errShuttingDown, proto)
		return
	}
	release, f := cfg.acquire(call.client)
	if f != nil {
		g.refuse(w, call, RefusedOverLimit, f, proto)
		return
	}
	defer release()
	if v := r.Header.Get(grpcheader.TimeoutKey); v != "" {
		// Vanguard answers a malformed one with plain text.
		if _, err := grpcheader.ParseTimeout(v); err != nil {
			g.refuse(w, call, RefusedBadRequest, invalidArgument(err.Error()), proto)
			return
		}
	}
	if proto == "grpc-web-text" {
		w, r = textWriter(w), textRequest(r)
	}
	if proto == "grpc-web" || proto == "grpc-web-text" {
		w = &trailerCase{ResponseWriter: w}
	}
	if rt := g.h.routes.lookupMethod(r.URL.Path); rt != nil {
		// Connect's unary requests are one bare message; grpc-web-text's
		// prefixes are in base64, under the decoder.
		call.body.expect(proto != "connect" && proto != "grpc-web-text", rt.ClientStreams)
		if r.URL.Path != rt.Method {
			// Mounted below a prefix, as improbable-eng's clients allow.
			r = r.Clone(r.Context())
			r.URL.Path, r.URL.RawPath = rt.Method, ""
		}
	}
	g.transcoder.ServeHTTP(w, r)
}

// refuse answers a call that reaches no backend with f's status, in
// protocol (none for a preflight), and counts and logs the refusal.
func (g *gateway) refuse(w http.ResponseWriter, call *callInfo, why Refusal, f *failure, protocol string) {
	g.h.cfg.observer.Refused(why)
	call.log.Warn("grpcws: request refused", slog.String("refusal", string(why)),
		slog.String("path", call.request.URL.Path), slog.String("reason", f.status.Message()))
	if protocol != "" {
		writeError(w, protocol, f.status)
	}
}

// unknown answers requests for methods no service has.
func (g *gateway) unknown(w http.ResponseWriter, r *http.Request) {
	g.h.cfg.observer.Refused(RefusedUnknownRoute)
	writeError(w, protocolOf(r), status.Newf(codes.Unimplemented, "grpcws: no route for the path %q", r.URL.Path))
}

// serveCall serves the gRPC request that vanguard makes of each call: a
// session on an httpFraming. It speaks the gRPC protocol itself rather
// than through a grpc.Server, so that the call's status is the bridge's to
// decide: grpc.Server fails a call on its own, with UNAVAILABLE or
// INTERNAL, as soon as reading the request fails, whatever the reason.
func (g *gateway) serveCall(w http.ResponseWriter, r *http.Request) {
	call, _ := r.Context().Value(callKey{}).(*callInfo)
	rt := g.h.routes.byMethod[r.URL.Path]
	if call == nil || rt == nil { // vanguard calls only for the routes' services
		g.unknown(w, r)
		return
	}
	f := &httpFraming{w: w, body: r.Body, call: call, route: rt, h: g.h,
		json: strings.HasSuffix(r.Header.Get("Content-Type"), "+json")}
	md, timeout, err := g.callMetadata(r.Header, call)
	if err == nil {
		err = f.compression(r.Header.Get("Grpc-Encoding"))
	}
	if err != nil {
		g.h.cfg.observer.Refused(RefusedBadRequest)
		st := status.New(codes.InvalidArgument, err.Error())
		call.log.Warn("grpcws: request refused", slog.String("refusal", string(RefusedBadRequest)),
			slog.String("path", r.URL.Path), slog.String("reason", st.Message()))
		_ = f.end(st, nil, nil)
		return
	}
	g.h.serveSession(r, rt, f, admission{md: md, timeout: timeout}, call.log.With(slog.String("route", rt.Method)), true)
}

// hidden are request headers that describe the HTTP request, the browser
// or a protocol, not the call: they are not forwarded.
var hidden = map[string]bool{
	":authority": true, "host": true, "connection": true, "keep-alive": true, "proxy-connection": true,
	"proxy-authorization": true, "te": true, "trailer": true, "transfer-encoding": true, "upgrade": true,
	"content-type": true, "content-length": true, "content-encoding": true,
	"accept": true, "accept-encoding": true, "accept-language": true, "user-agent": true,
	"origin": true, "referer": true, "cookie": true, "cache-control": true, "pragma": true, "dnt": true,
	"priority": true, "forwarded": true, "x-grpc-web": true, "x-user-agent": true,
}

// callMetadata returns the metadata to send to the backend, from the
// call's headers, and the call's timeout from grpc-timeout (zero for
// none). The call's headers are its metadata: what a client sets is
// subject to the allowlist; headers of HTTP, the browser and the
// protocols are not metadata; Authorization is forwarded as the bearer
// token of a WebSocket is.
func (g *gateway) callMetadata(h http.Header, call *callInfo) (metadata.MD, time.Duration, error) {
	md := g.h.cfg.metadata.start()
	var timeout time.Duration
	for name, vs := range h {
		k := strings.ToLower(name)
		add := md.client
		switch {
		case k == grpcheader.TimeoutKey:
			d, err := grpcheader.ParseTimeout(vs[0])
			if err != nil {
				return nil, 0, err
			}
			timeout = d
			continue
		case md.rules.isChosen(k), k == "authorization":
			add = md.chosen
		case hidden[k], strings.HasPrefix(k, "sec-"), strings.HasPrefix(k, "x-forwarded-"),
			strings.HasPrefix(k, "connect-"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "access-control-"):
			continue
		}
		for _, v := range vs {
			if err := add(k, v); err != nil {
				return nil, 0, err
			}
		}
	}
	if len(md.dropped) > 0 {
		call.log.Debug("grpcws: metadata keys not allowed, not forwarded", slog.Any("keys", md.dropped))
	}
	return md.finish(call.request, "", call.forwardedFor), timeout, nil
}

// An httpFraming carries one call in the gRPC protocol that vanguard
// speaks to the gateway: length-prefixed messages in the request body;
// headers, length-prefixed messages and trailers in the response.
// Vanguard does not decode messages: they come in the client's codec and
// compression, and go out in the client's codec, uncompressed.
type httpFraming struct {
	w       http.ResponseWriter
	body    io.Reader
	call    *callInfo
	route   *route
	h       *Handler
	json    bool    // messages are JSON both ways
	gzip    bool    // compressed request messages are gzip
	in, out [5]byte // message prefixes
	started bool    // the response headers are written
	eof     bool    // recv returned io.EOF
}

// compression takes the request's grpc-encoding.
func (f *httpFraming) compression(enc string) error {
	switch enc {
	case "", "identity":
	case "gzip":
		f.gzip = true
	default: // vanguard refuses others first
		return fmt.Errorf("grpcws: request compression %q is not supported", enc)
	}
	return nil
}

// Errors of the request's messages.
var errTruncated = invalidArgument("grpcws: the request ended inside a message")

// protocol names the call's protocol: grpc-web-text is gRPC-Web, and
// Connect's streaming calls are Connect.
func (f *httpFraming) protocol() Protocol {
	switch f.call.protocol {
	case "grpc-web", "grpc-web-text":
		return ProtocolGRPCWeb
	case "grpc":
		return ProtocolGRPC
	}
	return ProtocolConnect
}

func (f *httpFraming) recv() (mem.BufferSlice, int, error) {
	if f.eof {
		return nil, 0, errInputDone
	}
	if _, err := io.ReadFull(f.body, f.in[:]); err != nil {
		if err == io.EOF {
			f.eof = true
			return nil, 0, io.EOF
		}
		return nil, 0, f.readError(err)
	}
	compressed := f.in[0]&1 != 0
	if compressed && !f.gzip {
		return nil, 0, invalidArgument("grpcws: a message flagged compressed in a request that names no compression")
	}
	n := int(binary.BigEndian.Uint32(f.in[1:]))
	if n > f.route.maxMsg {
		return nil, 0, &failure{status: status.Newf(codes.ResourceExhausted, "grpcws: request message larger than %d bytes", f.route.maxMsg)}
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(n)
	if _, err := io.ReadFull(f.body, *buf); err != nil {
		pool.Put(buf)
		return nil, 0, f.readError(err)
	}
	data := mem.BufferSlice{mem.NewBuffer(buf, pool)}
	var err error
	if compressed {
		if data, err = inflate(data, f.route.maxMsg); err != nil {
			return nil, 0, err
		}
	}
	if f.json {
		if data, err = f.fromJSON(data); err != nil {
			return nil, 0, err
		}
	}
	return data, 5 + n, nil
}

// readError says why the request could not be read: what the client did
// wrong, as the body or vanguard found it, or that it went away.
func (f *httpFraming) readError(err error) *failure {
	if c := f.call.body.failure(); c != nil {
		return &failure{status: status.Convert(c)}
	}
	if st := vanguardError(err); st != nil {
		return &failure{status: st}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return errTruncated
	}
	return &failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client connection lost: %v", err)}
}

// fromJSON turns a request message in JSON into the binary encoding. It
// consumes data.
func (f *httpFraming) fromJSON(data mem.BufferSlice) (mem.BufferSlice, error) {
	b := data.Materialize()
	data.Free()
	m := f.route.input.New().Interface()
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true, Resolver: f.h.routes.types}).Unmarshal(b, m); err != nil {
		return nil, invalidArgument(fmt.Sprintf("grpcws: request is not a valid %s in JSON: %v", m.ProtoReflect().Descriptor().FullName(), err))
	}
	out, err := proto.Marshal(m)
	if err != nil {
		return nil, invalidArgument(fmt.Sprintf("grpcws: request: %v", err))
	}
	return mem.BufferSlice{mem.SliceBuffer(out)}, nil
}

func (f *httpFraming) contentType() string {
	if f.json {
		return "application/grpc+json"
	}
	return "application/grpc"
}

// sendHeader writes the response headers: the backend's headers as
// metadata.
func (f *httpFraming) sendHeader(md metadata.MD) error {
	h := f.w.Header()
	h.Set("Content-Type", f.contentType())
	addMetadata(h, "", md)
	f.w.WriteHeader(http.StatusOK)
	f.started = true
	return nil
}

// send writes one message, in JSON, with every field, as connect-go and
// vanguard write it, when the call's codec is JSON; it flushes it when the
// response is a stream.
func (f *httpFraming) send(data mem.BufferSlice) (int, error) {
	if !f.started {
		_ = f.sendHeader(nil)
	}
	if f.json {
		m := f.route.output.New().Interface()
		if err := (proto.UnmarshalOptions{Resolver: f.h.routes.types}).Unmarshal(data.Materialize(), m); err != nil {
			return 0, &failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)}
		}
		b, err := protojson.MarshalOptions{EmitUnpopulated: true, Resolver: f.h.routes.types}.Marshal(m)
		if err != nil {
			return 0, &failure{status: status.Newf(codes.Internal, "grpcws: backend message: %v", err)}
		}
		data = mem.BufferSlice{mem.SliceBuffer(b)}
	}
	n := data.Len()
	binary.BigEndian.PutUint32(f.out[1:], uint32(n))
	err := f.write(f.out[:])
	for _, b := range data {
		if err != nil {
			break
		}
		err = f.write(b.ReadOnlyData())
	}
	if err == nil && f.route.ServerStreams {
		err = http.NewResponseController(f.w).Flush()
	}
	return 5 + n, err
}

func (f *httpFraming) write(b []byte) error {
	_, err := f.w.Write(b)
	if err != nil && f.call.writer.stalled.Load() {
		return &failure{silent: true, status: status.Newf(codes.Unavailable, "grpcws: client took no data for %v", f.h.cfg.writeTimeout)}
	}
	return err
}

// end writes the final status and trailers: as trailers, or as the headers
// of a trailers-only response when no headers were written. A client that
// is gone gets nothing.
func (f *httpFraming) end(st *status.Status, trailers metadata.MD, fail *failure) error {
	f.call.body.abort() // a client stream may still be waited for
	if (fail != nil && fail.silent) || f.answered() {
		return nil
	}
	h := f.w.Header()
	prefix := http.TrailerPrefix
	if !f.started {
		h.Set("Content-Type", f.contentType())
		prefix = ""
	}
	for _, kv := range grpcheader.Status(st) {
		h.Set(prefix+http.CanonicalHeaderKey(kv[0]), kv[1])
	}
	addMetadata(h, prefix, trailers)
	if !f.started {
		f.w.WriteHeader(http.StatusOK)
	}
	return nil
}

// answered reports whether vanguard has ended the response on its own, as
// it does when it finds a request's envelope malformed or over the limit:
// before the framing's own headers, anything written below vanguard is its
// answer; after them, vanguard refuses further writes.
func (f *httpFraming) answered() bool {
	if !f.started {
		return f.call.writer.began.Load()
	}
	_, err := f.w.Write(nil)
	return err != nil
}

// clientFault is what the client did wrong in its request body, if it did.
func (f *httpFraming) clientFault() *failure {
	if c := f.call.body.failure(); c != nil {
		return &failure{status: status.Convert(c)}
	}
	return nil
}

// abort ends a write under way: the client took nothing for the write
// timeout.
func (f *httpFraming) abort() { f.call.writer.abort() }

// addMetadata adds the backend's metadata to h, each key after prefix;
// binary values in base64.
func addMetadata(h http.Header, prefix string, md metadata.MD) {
	for k, vs := range md {
		if grpcheader.Reserved(k) || k == "content-type" {
			continue
		}
		key := prefix + http.CanonicalHeaderKey(k)
		for _, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = grpcheader.EncodeBinary(v)
			}
			h[key] = append(h[key], v)
		}
	}
}

// protocolOf names the protocol of r by its content type, for logs and
// errors.
func protocolOf(r *http.Request) string {
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(ct, "application/grpc-web-text"):
		return "grpc-web-text"
	case strings.HasPrefix(ct, "application/grpc-web"):
		return "grpc-web"
	case strings.HasPrefix(ct, "application/grpc"):
		return "grpc"
	case strings.HasPrefix(ct, "application/connect+"):
		return "connect-streaming"
	}
	return "connect"
}
