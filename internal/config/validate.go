package config

import (
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks c and the files it names: that certificates and keys
// load and CA files hold certificates. It returns nil or an Errors value
// with every problem, without file names or lines (see Error). Parse and
// Load have already validated what they return; Validate is for a Config
// built or changed in code, e.g. from flags.
//
// Whether the routed services exist on the backends is not checked here:
// the bridge checks that when it has read their descriptors.
func (c *Config) Validate() error {
	v := &validator{readFile: os.ReadFile}
	v.config(c)
	return v.err()
}

// maxMessageSize is the largest message size a limit may allow: gRPC's
// length prefix has 32 bits.
const maxMessageSize = 2 * GiB

// A validator checks a Config and records what is wrong.
type validator struct {
	problems
	readFile        func(string) ([]byte, error)
	backendsUnknown bool // backends did not decode: do not check that routes name one
}

func (v *validator) config(c *Config) {
	v.address("listen.address", c.Listen.Address)
	if t := c.Listen.TLS; t != nil {
		v.listenTLS("listen.tls", t)
	}
	v.address("admin.address", c.Admin.Address)
	if a := c.Admin.Address; a != "" && a == c.Listen.Address && !strings.HasSuffix(a, ":0") {
		v.bad("admin.address", a, "must differ from listen.address")
	}
	v.oneOf("log.format", c.Log.Format, "text", "json")
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.backends(c.Backends)
	v.routes(c)
	v.limits(c.Limits)
	for i, o := range c.Origins {
		v.origin(fmt.Sprintf("origins[%d]", i), o)
	}
	v.metadata(c.Metadata)
	for i, s := range c.TrustedProxies {
		if _, err := parsePrefix(s); err != nil {
			v.bad(fmt.Sprintf("trusted_proxies[%d]", i), s, err.Error())
		}
	}
	v.tracing(c.Tracing)
	v.drain(c.Drain)
}

// address checks a listener's host:port. Port 0 picks a free port.
func (v *validator) address(field, s string) {
	host, port, err := net.SplitHostPort(s)
	switch {
	case s == "":
		v.bad(field, s, "must not be empty")
	case err != nil:
		v.bad(field, s, `must be host:port or :port, such as ":8080" or "127.0.0.1:9901"`)
	case !validPort(port, 0):
		v.bad(field, s, "the port must be a number from 0 to 65535")
	case host != "" && !validHost(host):
		v.bad(field, s, "the host must be an IP address or a host name")
	}
}

func (v *validator) listenTLS(p string, t *ListenTLS) {
	v.keyPair(p, t.CertFile, t.KeyFile, true)
	if t.ClientCAFile != "" {
		v.caFile(p+".client_ca_file", t.ClientCAFile)
	}
	switch t.ClientAuth {
	case "", "require", "verify_if_given":
		if t.ClientAuth != "" && t.ClientCAFile == "" {
			v.bad(p+".client_auth", t.ClientAuth, "needs client_ca_file, the CAs to verify client certificates with")
		}
	default:
		v.bad(p+".client_auth", t.ClientAuth, `must be "require" or "verify_if_given"`)
	}
	if t.MinVersion != "" {
		v.oneOf(p+".min_version", t.MinVersion, "1.2", "1.3")
	}
}

// keyPair checks that a certificate and its key load together. With
// required, both must be given; otherwise both or neither.
func (v *validator) keyPair(p, certFile, keyFile string, required bool) {
	if certFile == "" && (required || keyFile != "") {
		v.bad(p+".cert_file", "", "must not be empty"+unless(required, " when key_file is set"))
	}
	if keyFile == "" && (required || certFile != "") {
		v.bad(p+".key_file", "", "must not be empty"+unless(required, " when cert_file is set"))
	}
	certPEM, certOK := v.file(p+".cert_file", certFile)
	keyPEM, keyOK := v.file(p+".key_file", keyFile)
	if !certOK || !keyOK {
		return
	}
	if !hasPEM(certPEM, "CERTIFICATE") {
		v.bad(p+".cert_file", certFile, "holds no PEM certificate")
		return
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		v.bad(p+".key_file", keyFile, "does not load with cert_file: "+strings.TrimPrefix(err.Error(), "tls: "))
	}
}

// unless returns s, or "" when cond holds.
func unless(cond bool, s string) string {
	if cond {
		return ""
	}
	return s
}

// caFile checks that a CA file holds PEM certificates.
func (v *validator) caFile(field, name string) {
	if data, ok := v.file(field, name); ok && !hasPEM(data, "CERTIFICATE") {
		v.bad(field, name, "holds no PEM certificate")
	}
}

// file reads a file the configuration names; ok is false when name is
// empty or the file cannot be read, which it reports.
func (v *validator) file(field, name string) (data []byte, ok bool) {
	if name == "" {
		return nil, false
	}
	data, err := v.readFile(name)
	if err != nil {
		v.bad(field, name, fileProblem(err))
		return nil, false
	}
	return data, true
}

// fileProblem describes why a file could not be read, without its name.
func fileProblem(err error) string {
	var pe *fs.PathError
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such file"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied"
	case errors.As(err, &pe):
		return "cannot read: " + pe.Err.Error()
	}
	return "cannot read: " + err.Error()
}

// hasPEM reports whether data holds a PEM block of the type.
func hasPEM(data []byte, typ string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == typ {
			return true
		}
	}
}

var backendName = regexp.MustCompile(`^[a-z0-9-]+$`)

func (v *validator) backends(backends []Backend) {
	names := map[string]int{}
	for i, b := range backends {
		p := fmt.Sprintf("backends[%d]", i)
		switch j, dup := names[b.Name]; {
		case b.Name == "":
			v.bad(p+".name", b.Name, "must not be empty")
		case !backendName.MatchString(b.Name):
			v.bad(p+".name", b.Name, "must be lower-case letters, digits and -")
		case dup:
			v.bad(p+".name", b.Name, fmt.Sprintf("already the name of backends[%d]", j))
		default:
			names[b.Name] = i
		}
		if problem := targetProblem(b.Target); problem != "" {
			v.bad(p+".target", b.Target, problem)
		}
		if t := b.TLS; t != nil {
			tp := p + ".tls"
			if t.CAFile != "" {
				v.caFile(tp+".ca_file", t.CAFile)
			}
			v.keyPair(tp, t.CertFile, t.KeyFile, false)
			if t.InsecureSkipVerify && t.CAFile != "" {
				v.bad(tp+".insecure_skip_verify", "true", "cannot be used with ca_file: nothing would be verified")
			}
			if t.ServerName != "" && !validHost(t.ServerName) {
				v.bad(tp+".server_name", t.ServerName, "must be a host name")
			}
		}
		if b.LoadBalancing != "" {
			v.oneOf(p+".load_balancing", b.LoadBalancing, "pick_first", "round_robin")
		}
		k := b.Keepalive
		if v.notNegative(p+".keepalive.time", k.Time) && k.Time > 0 && k.Time < 10*time.Second {
			v.bad(p+".keepalive.time", k.Time.String(), "must be 0 (off) or at least 10s: gRPC servers refuse more frequent pings")
		}
		v.notNegative(p+".keepalive.timeout", k.Timeout)
		if b.MaxMessageSize < 0 {
			v.bad(p+".max_message_size", b.MaxMessageSize.String(), "must not be negative")
		} else if b.MaxMessageSize > maxMessageSize {
			v.bad(p+".max_message_size", b.MaxMessageSize.String(), "must be at most 2GiB")
		}
		v.descriptors(p+".descriptors", b.Descriptors)
		if b.ConnectTimeout <= 0 {
			v.bad(p+".connect_timeout", b.ConnectTimeout.String(), "must be positive")
		}
	}
}

func (v *validator) descriptors(p string, d Descriptors) {
	for i, f := range d.Files {
		field := fmt.Sprintf("%s.files[%d]", p, i)
		if f == "" {
			v.bad(field, f, "must not be empty")
			continue
		}
		v.file(field, f)
	}
	switch {
	case d.Reflection != nil && *d.Reflection && len(d.Files) > 0:
		v.bad(p+".reflection", "true", "cannot be used with files: the files replace reflection")
	case d.Reflection != nil && !*d.Reflection && len(d.Files) == 0:
		v.bad(p+".reflection", "false", "needs files: without reflection or descriptor files the backend's services are unknown")
	}
	if v.notNegative(p+".refresh_interval", d.RefreshInterval) && d.RefreshInterval > 0 {
		switch {
		case len(d.Files) > 0:
			v.bad(p+".refresh_interval", d.RefreshInterval.String(), "cannot be used with files: only reflection is refreshed")
		case d.RefreshInterval < time.Second:
			v.bad(p+".refresh_interval", d.RefreshInterval.String(), "must be 0 (off) or at least 1s")
		}
	}
}

// targetProblem describes what is wrong with a gRPC target, or returns "".
// It never repeats the target.
func targetProblem(target string) string {
	const want = "must be host:port or a gRPC target such as dns:///host:port or unix:///path"
	scheme, rest, _ := strings.Cut(target, ":")
	switch scheme {
	case "dns":
		if strings.HasPrefix(rest, "//") {
			var ok bool
			if _, rest, ok = strings.Cut(rest[2:], "/"); !ok {
				return `dns: must be dns:///host:port or dns://resolver/host:port`
			}
		}
		if !validEndpoint(rest, true) {
			return "dns: must name a host, with an optional port from 1 to 65535"
		}
	case "unix":
		if strings.HasPrefix(rest, "//") && !strings.HasPrefix(rest, "///") {
			return "unix: must be unix:///absolute/path or unix:relative/path"
		}
		if strings.TrimPrefix(rest, "//") == "" {
			return "unix: needs a path"
		}
	case "unix-abstract", "passthrough":
		if strings.TrimPrefix(rest, "///") == "" {
			return scheme + ": needs an address"
		}
	case "ipv4", "ipv6":
		// gRPC's naming document has them, gRPC-Go has no resolver for them.
		return scheme + ": not supported by gRPC-Go; write host:port, or passthrough:///address:port"
	default:
		switch {
		case target == "":
			return "must not be empty"
		case strings.Contains(target, "://"):
			return "the scheme must be dns, unix, unix-abstract or passthrough"
		case !validEndpoint(target, false):
			return want
		}
	}
	return ""
}

// validEndpoint reports whether s is host:port, or with optionalPort also
// a host alone, with a port from 1 to 65535.
func validEndpoint(s string, optionalPort bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if !optionalPort {
			return false
		}
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), ""
	}
	if host == "" || !validHost(host) {
		return false
	}
	return port == "" && optionalPort || validPort(port, 1)
}

// validPort reports whether port is a number from min to 65535.
func validPort(port string, min uint64) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n >= min
}

var hostName = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?$`)

// validHost reports whether s is an IP address or a DNS name.
func validHost(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	return len(s) <= 253 && hostName.MatchString(s)
}

func (v *validator) routes(c *Config) {
	backends := map[string]bool{}
	for _, b := range c.Backends {
		backends[b.Name] = true
	}
	// First the whole services and the all-routes, then the methods and
	// aliases against them, so that order does not matter.
	services := map[string]string{} // service → where it is exposed
	all := map[string]string{}      // backend → its route with all: true
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Backend == "":
			v.bad(p+".backend", r.Backend, "must not be empty")
		case !backends[r.Backend] && !v.backendsUnknown:
			v.bad(p+".backend", r.Backend, "no backend has this name")
		}
		switch {
		case r.All && len(r.Services)+len(r.Methods) > 0:
			v.bad(p+".all", "true", "cannot be used with services or methods: all exposes every service")
		case r.All:
			if j, ok := all[r.Backend]; ok {
				v.bad(p+".all", "true", "the backend's services are already exposed by "+j)
			} else {
				all[r.Backend] = p
			}
		case len(r.Services)+len(r.Methods) == 0:
			v.fail(p, "must list services or methods, or set all: true to expose every service the backend has")
		}
		for k, s := range r.Services {
			field := fmt.Sprintf("%s.services[%d]", p, k)
			switch prev, dup := services[s]; {
			case !validFullName(s):
				v.bad(field, s, `must be a full service name, such as "orders.v1.OrderService"`)
			case dup:
				v.bad(field, s, "already exposed by "+prev)
			default:
				services[s] = field
			}
		}
	}
	methods := map[string]string{}
	aliases := map[string]string{}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		for k, s := range r.Services {
			if j, ok := all[r.Backend]; ok && j != p && !internalService(s) && services[s] == fmt.Sprintf("%s.services[%d]", p, k) {
				v.bad(fmt.Sprintf("%s.services[%d]", p, k), s, "already exposed by "+j+" (all: true)")
			}
		}
		for k, m := range r.Methods {
			field := fmt.Sprintf("%s.methods[%d]", p, k)
			svc, _, ok := splitMethod(m)
			if !ok {
				v.bad(field, m, `must be a method, "package.Service/Method"`)
				continue
			}
			prev, dup := methods[m]
			whole, inService := services[svc]
			allRoute, inAll := all[r.Backend]
			switch {
			case dup:
				v.bad(field, m, "already exposed by "+prev)
			case inService:
				v.bad(field, m, "already exposed by "+whole+", the whole service")
			case inAll && allRoute != p && !internalService(svc):
				v.bad(field, m, "already exposed by "+allRoute+" (all: true)")
			}
			if !dup {
				methods[m] = field
			}
		}
		for _, m := range slices.Sorted(maps.Keys(r.Aliases)) {
			field := mapKey(p+".aliases", m)
			svc, _, ok := splitMethod(m)
			if !ok {
				v.fail(field, `the key must be a method, "package.Service/Method"`)
				continue
			}
			if !(r.All && !internalService(svc) || slices.Contains(r.Services, svc) || slices.Contains(r.Methods, m)) {
				v.fail(field, "the route does not expose this method")
			}
			name := r.Aliases[m]
			switch prev, dup := aliases[name]; {
			case name == "":
				v.bad(field, name, "must not be empty")
			case !isToken(name):
				v.bad(field, name, "must be a WebSocket subprotocol: letters, digits and !#$%&'*+-.^_`|~")
			case strings.HasSuffix(name, "+json"):
				v.bad(field, name, `must not end in "+json": the JSON encoding adds it`)
			case strings.HasPrefix(name, "base64url.bearer."):
				v.bad(field, name, `must not start with "base64url.bearer.": that is a bearer token`)
			case dup:
				v.bad(field, name, "already the alias of "+prev)
			default:
				aliases[name] = field
			}
		}
		v.notNegative(p+".idle_timeout", r.IdleTimeout)
		v.notNegative(p+".max_stream_duration", r.MaxStreamDuration)
		if r.MaxMessageSize < 0 {
			v.bad(p+".max_message_size", r.MaxMessageSize.String(), "must not be negative")
		} else if r.MaxMessageSize > maxMessageSize {
			v.bad(p+".max_message_size", r.MaxMessageSize.String(), "must be at most 2GiB")
		}
	}
}

// internalService reports whether a service is one that all: true leaves
// out.
func internalService(s string) bool {
	return strings.HasPrefix(s, "grpc.reflection.") || strings.HasPrefix(s, "grpc.health.")
}

// splitMethod splits "pkg.Service/Method".
func splitMethod(m string) (service, method string, ok bool) {
	service, method, ok = strings.Cut(m, "/")
	return service, method, ok && validFullName(service) && validIdent(method)
}

// validFullName reports whether s is a protobuf full name, "a.b.C".
func validFullName(s string) bool {
	for part := range strings.SplitSeq(s, ".") {
		if !validIdent(part) {
			return false
		}
	}
	return true
}

func validIdent(s string) bool {
	for i, r := range s {
		if !(r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || i > 0 && '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

// isToken reports whether s is an HTTP token (RFC 9110 tchar).
func isToken(s string) bool {
	for _, r := range s {
		if !(strings.ContainsRune("!#$%&'*+-.^_`|~", r) || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return false
		}
	}
	return s != ""
}

func (v *validator) limits(l Limits) {
	const p = "limits"
	if l.MaxConnections < 0 {
		v.bad(p+".max_connections", strconv.Itoa(l.MaxConnections), "must not be negative (0 means no limit)")
	}
	if l.MaxConnectionsPerIP < 0 {
		v.bad(p+".max_connections_per_ip", strconv.Itoa(l.MaxConnectionsPerIP), "must not be negative (0 means no limit)")
	}
	v.positive(p+".handshake_timeout", l.HandshakeTimeout)
	v.notNegative(p+".idle_timeout", l.IdleTimeout)
	v.notNegative(p+".max_stream_duration", l.MaxStreamDuration)
	switch {
	case l.MaxMessageSize <= 0:
		v.bad(p+".max_message_size", l.MaxMessageSize.String(), "must be positive")
	case l.MaxMessageSize > maxMessageSize:
		v.bad(p+".max_message_size", l.MaxMessageSize.String(), "must be at most 2GiB")
	}
	v.positive(p+".write_timeout", l.WriteTimeout)
	v.positive(p+".read_timeout", l.ReadTimeout)
	if v.notNegative(p+".ping_interval", l.PingInterval) && l.PingInterval > 0 && l.PingInterval < time.Second {
		v.bad(p+".ping_interval", l.PingInterval.String(), "must be 0 (no pings) or at least 1s")
	}
	v.positive(p+".ping_timeout", l.PingTimeout)
	const m = p + ".mux"
	if l.Mux.MaxStreams <= 0 {
		v.bad(m+".max_streams", strconv.Itoa(l.Mux.MaxStreams), "must be positive")
	}
	if l.Mux.MaxResets <= 0 {
		v.bad(m+".max_resets", strconv.Itoa(l.Mux.MaxResets), "must be positive")
	}
	const minWindow, maxWindow = 1 << 10, 1<<31 - 1
	switch {
	case l.Mux.StreamWindow < minWindow || l.Mux.StreamWindow > maxWindow:
		v.bad(m+".stream_window", l.Mux.StreamWindow.String(), "must be from 1KiB to 2GiB less one byte")
	case l.Mux.ConnectionWindow < l.Mux.StreamWindow || l.Mux.ConnectionWindow > maxWindow:
		v.bad(m+".connection_window", l.Mux.ConnectionWindow.String(), "must be from stream_window to 2GiB less one byte")
	}
}

// origin checks an origin pattern: "host", "*.host", "host:*",
// "scheme://host" or "*".
func (v *validator) origin(field, o string) {
	host := o
	if i := strings.Index(o, "://"); i >= 0 {
		host = o[i+3:]
		if i == 0 {
			v.bad(field, o, `the scheme must not be empty: write "https://host" or just "host"`)
			return
		}
	}
	_, err := path.Match(o, "")
	switch {
	case o == "":
		v.bad(field, o, "must not be empty")
	case err != nil:
		v.bad(field, o, "must be a pattern in path.Match syntax")
	case host == "":
		v.bad(field, o, "must name a host")
	case strings.Contains(host, "/"):
		v.bad(field, o, "must not have a path: an origin is [scheme://]host[:port]")
	}
}

func (v *validator) metadata(m Metadata) {
	const p = "metadata"
	for i, h := range m.Headers {
		field := fmt.Sprintf("%s.headers[%d]", p, i)
		switch k := strings.ToLower(h); {
		case h == "":
			v.bad(field, h, "must not be empty")
		case !isToken(h) || !validMetadataKey(k):
			v.bad(field, h, "must be a header name made of letters, digits, _ . and -")
		case reservedMetadataKey(k):
			v.bad(field, h, "is reserved by gRPC and cannot be metadata")
		}
	}
	for i, c := range m.Cookies {
		if !isToken(c) {
			v.bad(fmt.Sprintf("%s.cookies[%d]", p, i), c, "must be a cookie name: letters, digits and !#$%&'*+-.^_`|~")
		}
	}
	for i, k := range m.Allow {
		field := fmt.Sprintf("%s.allow[%d]", p, i)
		switch lk := strings.ToLower(k); {
		case k == "":
			v.bad(field, k, "must not be empty")
		case !validMetadataKey(lk):
			v.bad(field, k, "must be a metadata key made of letters, digits, _ . and -")
		case reservedMetadataKey(lk):
			v.bad(field, k, "is reserved by gRPC: clients can never set it")
		}
	}
}

// validMetadataKey reports whether k, lower-cased, is a gRPC metadata key.
func validMetadataKey(k string) bool {
	for _, r := range k {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_' || r == '.' || r == '-') {
			return false
		}
	}
	return k != ""
}

// reservedMetadataKey reports whether gRPC keeps k for itself.
func reservedMetadataKey(k string) bool {
	switch k {
	case "content-type", "te", "connection", "host", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return strings.HasPrefix(k, "grpc-")
}

// parsePrefix parses a trusted proxy: a CIDR prefix or one address.
func parsePrefix(s string) (netip.Prefix, error) {
	errSyntax := errors.New(`must be an IP address or a CIDR prefix, such as "10.0.0.0/8"`)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			return netip.Prefix{}, errSyntax
		case p != p.Masked():
			return netip.Prefix{}, errors.New("has address bits set past the prefix length")
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errSyntax
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (v *validator) tracing(t Tracing) {
	const p = "tracing"
	if t.OTLPEndpoint != "" || t.Enabled {
		u, err := url.Parse(t.OTLPEndpoint)
		switch {
		case t.OTLPEndpoint == "":
			v.bad(p+".otlp_endpoint", "", "must not be empty when tracing is enabled")
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			v.bad(p+".otlp_endpoint", t.OTLPEndpoint, `must be an http:// or https:// URL, such as "http://otel-collector:4318"`)
		}
	}
	if t.Enabled && t.ServiceName == "" {
		v.bad(p+".service_name", "", "must not be empty when tracing is enabled")
	}
}

func (v *validator) drain(d Drain) {
	v.notNegative("drain.grace_period", d.GracePeriod)
	if v.positive("drain.timeout", d.Timeout) && d.Timeout < d.GracePeriod {
		v.bad("drain.timeout", d.Timeout.String(), "must be at least drain.grace_period")
	}
}

// oneOf checks that s is one of the choices.
func (v *validator) oneOf(field, s string, choices ...string) {
	if slices.Contains(choices, s) {
		return
	}
	quoted := make([]string, len(choices))
	for i, c := range choices {
		quoted[i] = strconv.Quote(c)
	}
	last := len(quoted) - 1
	v.bad(field, s, "must be "+strings.Join(quoted[:last], ", ")+" or "+quoted[last])
}

// notNegative checks a duration that may be 0, and reports whether it is
// not negative.
func (v *validator) notNegative(field string, d time.Duration) bool {
	if d < 0 {
		v.bad(field, d.String(), "must not be negative")
		return false
	}
	return true
}

// positive checks a duration that must be more than 0, and reports
// whether it is.
func (v *validator) positive(field string, d time.Duration) bool {
	if d <= 0 {
		v.bad(field, d.String(), "must be positive")
		return false
	}
	return true
}
