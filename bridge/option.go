package bridge

import (
	"log/slog"
	"time"
)

// Default values of the options. Each WithX documents what zero means.
const (
	DefaultMaxMessageSize = 4 << 20 // the same as gRPC's default receive limit
	DefaultPingInterval   = 30 * time.Second
	DefaultPingTimeout    = 20 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
)

// An Option configures a Handler.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	originPatterns  []string
	maxMessageSize  int
	pingInterval    time.Duration
	pingTimeout     time.Duration
	writeTimeout    time.Duration
	metadataHeaders map[string]bool // lower-case header names
	compression     bool
	validation      bool
	logger          *slog.Logger
}

func newConfig(opts []Option) *config {
	c := &config{
		maxMessageSize:  DefaultMaxMessageSize,
		pingInterval:    DefaultPingInterval,
		pingTimeout:     DefaultPingTimeout,
		writeTimeout:    DefaultWriteTimeout,
		metadataHeaders: map[string]bool{},
		logger:          slog.Default(),
	}
	for _, o := range opts {
		o.apply(c)
	}
	return c
}

// WithOriginPatterns allows WebSocket upgrades from browsers on other
// origins. By default only requests without an Origin header (not browsers)
// and requests whose Origin host equals the request's Host are accepted;
// anything else is closed with 4007 (PERMISSION_DENIED), which protects
// cookie-authenticated backends from cross-site WebSocket hijacking.
//
// A pattern is matched, case-insensitively and with path.Match, against the
// origin's host ("app.example.com", "*.example.com", "localhost:*"), or
// against "scheme://host" when it contains "://". The pattern "*" allows
// every origin.
func WithOriginPatterns(patterns ...string) Option {
	return optionFunc(func(c *config) { c.originPatterns = append(c.originPatterns, patterns...) })
}

// WithMaxMessageSize limits the size of one message in each direction, in
// bytes. Default DefaultMaxMessageSize (4 MiB); zero or less keeps the
// default. A bigger message from the client closes the connection with 1009;
// a bigger one from the backend ends the RPC with RESOURCE_EXHAUSTED and 1009.
func WithMaxMessageSize(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.maxMessageSize = n
		}
	})
}

// WithPing sets how often the bridge pings each client and how long it waits
// for the pong before it takes the client for gone, closes the connection and
// cancels the RPC. Browsers answer pings but cannot send them, so this is the
// only way to notice a client that vanished without closing. Defaults
// DefaultPingInterval (30 s) and DefaultPingTimeout (20 s); an interval of
// zero turns pings off; a timeout of zero or less keeps the default.
func WithPing(interval, timeout time.Duration) Option {
	return optionFunc(func(c *config) {
		c.pingInterval = max(interval, 0)
		if timeout > 0 {
			c.pingTimeout = timeout
		}
	})
}

// WithWriteTimeout bounds the time one frame may take to reach a client. A
// client that takes no data for this long is closed and its RPC cancelled,
// rather than buffered for. It is a per-frame limit, not a limit on the
// stream's lifetime. Default DefaultWriteTimeout (30 s); zero or less keeps
// the default.
func WithWriteTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.writeTimeout = d
		}
	})
}

// WithMetadataHeaders names upgrade-request headers that are forwarded to the
// backend as request metadata of the same (lower-case) name. Default: none.
// Headers named Grpc-Metadata-<key> are always forwarded as <key>, since
// browsers cannot set them. Forwarding Cookie or Authorization makes the
// origin check essential: keep the default origin policy or a strict list.
func WithMetadataHeaders(names ...string) Option {
	return optionFunc(func(c *config) {
		for _, n := range names {
			c.metadataHeaders[lower(n)] = true
		}
	})
}

// WithCompression turns permessage-deflate on or off. Default off: it costs
// CPU and memory per connection, and protobuf messages compress poorly.
func WithCompression(enabled bool) Option {
	return optionFunc(func(c *config) { c.compression = enabled })
}

// WithValidation makes the bridge parse every binary message from the
// client as the method's input type before it forwards it, and end the RPC
// with INVALID_ARGUMENT when it does not parse. Default off: messages are
// passed through as bytes and the backend validates them.
func WithValidation(enabled bool) Option {
	return optionFunc(func(c *config) { c.validation = enabled })
}

// WithLogger sets the logger for connection outcomes. Default slog.Default().
// RPCs that end normally log at Debug, RPCs the backend failed at Info, and
// refused connections and protocol errors at Warn. Tokens are never logged.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.logger = l
		}
	})
}
