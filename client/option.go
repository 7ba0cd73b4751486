package client

import (
	"net/http"

	"github.com/grpcws/grpcws/internal/muxwire"
)

// An Option configures a Conn.
type Option interface {
	apply(*config)
}

type config struct {
	httpClient *http.Client
	header     http.Header
	maxMsg     int
	token      string
	multiplex  bool
	muxLocal   muxwire.Settings
	firstID    uint32
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithHTTPClient sets the HTTP client for the WebSocket handshakes.
// Default http.DefaultClient.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(cfg *config) {
		if c != nil {
			cfg.httpClient = c
		}
	})
}

// WithHTTPHeader adds headers to every handshake, for proxies in front of
// the bridge. Request metadata goes through the context instead
// (metadata.NewOutgoingContext). Default none.
func WithHTTPHeader(h http.Header) Option {
	return optionFunc(func(cfg *config) {
		for k, vs := range h {
			for _, v := range vs {
				cfg.header.Add(k, v)
			}
		}
	})
}

// WithMaxMessageSize limits one message in each direction, in bytes.
// Default DefaultMaxMessageSize (4 MiB); zero or less keeps the default.
// grpc.MaxCallRecvMsgSize and grpc.MaxCallSendMsgSize override it per call.
func WithMaxMessageSize(n int) Option {
	return optionFunc(func(cfg *config) {
		if n > 0 {
			cfg.maxMsg = n
		}
	})
}

// WithToken sets the bearer token that every handshake carries, as the
// subprotocol entry base64url.bearer.grpcws.<token> (docs/protocol.md,
// "Bearer token"); the bridge sends it to the backend as
// "authorization: Bearer <token>". Browsers cannot set headers on a
// WebSocket, so this is how every grpcws client carries a token. The token
// must be printable ASCII, or New fails. Conn.SetToken replaces it.
// Default none; "" means none.
func WithToken(token string) Option {
	return optionFunc(func(cfg *config) { cfg.token = token })
}

// WithMultiplexing makes the Conn carry all its RPCs on one WebSocket, in
// the multiplexed protocol grpcws.mux.v1 (docs/protocol-mux.md), instead
// of one WebSocket per RPC. The WebSocket is opened by the first RPC, and
// again by the next RPC after it closes or after the bridge drains it
// (GOAWAY): streams left on a draining WebSocket finish there. Each stream
// has its own flow control, so a stream whose messages are not received
// stalls alone. The bridge must serve grpcws.mux.v1; an older one fails
// every RPC with UNAVAILABLE. Default off: one WebSocket per RPC, protocol
// v1.
func WithMultiplexing() Option {
	return optionFunc(func(cfg *config) { cfg.multiplex = true })
}
