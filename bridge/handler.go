package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Handler serves protocol v1 (docs/protocol.md): every WebSocket connection
// it accepts carries one RPC to the backend of the method that the
// connection's subprotocol names.
//
// A Handler is safe for concurrent use. Its routes and options are fixed
// when it is made; to change them, make a new Handler and Shutdown the old
// one.
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
	routes, err := newRouteTable(services)
	if err != nil {
		return nil, err
	}
	return &Handler{
		cfg:      newConfig(opts),
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

	h.mu.Lock()
	h.active++
	closing := h.closing
	h.mu.Unlock()
	defer h.release()

	log := h.cfg.logger.With(slog.String("client", r.RemoteAddr))
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

	// Refusals complete the handshake and close with a code: a browser
	// sees nothing of an HTTP error.
	var refusal *failure
	switch ok, origin := originAllowed(r, h.cfg.originPatterns); {
	case closing:
		refusal = &failure{status: status.New(codes.Unavailable, "grpcws: bridge shutting down"), code: closeGoingAway}
	case !ok:
		refusal = &failure{status: status.Newf(codes.PermissionDenied, "grpcws: origin %q not allowed", origin)}
	case offerErr != nil:
		refusal = invalidArgument(offerErr.Error())
	case rt == nil && echo == "":
		refusal = &failure{status: status.New(codes.Unimplemented, "grpcws: no subprotocol offered: offer one that names a method")}
	case rt == nil:
		refusal = &failure{status: status.Newf(codes.Unimplemented, "grpcws: no route named %q", echo)}
	}
	md, timeout, mdErr := requestMetadata(r, h.cfg.metadataHeaders, offer.token)
	if refusal == nil && mdErr != nil {
		refusal = invalidArgument(mdErr.Error())
	}

	var subprotocols []string
	if echo != "" {
		subprotocols = []string{echo}
	}
	mode := websocket.CompressionDisabled
	if h.cfg.compression {
		mode = websocket.CompressionNoContextTakeover // no per-connection dictionary
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       subprotocols,
		InsecureSkipVerify: true, // the origin is checked above, to refuse with a code
		CompressionMode:    mode,
	})
	if err != nil {
		// Accept has written an HTTP error to the client.
		log.Warn("grpcws: handshake failed", slog.Any("error", err))
		return
	}
	if refusal != nil {
		log.Warn("grpcws: connection refused",
			slog.Int("close", int(refusal.closeCode())),
			slog.String("reason", refusal.status.Message()))
		_ = conn.Close(refusal.closeCode(), closeReason(refusal.status.Message()))
		return
	}
	conn.SetReadLimit(int64(h.cfg.maxMessageSize))

	s := newSession(h, rt, json, conn, log.With(slog.String("route", selected)))
	if !h.track(s) {
		// Shutdown began after the check above.
		s.fail(&failure{status: status.New(codes.Unavailable, "grpcws: bridge shutting down"), code: closeGoingAway})
	}
	defer h.untrack(s)
	s.serve(r.Context(), md, timeout)
}

// Shutdown closes every open connection with 1001 after an end frame with
// UNAVAILABLE, cancels their RPCs and refuses new connections with 1001. It
// waits for the connections' goroutines to return, or for ctx to be done,
// whichever comes first, and then returns ctx's error, if any.
//
// http.Server.Shutdown does not see upgraded connections: call both.
func (h *Handler) Shutdown(ctx context.Context) error {
	h.mu.Lock()
	h.closing = true
	if h.active == 0 {
		h.mu.Unlock()
		return nil
	}
	if h.idle == nil {
		h.idle = make(chan struct{})
	}
	idle := h.idle
	sessions := make([]*session, 0, len(h.sessions))
	for s := range h.sessions {
		sessions = append(sessions, s)
	}
	h.mu.Unlock()

	for _, s := range sessions {
		s.fail(&failure{status: status.New(codes.Unavailable, "grpcws: bridge shutting down"), code: closeGoingAway})
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("bridge: shutdown: %w", ctx.Err())
	}
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
