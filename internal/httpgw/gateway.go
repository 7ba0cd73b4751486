// Package httpgw serves the browser's HTTP protocols for gRPC — gRPC-Web,
// Connect, and gRPC itself — next to the WebSocket bridge, to the same
// backends and routes.
//
// connectrpc.com/vanguard turns each request into the gRPC protocol,
// leaving its messages in the client's codec and compression; the gateway
// reads them itself (forward.go), within the message size limit, decodes
// JSON and gzip, and forwards each call to its backend with
// conn.NewStream, so calls keep the backend connection's TLS, load
// balancing and keepalive. Every call is bounded in time (bound.go): the
// body's reads by the read timeout, the response's writes by the write
// timeout. Only the methods of the configured routes are reachable.
// Cross-origin requests are answered with CORS from the same origin
// allowlist as the bridge; requests from other origins are refused before
// they reach a backend.
package httpgw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/vanguard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/descset"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/peer"
)

// Options configure a Gateway. The zero value of each field is its default.
type Options struct {
	// Services are the routes, as the bridge takes them: the descriptor, the
	// backend connection, the methods to serve (empty: all), and the
	// per-service MaxMessageSize and MaxStreamDuration.
	Services []bridge.Service
	// OriginPatterns allow cross-origin requests, as
	// bridge.WithOriginPatterns does for WebSocket upgrades. Requests without
	// an Origin header and same-origin requests are always allowed.
	OriginPatterns []string
	// MetadataHeaders, MetadataCookies and MetadataAllow are
	// bridge.WithMetadataHeaders, WithMetadataCookies and
	// WithMetadataAllowlist: see Gateway for what reaches the backend.
	MetadataHeaders []string
	MetadataCookies []string
	MetadataAllow   []string
	// TrustedProxies and ForwardClientAddress are
	// bridge.WithTrustedProxies and WithForwardClientAddress.
	TrustedProxies       []netip.Prefix
	ForwardClientAddress bool
	// MaxMessageSize is the default limit of one message each way; zero:
	// bridge.DefaultMaxMessageSize.
	MaxMessageSize int
	// MaxStreamDuration bounds every call, as bridge.WithMaxStreamDuration
	// does; zero: no bound.
	MaxStreamDuration time.Duration
	// ReadTimeout is the longest one read of a request body may wait while
	// a message is incomplete; a client stream may pause between whole
	// messages. Zero: DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout is the longest one write of a response may take, as
	// bridge.WithWriteTimeout is for a WebSocket frame: a client that
	// takes nothing for that long is dropped and its backend stream
	// cancelled. Zero: DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Limiter counts every call while it runs, with the bridge's
	// WebSockets when it is theirs too; a call over a limit is refused with
	// RESOURCE_EXHAUSTED (HTTP 429 in Connect) before it reaches the
	// backend. Nil: no limit.
	Limiter *bridge.ConnLimiter
	// Observer is told about calls, as the bridge's observer is about
	// WebSocket connections. Nil: none.
	Observer bridge.Observer
	// Logger gets the access log and errors. Nil: slog.Default().
	Logger *slog.Logger
	// AccessLog logs every call at Info; otherwise calls that end with OK
	// log at Debug.
	AccessLog bool
}

// A Gateway serves gRPC-Web, Connect and gRPC requests for the methods of
// its services. It is an http.Handler, safe for concurrent use; its routes
// are fixed when it is made.
//
// Request headers become request metadata, except those that describe the
// HTTP request rather than the call (Host, Origin, Referer, User-Agent,
// Accept*, Cookie, Sec-*, hop-by-hop headers, the protocols' own). Cookie
// reaches the backend only as the operator allowed it (MetadataCookies, or
// Cookie in MetadataHeaders). With MetadataAllow set, only the allowed keys,
// authorization, trace context and MetadataHeaders are forwarded: the rest
// are dropped, since HTTP requests carry headers that proxies and browsers
// add.
type Gateway struct {
	opts         Options
	readTimeout  time.Duration
	writeTimeout time.Duration
	log          *slog.Logger
	observer     bridge.Observer
	transcoder   *vanguard.Transcoder
	routes       map[string]*route // by "/package.Service/Method"
	types        *dynamicpb.Types  // for JSON: resolves Any and extensions
	headers      map[string]bool   // MetadataHeaders, lower-case
	allow        map[string]bool   // nil: any key

	mu      sync.Mutex
	calls   map[*call]struct{}
	active  int // ServeHTTP calls under way
	closing bool
	idle    chan struct{}
}

// A route is one method the gateway serves.
type route struct {
	bridge.Route
	conn    grpc.ClientConnInterface
	desc    *grpc.StreamDesc
	input   protoreflect.MessageType // for JSON
	output  protoreflect.MessageType
	maxMsg  int
	maxLife time.Duration
}

// The defaults of Options.ReadTimeout and Options.WriteTimeout.
const (
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

// New returns a Gateway for opts.Services. It does no I/O.
func New(opts Options) (*Gateway, error) {
	g := &Gateway{
		opts:         opts,
		readTimeout:  positiveOr(opts.ReadTimeout, DefaultReadTimeout),
		writeTimeout: positiveOr(opts.WriteTimeout, DefaultWriteTimeout),
		log:          opts.Logger,
		observer:     opts.Observer,
		routes:       map[string]*route{},
		headers:      map[string]bool{},
		calls:        map[*call]struct{}{},
	}
	if g.log == nil {
		g.log = slog.Default()
	}
	if g.observer == nil {
		g.observer = nopObserver{}
	}
	for _, h := range opts.MetadataHeaders {
		g.headers[strings.ToLower(h)] = true
	}
	if len(opts.MetadataAllow) > 0 {
		g.allow = map[string]bool{}
		for _, k := range opts.MetadataAllow {
			g.allow[strings.ToLower(k)] = true
		}
	}
	defMax := opts.MaxMessageSize
	if defMax <= 0 {
		defMax = bridge.DefaultMaxMessageSize
	}
	largest := defMax
	var services []*vanguard.Service
	var files []protoreflect.FileDescriptor
	for i, s := range opts.Services {
		if s.Desc == nil || s.Conn == nil {
			return nil, fmt.Errorf("httpgw: services[%d] has no descriptor or no connection", i)
		}
		files = append(files, s.Desc.ParentFile())
		maxMsg := positiveOr(s.Limits.MaxMessageSize, defMax)
		largest = max(largest, maxMsg)
		methods := s.Desc.Methods()
		for j := range methods.Len() {
			m := methods.Get(j)
			if len(s.Methods) > 0 && !slices.Contains(s.Methods, string(m.Name())) {
				continue
			}
			g.addRoute(s, m, maxMsg)
		}
		services = append(services, vanguard.NewServiceWithSchema(s.Desc, http.HandlerFunc(g.serveBackend),
			vanguard.WithMaxMessageBufferBytes(uint32(maxMsg)),
		))
	}
	types, err := descset.Types(files...)
	if err != nil {
		return nil, fmt.Errorf("httpgw: %w", err)
	}
	g.types = types
	// Vanguard changes only the protocol: messages reach serveBackend in
	// the client's codec and compression, and the gateway decodes them
	// itself, within its limits. Its own gzip, which it would use only to
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
		return nil, fmt.Errorf("httpgw: %w", err)
	}
	g.transcoder = t
	return g, nil
}

func (g *Gateway) addRoute(s bridge.Service, m protoreflect.MethodDescriptor, maxMsg int) {
	name := "/" + string(s.Desc.FullName()) + "/" + string(m.Name())
	g.routes[name] = &route{
		Route: bridge.Route{
			Method:        name,
			Names:         []string{string(s.Desc.FullName()) + "." + string(m.Name())},
			ClientStreams: m.IsStreamingClient(),
			ServerStreams: m.IsStreamingServer(),
		},
		conn:   s.Conn,
		input:  dynamicpb.NewMessageType(m.Input()),
		output: dynamicpb.NewMessageType(m.Output()),
		desc: &grpc.StreamDesc{
			StreamName:    string(m.Name()),
			ClientStreams: m.IsStreamingClient(),
			ServerStreams: m.IsStreamingServer(),
		},
		maxMsg:  maxMsg,
		maxLife: positiveOr(s.Limits.MaxStreamDuration, g.opts.MaxStreamDuration),
	}
}

// Methods returns the methods the Gateway serves, sorted.
func (g *Gateway) Methods() []string {
	out := make([]string, 0, len(g.routes))
	for m := range g.routes {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// Handles reports whether r is for a Gateway: not a WebSocket upgrade, and
// either a gRPC, gRPC-Web or Connect request by its content type (or a
// Connect GET), or a CORS preflight.
func Handles(r *http.Request) bool {
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

// requestInfo travels with a request from ServeHTTP to forward, through
// vanguard and the gRPC server, in its context.
type requestInfo struct {
	protocol     string // "grpc-web", "grpc-web-text", "connect", "grpc"
	client       netip.Addr
	forwardedFor string
	cookie       string // the Cookie header, which the gRPC server does not pass on
	body         *requestBody
	writer       *callWriter
}

type infoKey struct{}

// ServeHTTP serves one gRPC-Web, Connect or gRPC request, or a CORS
// preflight.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	g.active++
	closing := g.closing
	g.mu.Unlock()
	defer g.release()

	proto := protocolOf(r)
	rc := http.NewResponseController(w)
	info := &requestInfo{protocol: proto, body: newRequestBody(r, rc, g.readTimeout)}
	defer info.body.stop()
	info.writer = newCallWriter(w, r, rc, info.body, g.writeTimeout)
	w = info.writer
	r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
	r.Body = info.body

	origin := r.Header.Get("Origin")
	if origin != "" && !peer.OriginAllowed(origin, r.Host, g.opts.OriginPatterns) {
		g.observer.Refused(bridge.RefusedOrigin)
		g.log.Warn("grpcws: request refused", slog.String("protocol", proto), slog.String("refusal", string(bridge.RefusedOrigin)),
			slog.String("origin", origin), slog.String("path", r.URL.Path))
		if r.Method == http.MethodOptions {
			http.Error(w, "grpcws: origin not allowed", http.StatusForbidden)
			return
		}
		writeError(w, proto, status.Newf(codes.PermissionDenied, "grpcws: origin %q not allowed", origin))
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
		g.observer.Refused(bridge.RefusedShutdown)
		writeError(w, proto, errShuttingDown)
		return
	}
	info.client, info.forwardedFor = peer.ClientAddr(r, g.opts.TrustedProxies)
	if g.opts.Limiter != nil {
		release, err := g.opts.Limiter.Acquire(info.client)
		if err != nil {
			g.observer.Refused(bridge.RefusedOverLimit)
			g.log.Warn("grpcws: request refused", slog.String("protocol", proto), slog.String("refusal", string(bridge.RefusedOverLimit)),
				slog.String("client", info.client.String()), slog.String("path", r.URL.Path))
			writeError(w, proto, status.New(codes.ResourceExhausted, err.Error()))
			return
		}
		defer release()
	}
	if v := r.Header.Get(grpcheader.TimeoutKey); v != "" {
		// Vanguard answers a malformed one with plain text.
		if _, err := grpcheader.ParseTimeout(v); err != nil {
			g.observer.Refused(bridge.RefusedBadRequest)
			writeError(w, proto, status.New(codes.InvalidArgument, err.Error()))
			return
		}
	}
	info.cookie = strings.Join(r.Header.Values("Cookie"), "; ")
	if proto == "grpc-web-text" {
		w, r = textWriter(w), textRequest(r)
	}
	if proto == "grpc-web" || proto == "grpc-web-text" {
		w = &trailerCase{ResponseWriter: w}
	}
	p := g.route(r.URL.Path)
	if rt := g.routes[p]; rt != nil {
		// Connect's unary requests are one bare message; grpc-web-text's
		// prefixes are in base64, under the decoder.
		info.body.expect(proto != "connect" && proto != "grpc-web-text", rt.ClientStreams)
	}
	if p != "" && p != r.URL.Path {
		// Mounted below a prefix, as improbable-eng's clients allow.
		r = r.Clone(r.Context())
		r.URL.Path, r.URL.RawPath = p, ""
	}
	g.transcoder.ServeHTTP(w, r)
}

// route returns the method path a URL path names: itself, or its last two
// segments.
func (g *Gateway) route(urlPath string) string {
	if _, ok := g.routes[urlPath]; ok {
		return urlPath
	}
	i := strings.LastIndexByte(urlPath, '/')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(urlPath[:i], '/')
	if j < 0 {
		return ""
	}
	if _, ok := g.routes[urlPath[j:]]; ok {
		return urlPath[j:]
	}
	return ""
}

// unknown answers requests for methods no service has.
func (g *Gateway) unknown(w http.ResponseWriter, r *http.Request) {
	g.observer.Refused(bridge.RefusedUnknownRoute)
	writeError(w, protocolOf(r), status.Newf(codes.Unimplemented, "grpcws: no route for the path %q", r.URL.Path))
}

var errShuttingDown = status.New(codes.Unavailable, "grpcws: bridge shutting down")

// Shutdown stops taking calls (new ones get UNAVAILABLE) and waits for the
// calls under way to end. If ctx is done first, it ends them as Close does
// and returns ctx's error.
func (g *Gateway) Shutdown(ctx context.Context) error {
	idle := g.startClosing()
	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			g.Close()
			return fmt.Errorf("httpgw: shutdown: %w", ctx.Err())
		}
	}
	return nil
}

// Close ends every call under way with UNAVAILABLE, cancels their backend
// streams and waits for their handlers to return.
func (g *Gateway) Close() {
	idle := g.startClosing()
	g.mu.Lock()
	for c := range g.calls {
		c.cancel(errClosed)
	}
	g.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

var errClosed = errors.New("httpgw: closed")

func (g *Gateway) startClosing() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closing = true
	if g.active == 0 {
		return nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	return g.idle
}

func (g *Gateway) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.active--
	if g.active == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
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

func positiveOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

type nopObserver struct{}

func (nopObserver) Refused(bridge.Refusal)                      {}
func (nopObserver) Accepted(bridge.Route) bridge.StreamObserver { return nopObserver{} }
func (nopObserver) ClientMessage(int)                           {}
func (nopObserver) ServerMessage(int)                           {}
func (nopObserver) Ended(codes.Code, time.Duration)             {}
