package bridge

import (
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Default values of the options. Each WithX documents what zero means.
// DefaultReadTimeout is WithReadTimeout's, for HTTP calls.
const (
	DefaultMaxMessageSize = 4 << 20 // the same as gRPC's default receive limit
	DefaultPingInterval   = 30 * time.Second
	DefaultPingTimeout    = 20 * time.Second
	DefaultWriteTimeout   = 30 * time.Second
	DefaultReadTimeout    = 30 * time.Second

	// grpcws.mux.v1 (docs/protocol-mux.md): WithMuxLimits and
	// WithMuxWindows.
	DefaultMuxMaxStreams   = 100
	DefaultMuxMaxResets    = 500
	DefaultMuxStreamWindow = 256 << 10
	DefaultMuxConnWindow   = 16 << 20
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
	readTimeout       time.Duration
	metadata          metadataRules
	trustedProxies    []netip.Prefix
	limiter           Limiter // nil: no limits
	observer          Observer
	compression       bool
	validation        bool
	httpProtocols     bool
	fallback          http.Handler // nil: 426
	mux               muxConfig
	logger            *slog.Logger
	accessLog         bool
}

func newConfig(opts []Option) *config {
	c := &config{
		maxMessageSize: DefaultMaxMessageSize,
		pingInterval:   DefaultPingInterval,
		pingTimeout:    DefaultPingTimeout,
		writeTimeout:   DefaultWriteTimeout,
		readTimeout:    DefaultReadTimeout,
		mux: muxConfig{
			maxStreams:   DefaultMuxMaxStreams,
			maxResets:    DefaultMuxMaxResets,
			streamWindow: DefaultMuxStreamWindow,
			connWindow:   DefaultMuxConnWindow,
		},
		metadata: metadataRules{headers: map[string]bool{}, forwardFor: true},
		observer: nopObserver{},
		logger:   slog.Default(),
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

// WithWriteTimeout bounds the time one frame, or one write of an HTTP
// call's response, may take to reach a client. A client that takes no data
// for this long is closed and its RPC cancelled, rather than buffered for. It is a per-frame limit, not a limit on the
// stream's lifetime. Default DefaultWriteTimeout (30 s); zero or less keeps
// the default.
func WithWriteTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.writeTimeout = d
		}
	})
}

// WithMetadataHeaders names request headers that are forwarded to the
// backend as request metadata of the same (lower-case) name, on every
// protocol. Default: none. On a WebSocket, headers named
// Grpc-Metadata-<key> are always forwarded as <key>, since browsers cannot
// set them; an HTTP call's headers are its metadata. Forwarding Cookie or
// Authorization makes the origin check essential: keep the default origin
// policy or a strict list.
func WithMetadataHeaders(names ...string) Option {
	return optionFunc(func(c *config) {
		for _, n := range names {
			c.metadata.headers[strings.ToLower(n)] = true
		}
	})
}

// WithMetadataCookies names cookies that are forwarded to the backend, as
// one "cookie" metadata entry that holds only those cookies. Default: none.
// Forwarding cookies makes the origin check essential: keep the default
// origin policy or a strict list.
func WithMetadataCookies(names ...string) Option {
	return optionFunc(func(c *config) { c.metadata.cookies = append(c.metadata.cookies, names...) })
}

// WithMetadataAllowlist limits the metadata keys a client may set itself
// to keys: on a WebSocket, through Grpc-Metadata-* headers, the query or
// grpc-websockets' header block; on an HTTP call, through its headers.
// Other keys are not forwarded, on every protocol: the call goes on
// without them (and the Handler logs their names at Debug), since
// proxies and browsers add headers of their own. Metadata the operator
// chose (WithMetadataHeaders, WithMetadataCookies, the bearer token's or
// an HTTP call's authorization, trace context, x-forwarded-for) is not
// limited. Default: any key that is not reserved.
func WithMetadataAllowlist(keys ...string) Option {
	return optionFunc(func(c *config) {
		if c.metadata.allow == nil {
			c.metadata.allow = map[string]bool{}
		}
		for _, k := range keys {
			c.metadata.allow[strings.ToLower(k)] = true
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
	return optionFunc(func(c *config) { c.metadata.forwardFor = enabled })
}

// WithHTTPProtocols makes the Handler serve gRPC-Web, Connect and gRPC
// over HTTP too, for the same routes, with the same origins, limits,
// metadata rules, observer and shutdown as its WebSockets, and CORS for the
// allowed origins. Default off: such requests get 426, as every request
// that is not a WebSocket upgrade.
func WithHTTPProtocols(enabled bool) Option {
	return optionFunc(func(c *config) { c.httpProtocols = enabled })
}

// WithFallback serves requests that are neither WebSocket upgrades nor,
// with WithHTTPProtocols, gRPC-Web, Connect or gRPC calls, such as a page
// that uses the bridge. Default: 426 Upgrade Required.
func WithFallback(h http.Handler) Option {
	return optionFunc(func(c *config) { c.fallback = h })
}

// WithReadTimeout bounds, for HTTP calls, the time one read of a request
// body may wait while a message is incomplete. A client stream may pause as
// long as it likes between whole messages, as a WebSocket may. A call
// whose client sends nothing for this long ends with DEADLINE_EXCEEDED.
// Default DefaultReadTimeout (30 s); zero or less keeps the default.
func WithReadTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.readTimeout = d
		}
	})
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

// muxConfig holds grpcws.mux.v1's limits and windows.
type muxConfig struct {
	maxStreams   int
	maxResets    int
	streamWindow int
	connWindow   int
}

// WithMuxLimits sets two limits of grpcws.mux.v1 (docs/protocol-mux.md,
// section 5): the streams one connection may have open at once, beyond
// which an OPEN is refused with RESOURCE_EXHAUSTED (default 100), and the
// streams a connection may cancel or have refused in 10 seconds before it
// is closed with 1008, which stops "rapid reset" floods (default 500).
// Values below 1 keep the defaults.
func WithMuxLimits(maxStreams, maxResets int) Option {
	return optionFunc(func(c *config) {
		if maxStreams > 0 {
			c.mux.maxStreams = maxStreams
		}
		if maxResets > 0 {
			c.mux.maxResets = maxResets
		}
	})
}

// WithMuxWindows sets the flow-control windows the bridge grants a
// grpcws.mux.v1 client (docs/protocol-mux.md, section 4): for each stream
// (default 256 KiB) and for the connection (default 16 MiB). They bound the
// bytes a connection's streams hold waiting for their backends. Values
// below 1024 keep the defaults; the connection window is at least the
// stream window.
func WithMuxWindows(stream, conn int) Option {
	return optionFunc(func(c *config) {
		if stream >= 1024 {
			c.mux.streamWindow = min(stream, math.MaxInt32)
		}
		if conn >= 1024 {
			c.mux.connWindow = min(conn, math.MaxInt32)
		}
		c.mux.connWindow = max(c.mux.connWindow, c.mux.streamWindow)
	})
}
