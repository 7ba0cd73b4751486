package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/peer"
)

// Handler serves protocol v1 (docs/protocol.md): every WebSocket connection
// it accepts carries one RPC to the backend of the method that the
// connection's subprotocol names.
//
// A Handler is safe for concurrent use. Its routes and options are fixed
// when it is made; to change them, send new connections to a new Handler and
// Shutdown the old one, which lets its open RPCs finish.
type Handler struct {
	cfg    *config
	routes *routeTable

	mu       sync.Mutex
	active   int                   // ServeHTTP calls under way
	sessions map[*session]struct{} // accepted RPCs, for Shutdown
	closing  bool
	idle     chan struct{} // closed when active drops to 0 after Shutdown began
}

// NewHandler returns a Handler that serves every method of services. It
// fails when a service lacks a descriptor or a connection, or when two
// methods would answer to the same subprotocol.
func NewHandler(services []Service, opts ...Option) (*Handler, error) {
	cfg := newConfig(opts)
	routes, err := newRouteTable(services, cfg)
	if err != nil {
		return nil, err
	}
	return &Handler{
		cfg:      cfg,
		routes:   routes,
		sessions: map[*session]struct{}{},
	}, nil
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
// the RPC lasts. Requests that are not WebSocket upgrades get 426.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "grpcws: this endpoint serves gRPC over WebSocket: open a WebSocket "+
			"whose subprotocol names a method, such as \"package.Service.Method\"", http.StatusUpgradeRequired)
		return
	}
	if offersGRPCWebsockets(r) {
		h.serveGRPCWebsockets(w, r) // grpcwebproxy's protocol: docs/grpc-websockets.md
		return
	}

	closing := h.acquire()
	defer h.release()

	offer, offerErr := parseOffer(r)
	var (
		rt       *route
		json     bool
		selected string
	)
	for _, name := range offer.names {
		if rt, json = h.routes.lookup(name); rt != nil {
			selected = name
			break
		}
	}
	echo := selected
	if echo == "" && len(offer.names) > 0 {
		echo = offer.names[0] // so a browser completes the handshake and reads the close code
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
	log := a.log
	refusal, why, md, timeout := a.refusal, a.why, a.md, a.timeout

	var subprotocols []string
	if echo != "" {
		subprotocols = []string{echo}
	}
	conn, err := websocket.Accept(w, r, h.acceptOptions(subprotocols...))
	if err != nil {
		// Accept has written an HTTP error to the client.
		h.cfg.observer.Refused(RefusedBadRequest)
		log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	if refusal != nil {
		h.cfg.observer.Refused(why)
		log.Warn("grpcws: connection refused",
			slog.String("refusal", string(why)),
			slog.Int("close", int(refusal.closeCode())),
			slog.String("reason", refusal.status.Message()))
		_ = conn.Close(refusal.closeCode(), closeReason(refusal.status.Message()))
		return
	}
	conn.SetReadLimit(int64(rt.maxMsg))

	s := newSession(h, rt, json, conn, log.With(slog.String("route", selected)))
	if !h.track(s) {
		// Shutdown began after the check above.
		s.fail(errShuttingDown)
	}
	defer h.untrack(s)
	if rt.maxLife > 0 && (timeout == 0 || rt.maxLife < timeout) {
		timeout = rt.maxLife
	}
	s.serve(r.Context(), md, timeout)
}

// acquire counts a ServeHTTP call under way, for Shutdown, and reports
// whether the Handler is shutting down.
func (h *Handler) acquire() (closing bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active++
	return h.closing
}

// An admission is the outcome of the checks both protocols make before a
// handshake: the client's address, its request metadata and deadline, and
// the refusal, if any. Refusals complete the handshake and then close with
// a code or a status: a browser sees nothing of an HTTP error.
type admission struct {
	log     *slog.Logger
	md      metadata.MD
	timeout time.Duration
	refusal *failure
	why     Refusal
	release func() // gives back the place in the connection limits
}

// admit checks, in order: shutdown, origin, the offered token, the route
// (noRoute, if the protocol found none), the request metadata, and the
// connection limits.
func (h *Handler) admit(r *http.Request, closing bool, offer offer, offerErr error, noRoute *failure) admission {
	addr, forwardedFor := peer.ClientAddr(r, h.cfg.trustedProxies)
	a := admission{log: h.cfg.logger.With(slog.String("client", addr.String())), release: func() {}}
	switch ok, origin := originAllowed(r, h.cfg.originPatterns); {
	case closing:
		a.refusal, a.why = errShuttingDown, RefusedShutdown
	case !ok:
		a.refusal, a.why = &failure{status: status.Newf(codes.PermissionDenied, "grpcws: origin %q not allowed", origin)}, RefusedOrigin
	case offerErr != nil:
		a.refusal, a.why = invalidArgument(offerErr.Error()), RefusedBadRequest
	case noRoute != nil:
		a.refusal, a.why = noRoute, RefusedUnknownRoute
	}
	var err error
	a.md, a.timeout, err = requestMetadata(r, h.cfg, offer.token, forwardedFor)
	if a.refusal == nil && err != nil {
		a.refusal, a.why = invalidArgument(err.Error()), RefusedBadRequest
	}
	if a.refusal == nil && h.cfg.limiter != nil {
		if release, err := h.cfg.limiter.Acquire(addr); err != nil {
			a.refusal, a.why = &failure{status: status.New(codes.ResourceExhausted, err.Error()), code: closeTryAgainLater}, RefusedOverLimit
		} else {
			a.release = release
		}
	}
	return a
}

// acceptOptions are the options of every handshake. The origin is checked
// by admit, to refuse with a code rather than an HTTP error.
func (h *Handler) acceptOptions(subprotocols ...string) *websocket.AcceptOptions {
	mode := websocket.CompressionDisabled
	if h.cfg.compression {
		mode = websocket.CompressionNoContextTakeover // no per-connection dictionary
	}
	return &websocket.AcceptOptions{
		Subprotocols:       subprotocols,
		InsecureSkipVerify: true,
		CompressionMode:    mode,
	}
}

// errShuttingDown ends RPCs, and refuses connections, while the Handler
// shuts down.
var errShuttingDown = &failure{status: status.New(codes.Unavailable, "grpcws: bridge shutting down"), code: closeGoingAway}

// Shutdown shuts the Handler down gracefully: it refuses new connections
// with 1001 and waits for the open RPCs to end on their own. If ctx is done
// first, it ends the remaining ones as Close does and returns ctx's error.
//
// http.Server.Shutdown does not see upgraded connections: call both.
func (h *Handler) Shutdown(ctx context.Context) error {
	idle := h.startClosing()
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

// Close ends every open RPC at once: the client gets an end frame with
// UNAVAILABLE and the close code 1001, so it can reconnect elsewhere, and the
// backend stream is cancelled. New connections are refused with 1001. Close
// waits for the connections' goroutines to return.
func (h *Handler) Close() {
	idle := h.startClosing()
	if idle == nil {
		return
	}
	h.mu.Lock()
	sessions := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()
	for _, s := range sessions {
		s.fail(errShuttingDown)
	}
	<-idle
}

// startClosing makes the Handler refuse new connections. It returns a
// channel closed when the last connection is gone, or nil if there is none.
func (h *Handler) startClosing() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closing = true
	if h.active == 0 {
		return nil
	}
	if h.idle == nil {
		h.idle = make(chan struct{})
	}
	return h.idle
}

func (h *Handler) track(s *session) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sessions[s] = struct{}{}
	return !h.closing
}

func (h *Handler) untrack(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.sessions, s)
}

func (h *Handler) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.active--
	if h.active == 0 && h.idle != nil {
		close(h.idle)
		h.idle = nil
	}
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
