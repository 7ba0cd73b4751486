// Package config is the sidecar's configuration: one YAML file, decoded
// into a Config and validated.
//
// Load and Parse read a file; Default and NewBackend give the defaults a
// Config built in code starts from; Validate checks one. Every problem is
// reported at once, as an Errors value whose lines name the file, the line,
// the key and the bad value (see Error). Any string value may refer to an
// environment variable as ${NAME}. Every key, its default and its meaning
// are in docs/configuration.md.
//
// Types in this package are plain values with no hidden state: a Config is
// safe to read from many goroutines once nothing writes to it.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole configuration of the sidecar. The zero value is not
// valid: start from Default or from Parse.
type Config struct {
	Listen   Listen    `yaml:"listen"`
	Admin    Admin     `yaml:"admin"`
	Log      Log       `yaml:"log"`
	Backends []Backend `yaml:"backends"`
	Routes   []Route   `yaml:"routes"`
	Limits   Limits    `yaml:"limits"`
	// Origins are the browser origins allowed besides the bridge's own:
	// host patterns ("app.example.com", "*.example.com", "localhost:*"),
	// "scheme://host" patterns ("https://app.example.com"), or "*" for
	// every origin. Patterns use path.Match syntax and match
	// case-insensitively. Default: none, same-origin only.
	Origins  []string `yaml:"origins"`
	Metadata Metadata `yaml:"metadata"`
	// TrustedProxies are the addresses (CIDR prefixes or single IPs) of
	// proxies whose X-Forwarded-For the bridge believes. Default: none.
	// See TrustedProxyPrefixes.
	TrustedProxies []string `yaml:"trusted_proxies"`
	Tracing        Tracing  `yaml:"tracing"`
	Drain          Drain    `yaml:"drain"`
}

// Listen is the WebSocket listener.
type Listen struct {
	Address string     `yaml:"address"` // host:port; default ":8080"
	TLS     *ListenTLS `yaml:"tls"`     // nil: plain ws://
}

// ListenTLS makes the listener serve wss://. The files are re-read when
// they change.
type ListenTLS struct {
	CertFile     string `yaml:"cert_file"`      // required: PEM certificate chain
	KeyFile      string `yaml:"key_file"`       // required: PEM private key
	ClientCAFile string `yaml:"client_ca_file"` // optional: verify client certificates against these CAs
	// ClientAuth is "require" or "verify_if_given", only with
	// ClientCAFile. "" means "require".
	ClientAuth string `yaml:"client_auth"`
	MinVersion string `yaml:"min_version"` // "1.2" or "1.3"; "" means "1.2"
}

// Admin is the listener for /metrics, /healthz, /readyz and, if enabled,
// /debug/pprof/.
type Admin struct {
	Address string `yaml:"address"` // host:port; default "127.0.0.1:9901"; required
	Pprof   bool   `yaml:"pprof"`   // serve /debug/pprof/; default false
}

// Log is the process log.
type Log struct {
	Format string `yaml:"format"` // "text" (default) or "json"
	Level  string `yaml:"level"`  // "debug", "info" (default), "warn" or "error"
	Access *bool  `yaml:"access"` // one line per RPC at info; nil means true. See AccessEnabled.
}

// AccessEnabled reports whether every RPC is logged at info: Access, or
// true when it is unset.
func (l Log) AccessEnabled() bool { return l.Access == nil || *l.Access }

// Backend is one gRPC server the bridge forwards to.
type Backend struct {
	// Name identifies the backend in routes, logs and metric labels:
	// [a-z0-9-]+, unique. Required.
	Name string `yaml:"name"`
	// Target is a gRPC target: "host:port", "dns:///host:port",
	// "dns://resolver/host:port", "unix:///path", "unix:path",
	// "unix-abstract:name" or "passthrough:///address:port". Required.
	Target        string      `yaml:"target"`
	TLS           *BackendTLS `yaml:"tls"`            // nil: plaintext
	LoadBalancing string      `yaml:"load_balancing"` // "pick_first" (default) or "round_robin"
	Keepalive     Keepalive   `yaml:"keepalive"`
	// MaxMessageSize is gRPC's send and receive limit on the connection to
	// this backend. Default 4MiB; 0 leaves gRPC's own defaults.
	MaxMessageSize ByteSize    `yaml:"max_message_size"`
	Descriptors    Descriptors `yaml:"descriptors"`
	// Required makes /readyz fail while this backend is not connected. nil
	// means true. See IsRequired.
	Required *bool `yaml:"required"`
	// ConnectTimeout bounds each attempt to read the backend's services by
	// reflection. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

// IsRequired reports whether /readyz waits for this backend: Required, or
// true when it is unset.
func (b Backend) IsRequired() bool { return b.Required == nil || *b.Required }

// BackendTLS makes the connection to a backend use TLS.
type BackendTLS struct {
	CAFile             string `yaml:"ca_file"`              // PEM CAs to verify the backend; default: the system's roots
	CertFile           string `yaml:"cert_file"`            // client certificate for mutual TLS; with KeyFile
	KeyFile            string `yaml:"key_file"`             // its private key; with CertFile
	ServerName         string `yaml:"server_name"`          // name to verify; default: the target's host
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"` // do not verify the backend; default false
}

// Keepalive is gRPC's client keepalive towards a backend.
type Keepalive struct {
	Time                time.Duration `yaml:"time"`                  // ping after this much silence; 0 (default) = off, else at least 10s
	Timeout             time.Duration `yaml:"timeout"`               // wait this long for the answer; default 20s
	PermitWithoutStream bool          `yaml:"permit_without_stream"` // ping with no stream open; default false
}

// Descriptors says where a backend's service descriptors come from.
type Descriptors struct {
	// Files are descriptor sets (buf build -o api.binpb, or protoc
	// --include_imports --descriptor_set_out). When set, reflection is
	// not used.
	Files []string `yaml:"files"`
	// Reflection reads the descriptors from the backend's server
	// reflection. nil means true when Files is empty; true together with
	// Files is an error, and so is false without Files.
	Reflection *bool `yaml:"reflection"`
	// RefreshInterval re-reads reflection on this interval too, besides
	// every reconnect. 0 (default): only on reconnect. Not with Files.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
}

// UsesReflection reports whether the descriptors come from server
// reflection rather than files.
func (d Descriptors) UsesReflection() bool { return len(d.Files) == 0 }

// Route exposes services or methods of one backend. Exactly one of All, or
// Services and Methods, is given.
type Route struct {
	Backend  string   `yaml:"backend"`  // a Backend's Name; required
	Services []string `yaml:"services"` // full service names, "orders.v1.OrderService"
	Methods  []string `yaml:"methods"`  // single methods, "orders.v1.OrderService/Watch"
	// All exposes every service the backend has, except
	// grpc.reflection.* and grpc.health.*.
	All bool `yaml:"all"`
	// Aliases maps a method ("pkg.Service/Method") the route exposes to a
	// second subprotocol name for it: an HTTP token, not ending in "+json".
	Aliases map[string]string `yaml:"aliases"`
	// The per-stream limits of this route. 0 means the value in Limits;
	// see Effective.
	MaxMessageSize    ByteSize      `yaml:"max_message_size"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxStreamDuration time.Duration `yaml:"max_stream_duration"`
}

// Effective returns the route's per-stream limits, taking each from l
// where the route leaves it 0. The backend's own MaxMessageSize caps the
// gRPC side separately.
func (r Route) Effective(l Limits) (maxMsg ByteSize, idle, maxDur time.Duration) {
	maxMsg, idle, maxDur = l.MaxMessageSize, l.IdleTimeout, l.MaxStreamDuration
	if r.MaxMessageSize > 0 {
		maxMsg = r.MaxMessageSize
	}
	if r.IdleTimeout > 0 {
		idle = r.IdleTimeout
	}
	if r.MaxStreamDuration > 0 {
		maxDur = r.MaxStreamDuration
	}
	return maxMsg, idle, maxDur
}

// Limits bound connections and streams. docs/configuration.md gives the
// close code each one ends a connection with.
type Limits struct {
	MaxConnections      int           `yaml:"max_connections"`        // open connections; default 10000; 0 = no limit
	MaxConnectionsPerIP int           `yaml:"max_connections_per_ip"` // open connections per client address; default 100; 0 = no limit
	HandshakeTimeout    time.Duration `yaml:"handshake_timeout"`      // TLS and WebSocket handshake; default 10s; > 0
	IdleTimeout         time.Duration `yaml:"idle_timeout"`           // no message either way; default 0 = none
	MaxStreamDuration   time.Duration `yaml:"max_stream_duration"`    // lifetime of one RPC; default 0 = none
	MaxMessageSize      ByteSize      `yaml:"max_message_size"`       // one message, each direction; default 4MiB; > 0
	WriteTimeout        time.Duration `yaml:"write_timeout"`          // one frame to the client; default 30s; > 0
	ReadTimeout         time.Duration `yaml:"read_timeout"`           // the next bytes of an HTTP request body; default 30s; > 0
	PingInterval        time.Duration `yaml:"ping_interval"`          // default 30s; 0 = no pings; else at least 1s
	PingTimeout         time.Duration `yaml:"ping_timeout"`           // wait for the pong; default 20s; > 0
	Mux                 MuxLimits     `yaml:"mux"`                    // grpcws.mux.v1 connections
}

// MuxLimits bound the connections of the multiplexed protocol
// (docs/protocol-mux.md, sections 4 and 5).
type MuxLimits struct {
	MaxStreams       int      `yaml:"max_streams"`       // open streams per connection; default 100; > 0
	MaxResets        int      `yaml:"max_resets"`        // streams cancelled or refused per 10s before close 1008; default 500; > 0
	StreamWindow     ByteSize `yaml:"stream_window"`     // flow-control window per stream; default 256KiB
	ConnectionWindow ByteSize `yaml:"connection_window"` // flow-control window per connection; default 16MiB; >= stream_window
}

// Metadata says what of the upgrade request reaches the backend as
// request metadata.
type Metadata struct {
	// Headers are request headers forwarded as metadata of the same,
	// lower-cased, name. Grpc-Metadata-* headers are always forwarded.
	Headers []string `yaml:"headers"`
	// Cookies are cookie names forwarded, together, as one "cookie"
	// metadata entry.
	Cookies []string `yaml:"cookies"`
	// Allow, when not empty, is the only metadata keys a client may set
	// itself (Grpc-Metadata-* headers and the query); others are refused.
	Allow []string `yaml:"allow"`
	// ForwardClientAddress sends the client's address as x-forwarded-for
	// metadata. nil means true; see ForwardClientAddressEnabled.
	ForwardClientAddress *bool `yaml:"forward_client_address"`
}

// ForwardClientAddressEnabled reports whether x-forwarded-for is sent:
// ForwardClientAddress, or true when it is unset.
func (m Metadata) ForwardClientAddressEnabled() bool {
	return m.ForwardClientAddress == nil || *m.ForwardClientAddress
}

// Tracing is OpenTelemetry tracing. traceparent and tracestate are
// forwarded to backends whether or not it is enabled.
type Tracing struct {
	Enabled      bool   `yaml:"enabled"`       // default false
	OTLPEndpoint string `yaml:"otlp_endpoint"` // OTLP/HTTP URL, "http://otel-collector:4318"; required when enabled
	ServiceName  string `yaml:"service_name"`  // default "grpcws"
}

// Drain is what happens on SIGTERM.
type Drain struct {
	GracePeriod time.Duration `yaml:"grace_period"` // open streams may finish, then get 1001; default 25s
	Timeout     time.Duration `yaml:"timeout"`      // the whole shutdown; default 30s; at least GracePeriod
}

// Defaults that are not obvious from Default.
const (
	DefaultMaxMessageSize = 4 * MiB
	DefaultConnectTimeout = 10 * time.Second
)

// Default returns a Config with every default filled in and no backends,
// routes, origins or trusted proxies.
func Default() *Config {
	return &Config{
		Listen: Listen{Address: ":8080"},
		Admin:  Admin{Address: "127.0.0.1:9901"},
		Log:    Log{Format: "text", Level: "info"},
		Limits: Limits{
			MaxConnections:      10000,
			MaxConnectionsPerIP: 100,
			HandshakeTimeout:    10 * time.Second,
			MaxMessageSize:      DefaultMaxMessageSize,
			WriteTimeout:        30 * time.Second,
			ReadTimeout:         30 * time.Second,
			PingInterval:        30 * time.Second,
			PingTimeout:         20 * time.Second,
			Mux: MuxLimits{
				MaxStreams:       100,
				MaxResets:        500,
				StreamWindow:     256 << 10,
				ConnectionWindow: 16 << 20,
			},
		},
		Tracing: Tracing{ServiceName: "grpcws"},
		Drain:   Drain{GracePeriod: 25 * time.Second, Timeout: 30 * time.Second},
	}
}

// NewBackend returns a Backend with every default filled in.
func NewBackend(name, target string) Backend {
	return Backend{
		Name:           name,
		Target:         target,
		LoadBalancing:  "pick_first",
		Keepalive:      Keepalive{Timeout: 20 * time.Second},
		MaxMessageSize: DefaultMaxMessageSize,
		ConnectTimeout: DefaultConnectTimeout,
	}
}

// TrustedProxyPrefixes returns TrustedProxies as prefixes; a single address
// is a prefix of its full length. Entries that do not parse are left out:
// Validate reports them.
func (c *Config) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.TrustedProxies {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}
