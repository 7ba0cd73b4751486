package client

import "net/http"

// An Option configures a Conn.
type Option interface {
	apply(*config)
}

type config struct {
	httpClient *http.Client
	header     http.Header
	maxMsg     int
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
