package bridge

import (
	"log/slog"
	"net/netip"
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
	originPatterns    []string
	maxMessageSize    int
	idleTimeout       time.Duration
	maxStreamDuration time.Duration
	pingInterval      time.Duration
	pingTimeout       time.Duration
	writeTimeout      time.Duration
	metadataHeaders   map[string]bool // lower-case header names
	metadataCookies   []string
	metadataAllow     map[string]bool // nil: any key
	trustedProxies    []netip.Prefix
	forwardFor        bool
	limiter           *ConnLimiter
	observer          Observer
	compression       bool
	validation        bool
	logger            *slog.Logger
	accessLog         bool
}

func newConfig(opts []Option) *config {
	c := &config{
		maxMessageSize:  DefaultMaxMessageSize,
		pingInterval:    DefaultPingInterval,
		pingTimeout:     DefaultPingTimeout,
		writeTimeout:    DefaultWriteTimeout,
		metadataHeaders: map[string]bool{},
		forwardFor:      true,
		observer:        nopObserver{},
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

// WithIdleTimeout ends an RPC when no message has gone either way for d:
// the client gets an end frame with UNAVAILABLE and the close code 1001, and
// the backend stream is cancelled. Pings do not count as messages. Default
// zero: no idle timeout. Service.Limits can override it per service.
func WithIdleTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.idleTimeout = max(d, 0) })
}

// WithMaxStreamDuration bounds the lifetime of every RPC, as if the client
// had sent that grpc-timeout: the backend sees the deadline, and the RPC
// ends with DEADLINE_EXCEEDED (close code 4004). A shorter grpc-timeout from
// the client still wins. Default zero: no bound. Service.Limits can override
// it per service.
func WithMaxStreamDuration(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxStreamDuration = max(d, 0) })
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

// WithMetadataCookies names cookies of the upgrade request that are
// forwarded to the backend, as one "cookie" metadata entry that holds only
// those cookies. Default: none. Forwarding cookies makes the origin check
// essential: keep the default origin policy or a strict list.
func WithMetadataCookies(names ...string) Option {
	return optionFunc(func(c *config) { c.metadataCookies = append(c.metadataCookies, names...) })
}

// WithMetadataAllowlist limits the metadata keys a client may set itself,
// through Grpc-Metadata-* headers and the query, to keys. A connection that
// sets another key is refused with INVALID_ARGUMENT (4003). Metadata the
// operator chose (WithMetadataHeaders, WithMetadataCookies, the bearer
// token's authorization, trace context, x-forwarded-for) is not limited.
// Default: any key that is not reserved.
func WithMetadataAllowlist(keys ...string) Option {
	return optionFunc(func(c *config) {
		if c.metadataAllow == nil {
			c.metadataAllow = map[string]bool{}
		}
		for _, k := range keys {
			c.metadataAllow[lower(k)] = true
		}
	})
}

// WithTrustedProxies names the proxies in front of the bridge whose
// X-Forwarded-For header it believes. The client's address is the
// connection's peer, or, when the peer is a trusted proxy, the last address
// in X-Forwarded-For that is not a trusted proxy. It is what the connection
// limit per address counts, what the log shows, and what x-forwarded-for
// metadata ends with. Default: none, so X-Forwarded-For is ignored.
func WithTrustedProxies(prefixes ...netip.Prefix) Option {
	return optionFunc(func(c *config) { c.trustedProxies = append(c.trustedProxies, prefixes...) })
}

// WithForwardClientAddress sets whether the backend gets the client's
// address as x-forwarded-for metadata, appended, as a proxy does, to the
// X-Forwarded-For of trusted proxies. Default true.
func WithForwardClientAddress(enabled bool) Option {
	return optionFunc(func(c *config) { c.forwardFor = enabled })
}

// WithConnLimiter caps open connections with l, in total and per client
// address. A connection over a limit is refused: the handshake completes and
// closes with 1013 (try again later) and RESOURCE_EXHAUSTED; open
// connections are not disturbed. One ConnLimiter may be shared by several
// Handlers. Default: no limit.
func WithConnLimiter(l *ConnLimiter) Option {
	return optionFunc(func(c *config) { c.limiter = l })
}

// WithObserver reports connections, messages and outcomes to o, for
// metrics. Default: none.
func WithObserver(o Observer) Option {
	return optionFunc(func(c *config) {
		if o != nil {
			c.observer = o
		}
	})
}

// WithAccessLog logs every RPC, one line when it ends, at Info. Default
// off: RPCs that end with OK log at Debug. See WithLogger.
func WithAccessLog(enabled bool) Option {
	return optionFunc(func(c *config) { c.accessLog = enabled })
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
