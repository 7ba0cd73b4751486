package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/internal/v1wire"
)

// Handler serves gRPC to the clients of the web. Every WebSocket it accepts
// carries one RPC to the backend of the method that its subprotocol (in
// protocol v1, docs/protocol.md) or its URL path (in grpc-websockets,
// docs/grpc-websockets.md) names; with WithHTTPProtocols, it also serves
// gRPC-Web, Connect and gRPC calls over HTTP for the same methods.
//
// A Handler is safe for concurrent use. Its routes and options are fixed
// when it is made; to change them, send new connections to a new Handler and
// Shutdown the old one, which lets its open RPCs finish.
type Handler struct {
	cfg     *config
	routes  *routeTable
	gateway *gateway // nil without WithHTTPProtocols
	rpcs    tracker
}

// NewHandler returns a Handler that serves every method of services. It
// fails when a service lacks a descriptor or a connection, or when two
// methods would answer to the same subprotocol. It does no I/O.
func NewHandler(services []Service, opts ...Option) (*Handler, error) {
	cfg := newConfig(opts)
	routes, err := newRouteTable(services, cfg)
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, routes: routes, rpcs: tracker{sessions: map[*session]struct{}{}}}
	if cfg.httpProtocols {
		if h.gateway, err = newGateway(h); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Routes returns the methods the Handler serves, sorted by method name.
func (h *Handler) Routes() []Route {
	out := make([]Route, len(h.routes.routes))
	for i, r := range h.routes.routes {
		r.Names = append([]string(nil), r.Names...)
		out[i] = r
	}
	return out
}

// ServeHTTP serves one WebSocket connection, and so one RPC, for as long as
// the RPC lasts; or, with WithHTTPProtocols, one gRPC-Web, Connect or gRPC
// call. Other requests go to the fallback (WithFallback), or get 426.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case isUpgrade(r):
		closing := h.rpcs.enter()
		defer h.rpcs.leave()
		switch {
		case offers(r, GRPCWebsockets):
			h.serveGRPCWebsockets(w, r, closing)
		case offers(r, Multiplexed):
			h.serveMux(w, r, closing)
		default:
			h.serveV1(w, r, closing)
		}
	case h.gateway != nil && isCall(r):
		closing := h.rpcs.enter()
		defer h.rpcs.leave()
		h.gateway.serve(w, r, closing)
	case h.cfg.fallback != nil:
		h.cfg.fallback.ServeHTTP(w, r)
	default:
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		if r.ContentLength != 0 && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close") // no need to read the body first
		}
		http.Error(w, "grpcws: this endpoint serves gRPC over WebSocket: open a WebSocket "+
			"whose subprotocol names a method, such as \"package.Service.Method\"", http.StatusUpgradeRequired)
	}
}

// isUpgrade reports whether r asks for a WebSocket.
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

// headerHasToken reports whether a comma-separated header holds token,
// ignoring case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// An admission is the outcome of the checks every WebSocket protocol makes
// before its handshake: the client's address, its request metadata and
// deadline, and the refusal, if any. Refusals complete the handshake and
// then close with a code or a status: a browser sees nothing of an HTTP
// error.
type admission struct {
	log     *slog.Logger
	addr    netip.Addr // the client's address, for the limits
	token   string     // the offered bearer token, also in md as authorization
	md      metadata.MD
	timeout time.Duration
	refusal *failure
	why     Refusal
	release func() // gives back the place in the connection limits
}

// admit checks, in order: shutdown, origin, the offered token, the route
// (noRoute, if the protocol found none), the request metadata, and the
// connection limits.
func (h *Handler) admit(r *http.Request, closing bool, offer v1wire.Offer, offerErr error, noRoute *failure) admission {
	addr, forwardedFor := h.cfg.clientAddr(r)
	a := admission{log: h.cfg.logger.With(slog.String("client", addr.String())), addr: addr, token: offer.Token, release: func() {}}
	switch ok, origin := h.cfg.origin(r); {
	case closing:
		a.refusal, a.why = errShuttingDown, RefusedShutdown
	case !ok:
		a.refusal, a.why = errOrigin(origin), RefusedOrigin
	case offerErr != nil:
		a.refusal, a.why = invalidArgument(offerErr.Error()), RefusedBadRequest
	case noRoute != nil:
		a.refusal, a.why = noRoute, RefusedUnknownRoute
	}
	md := h.cfg.metadata.start()
	var err error
	if a.timeout, err = v1Metadata(r, md); err != nil && a.refusal == nil {
		a.refusal, a.why = invalidArgument(err.Error()), RefusedBadRequest
	}
	a.md = md.finish(r, offer.Token, forwardedFor)
	if len(md.dropped) > 0 {
		a.log.Debug("grpcws: metadata keys not allowed, not forwarded", slog.Any("keys", md.dropped))
	}
	if a.refusal == nil {
		release, f := h.cfg.acquire(addr)
		if f != nil {
			a.refusal, a.why = f, RefusedOverLimit
		} else {
			a.release = release
		}
	}
	return a
}

// refused counts and logs a refusal.
func (h *Handler) refused(log *slog.Logger, why Refusal, f *failure, code websocket.StatusCode) {
	h.cfg.observer.Refused(why)
	log.Warn("grpcws: connection refused",
		slog.String("refusal", string(why)),
		slog.Int("close", int(code)),
		slog.String("reason", f.status.Message()))
}

// serveSession runs one RPC on framing f, tracked for Shutdown and Close.
func (h *Handler) serveSession(r *http.Request, rt *route, f framing, a admission, log *slog.Logger, readFirst bool) {
	s, ctx := newSession(r.Context(), h, rt, f, log)
	s.readFirst = readFirst
	if !h.rpcs.add(s) {
		s.fail(errShuttingDown) // Shutdown began after the admission
	}
	defer h.rpcs.remove(s)
	s.run(ctx, a.md, a.timeout)
}

// validate parses a message as the route's input type, for
// WithValidation.
func (h *Handler) validate(rt *route, b []byte) *failure {
	m := rt.input.New().Interface()
	if err := (proto.UnmarshalOptions{Resolver: h.routes.types}).Unmarshal(b, m); err != nil {
		return invalidArgument(fmt.Sprintf("grpcws: message is not a valid %s: %v", m.ProtoReflect().Descriptor().FullName(), err))
	}
	return nil
}

// errShuttingDown ends RPCs, and refuses connections, while the Handler
// shuts down.
var errShuttingDown = &failure{status: status.New(codes.Unavailable, "grpcws: bridge shutting down"), code: v1wire.CloseGoingAway}

// Shutdown shuts the Handler down gracefully: it refuses new connections
// with 1001 (HTTP calls with UNAVAILABLE) and waits for the open RPCs to
// end on their own. If ctx is done first, it ends the remaining ones as
// Close does and returns ctx's error.
//
// http.Server.Shutdown does not see upgraded connections: call both.
func (h *Handler) Shutdown(ctx context.Context) error {
	idle := h.rpcs.startClosing()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
	}
	h.Close()
	return fmt.Errorf("bridge: shutdown: %w", ctx.Err())
}

// Close ends every open RPC at once: a WebSocket client gets an end frame
// with UNAVAILABLE and the close code 1001, so it can reconnect elsewhere,
// an HTTP call ends with UNAVAILABLE, and the backend stream is cancelled.
// New connections are refused with 1001. Close waits for the connections'
// goroutines to return.
func (h *Handler) Close() {
	idle := h.rpcs.startClosing()
	if idle == nil {
		return
	}
	h.rpcs.failAll(errShuttingDown)
	<-idle
}

// A tracker counts the requests a Handler is serving, and the RPCs among
// them, for Shutdown and Close.
type tracker struct {
	mu       sync.Mutex
	active   int // ServeHTTP calls under way
	sessions map[*session]struct{}
	muxes    map[*muxConn]struct{} // multiplexed connections, drained by startClosing
	closing  bool
	idle     chan struct{} // closed when active drops to 0 after closing began
}

// enter counts a request under way, and reports whether the Handler is
// shutting down.
func (t *tracker) enter() (closing bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active++
	return t.closing
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.active--
	if t.active == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

// add tracks an RPC; it reports false when the Handler is shutting down.
func (t *tracker) add(s *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sessions[s] = struct{}{}
	return !t.closing
}

func (t *tracker) remove(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, s)
}

// startClosing makes the Handler refuse new requests. It returns a channel
// closed when the last one is gone, or nil if there is none.
func (t *tracker) startClosing() <-chan struct{} {
	t.mu.Lock()
	t.closing = true
	muxes := make([]*muxConn, 0, len(t.muxes))
	for c := range t.muxes {
		muxes = append(muxes, c)
	}
	var idle chan struct{}
	if t.active > 0 {
		if t.idle == nil {
			t.idle = make(chan struct{})
		}
		idle = t.idle
	}
	t.mu.Unlock()
	// A multiplexed connection would stay open, idle, for as long as its
	// client likes: tell it to go away once its streams end.
	for _, c := range muxes {
		c.goAway()
	}
	if idle == nil {
		return nil
	}
	return idle
}

// addMux tracks a multiplexed connection; it reports false when the
// Handler is shutting down.
func (t *tracker) addMux(c *muxConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.muxes == nil {
		t.muxes = map[*muxConn]struct{}{}
	}
	t.muxes[c] = struct{}{}
	return !t.closing
}

func (t *tracker) removeMux(c *muxConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.muxes, c)
}

// failAll ends every tracked RPC with err.
func (t *tracker) failAll(err error) {
	t.mu.Lock()
	sessions := make([]*session, 0, len(t.sessions))
	for s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.mu.Unlock()
	for _, s := range sessions {
		s.fail(err)
	}
}
