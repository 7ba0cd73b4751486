package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseTest parses doc as "grpcws.yaml" with the files of testFiles.
func parseTest(doc string, vars map[string]string) (*Config, error) {
	return parse([]byte(doc), "grpcws.yaml", env(vars), readFiles(testFiles()))
}

const allKeys = "listen, admin, log, backends, routes, limits, origins, metadata, trusted_proxies, tracing, drain"

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		doc  string
		env  map[string]string
		want []string // the lines of the error
	}{
		{
			name: "syntax error keeps yaml's line",
			doc:  "listen:\n  address: x\n   tls: y\n",
			want: []string{`grpcws.yaml:3: YAML syntax: mapping values are not allowed in this context`},
		},
		{
			name: "syntax error on the first line",
			doc:  "listen: tls: x\n",
			want: []string{`grpcws.yaml:1: YAML syntax: mapping values are not allowed in this context`},
		},
		{
			name: "unknown anchor has no line",
			doc:  "listen: *tls\n",
			want: []string{`grpcws.yaml: YAML syntax: unknown anchor 'tls' referenced`},
		},
		{
			name: "two documents",
			doc:  "listen: {}\n---\nadmin: {}\n",
			want: []string{`grpcws.yaml:2: a configuration file holds one YAML document`},
		},
		{
			name: "not a mapping",
			doc:  "# grpcws\n- listen\n",
			want: []string{`grpcws.yaml:2: the document must be a mapping of keys such as listen:, backends: and routes:`},
		},
		{
			name: "unknown keys",
			doc: `listn:
  address: ":80"
backends:
  - name: orders
    target: orders:9090
    tsl: {}
`,
			want: []string{
				`grpcws.yaml:1: listn: unknown key; the keys here are ` + allKeys,
				`grpcws.yaml:6: backends[0].tsl: unknown key; the keys here are name, target, tls, load_balancing, keepalive, max_message_size, descriptors, required, connect_timeout`,
			},
		},
		{
			name: "repeated and merge keys",
			doc: `log:
  level: info
  level: debug
base: &base {address: ":80"}
listen:
  <<: *base
`,
			want: []string{
				`grpcws.yaml:3: log.level: key repeated; first on line 2`,
				`grpcws.yaml:4: base: unknown key; the keys here are ` + allKeys,
				`grpcws.yaml:6: listen.<<: merge keys are not supported; repeat the keys`,
			},
		},
		{
			name: "wrong types",
			doc: `listen: [":80"]
admin: ":9901"
log: {access: yes}
backends: {name: orders}
routes:
  - backend: orders
    services: orders.v1.OrderService
    all: 1
    aliases: [orders.v1]
limits:
  max_connections: 1e4
  max_connections_per_ip: 99999999999999999999
  max_message_size: 4 Mi
  idle_timeout: 30
tracing:
  enabled: !!binary dHJ1ZQ==
`,
			want: []string{
				`grpcws.yaml:1: listen: must be a mapping with the keys address, tls`,
				`grpcws.yaml:2: admin: ":9901": must be a mapping with the keys address, pprof`,
				`grpcws.yaml:3: log.access: "yes": must be true or false`,
				`grpcws.yaml:4: backends: must be a list`,
				`grpcws.yaml:7: routes[0].services: "orders.v1.OrderService": must be a list`,
				`grpcws.yaml:8: routes[0].all: "1": must be true or false`,
				`grpcws.yaml:9: routes[0].aliases: must be a mapping`,
				`grpcws.yaml:11: limits.max_connections: "1e4": must be a whole number`,
				`grpcws.yaml:12: limits.max_connections_per_ip: "99999999999999999999": is too large`,
				`grpcws.yaml:13: limits.max_message_size: "4 Mi": must be a size: bytes, or a whole number with a unit such as "512KiB", "4MiB" or "100KB"`,
				`grpcws.yaml:14: limits.idle_timeout: "30": must be a duration with a unit, such as "30s", "5m" or "1h30m"`,
				`grpcws.yaml:16: tracing.enabled: "dHJ1ZQ==": must be true or false, not !!binary`,
			},
		},
		{
			name: "a list where a string goes",
			doc:  "listen:\n  address: [a, b]\n",
			want: []string{`grpcws.yaml:2: listen.address: must be a string, not a list`},
		},
		{
			name: "listen and admin",
			doc: `listen:
  address: "8080"
admin:
  address: ""
`,
			want: []string{
				`grpcws.yaml:2: listen.address: "8080": must be host:port or :port, such as ":8080" or "127.0.0.1:9901"`,
				`grpcws.yaml:4: admin.address: "": must not be empty`,
			},
		},
		{
			name: "addresses",
			doc: `listen:
  address: ":65536"
admin:
  address: "bad host:9901"
`,
			want: []string{
				`grpcws.yaml:2: listen.address: ":65536": the port must be a number from 0 to 65535`,
				`grpcws.yaml:4: admin.address: "bad host:9901": the host must be an IP address or a host name`,
			},
		},
		{
			name: "admin on the listener's address",
			doc:  "listen: {address: \":8080\"}\nadmin: {address: \":8080\"}\n",
			want: []string{`grpcws.yaml:2: admin.address: ":8080": must differ from listen.address`},
		},
		{
			name: "log",
			doc:  "log:\n  format: xml\n  level: verbose\n",
			want: []string{
				`grpcws.yaml:2: log.format: "xml": must be "text" or "json"`,
				`grpcws.yaml:3: log.level: "verbose": must be "debug", "info", "warn" or "error"`,
			},
		},
		{
			name: "listen.tls",
			doc: `listen:
  tls:
    key_file: /tls/other.key
    client_auth: require
    min_version: "1.1"
`,
			want: []string{
				`grpcws.yaml:2: listen.tls.cert_file: "": must not be empty`,
				`grpcws.yaml:4: listen.tls.client_auth: "require": needs client_ca_file, the CAs to verify client certificates with`,
				`grpcws.yaml:5: listen.tls.min_version: "1.1": must be "1.2" or "1.3"`,
			},
		},
		{
			name: "listen.tls files",
			doc: `listen:
  tls:
    cert_file: /tls/tls.crt
    key_file: /tls/other.key
    client_ca_file: /tls/tls.key
    client_auth: always
`,
			want: []string{
				`grpcws.yaml:4: listen.tls.key_file: "/tls/other.key": does not load with cert_file: private key does not match public key`,
				`grpcws.yaml:5: listen.tls.client_ca_file: "/tls/tls.key": holds no PEM certificate`,
				`grpcws.yaml:6: listen.tls.client_auth: "always": must be "require" or "verify_if_given"`,
			},
		},
		{
			name: "missing and empty files",
			doc: `listen:
  tls:
    cert_file: /tls/empty
    key_file: /tls/missing.key
backends:
  - name: a
    target: a:1
    tls:
      ca_file: /tls/missing.crt
      cert_file: /tls/key.pem
    descriptors:
      files: [/api.binpb, /missing.binpb, ""]
`,
			want: []string{
				`grpcws.yaml:4: listen.tls.key_file: "/tls/missing.key": no such file`,
				`grpcws.yaml:8: backends[0].tls.key_file: "": must not be empty when cert_file is set`,
				`grpcws.yaml:9: backends[0].tls.ca_file: "/tls/missing.crt": no such file`,
				`grpcws.yaml:10: backends[0].tls.cert_file: "/tls/key.pem": no such file`,
				`grpcws.yaml:12: backends[0].descriptors.files[1]: "/missing.binpb": no such file`,
				`grpcws.yaml:12: backends[0].descriptors.files[2]: "": must not be empty`,
			},
		},
		{
			name: "a certificate file without a certificate",
			doc:  "listen:\n  tls:\n    cert_file: /tls/empty\n    key_file: /tls/tls.key\n",
			want: []string{`grpcws.yaml:3: listen.tls.cert_file: "/tls/empty": holds no PEM certificate`},
		},
		{
			name: "backends",
			doc: `backends:
  - name: Orders
    target: orders:9090
  - name: billing
    target: ""
  - name: billing
    target: http://billing:9090
  - target: billing
`,
			want: []string{
				`grpcws.yaml:2: backends[0].name: "Orders": must be lower-case letters, digits and -`,
				`grpcws.yaml:5: backends[1].target: "": must not be empty`,
				`grpcws.yaml:6: backends[2].name: "billing": already the name of backends[1]`,
				`grpcws.yaml:7: backends[2].target: "http://billing:9090": the scheme must be dns, unix, unix-abstract or passthrough`,
				`grpcws.yaml:8: backends[3].name: "": must not be empty`,
				`grpcws.yaml:8: backends[3].target: "billing": must be host:port or a gRPC target such as dns:///host:port or unix:///path`,
			},
		},
		{
			name: "backend settings",
			doc: `backends:
  - name: a
    target: a:1
    tls:
      ca_file: /tls/ca.crt
      insecure_skip_verify: true
      server_name: "a b"
    load_balancing: least_request
    keepalive:
      time: 5s
      timeout: -1s
    max_message_size: 3GiB
    connect_timeout: 0s
`,
			want: []string{
				`grpcws.yaml:6: backends[0].tls.insecure_skip_verify: "true": cannot be used with ca_file: nothing would be verified`,
				`grpcws.yaml:7: backends[0].tls.server_name: "a b": must be a host name`,
				`grpcws.yaml:8: backends[0].load_balancing: "least_request": must be "pick_first" or "round_robin"`,
				`grpcws.yaml:10: backends[0].keepalive.time: "5s": must be 0 (off) or at least 10s: gRPC servers refuse more frequent pings`,
				`grpcws.yaml:11: backends[0].keepalive.timeout: "-1s": must not be negative`,
				`grpcws.yaml:12: backends[0].max_message_size: "3GiB": must be at most 2GiB`,
				`grpcws.yaml:13: backends[0].connect_timeout: "0s": must be positive`,
			},
		},
		{
			name: "descriptors",
			doc: `backends:
  - name: a
    target: a:1
    descriptors:
      files: [/api.binpb]
      reflection: true
      refresh_interval: 1m
  - name: b
    target: b:1
    descriptors:
      reflection: false
  - name: c
    target: c:1
    descriptors:
      refresh_interval: 10ms
`,
			want: []string{
				`grpcws.yaml:6: backends[0].descriptors.reflection: "true": cannot be used with files: the files replace reflection`,
				`grpcws.yaml:7: backends[0].descriptors.refresh_interval: "1m": cannot be used with files: only reflection is refreshed`,
				`grpcws.yaml:11: backends[1].descriptors.reflection: "false": needs files: without reflection or descriptor files the backend's services are unknown`,
				`grpcws.yaml:15: backends[2].descriptors.refresh_interval: "10ms": must be 0 (off) or at least 1s`,
			},
		},
		{
			name: "targets",
			doc: `backends:
  - {name: a, target: "dns:///"}
  - {name: b, target: "dns://8.8.8.8"}
  - {name: c, target: "unix://run/a.sock"}
  - {name: d, target: "unix:"}
  - {name: e, target: "ipv4:10.0.0.1:80"}
  - {name: f, target: "xds:///orders"}
  - {name: g, target: "passthrough:///"}
  - {name: h, target: "orders:http"}
  - {name: i, target: "dns:///orders:0"}
`,
			want: []string{
				`grpcws.yaml:2: backends[0].target: "dns:///": dns: must name a host, with an optional port from 1 to 65535`,
				`grpcws.yaml:3: backends[1].target: "dns://8.8.8.8": dns: must be dns:///host:port or dns://resolver/host:port`,
				`grpcws.yaml:4: backends[2].target: "unix://run/a.sock": unix: must be unix:///absolute/path or unix:relative/path`,
				`grpcws.yaml:5: backends[3].target: "unix:": unix: needs a path`,
				`grpcws.yaml:6: backends[4].target: "ipv4:10.0.0.1:80": ipv4: not supported by gRPC-Go; write host:port, or passthrough:///address:port`,
				`grpcws.yaml:7: backends[5].target: "xds:///orders": the scheme must be dns, unix, unix-abstract or passthrough`,
				`grpcws.yaml:8: backends[6].target: "passthrough:///": passthrough: needs an address`,
				`grpcws.yaml:9: backends[7].target: "orders:http": must be host:port or a gRPC target such as dns:///host:port or unix:///path`,
				`grpcws.yaml:10: backends[8].target: "dns:///orders:0": dns: must name a host, with an optional port from 1 to 65535`,
			},
		},
		{
			name: "routes",
			doc: `backends:
  - {name: orders, target: "orders:9090"}
  - {name: billing, target: "billing:9090"}
routes:
  - backend: shipping
    services: [orders.v1.OrderService]
  - backend: orders
  - backend: orders
    all: true
    services: [orders.v1.CartService]
  - services: [orders.v1.OrderService, orders..v1, orders.v1.Order-Service]
    methods: [orders.v1.OrderService/Get, /orders.v1.CartService/Get, orders.v1.CartService]
  - backend: billing
    all: true
  - backend: billing
    all: true
`,
			want: []string{
				`grpcws.yaml:5: routes[0].backend: "shipping": no backend has this name`,
				`grpcws.yaml:7: routes[1]: must list services or methods, or set all: true to expose every service the backend has`,
				`grpcws.yaml:9: routes[2].all: "true": cannot be used with services or methods: all exposes every service`,
				`grpcws.yaml:11: routes[3].backend: "": must not be empty`,
				`grpcws.yaml:11: routes[3].services[0]: "orders.v1.OrderService": already exposed by routes[0].services[0]`,
				`grpcws.yaml:11: routes[3].services[1]: "orders..v1": must be a full service name, such as "orders.v1.OrderService"`,
				`grpcws.yaml:11: routes[3].services[2]: "orders.v1.Order-Service": must be a full service name, such as "orders.v1.OrderService"`,
				`grpcws.yaml:12: routes[3].methods[0]: "orders.v1.OrderService/Get": already exposed by routes[0].services[0], the whole service`,
				`grpcws.yaml:12: routes[3].methods[1]: "/orders.v1.CartService/Get": must be a method, "package.Service/Method"`,
				`grpcws.yaml:12: routes[3].methods[2]: "orders.v1.CartService": must be a method, "package.Service/Method"`,
				`grpcws.yaml:16: routes[5].all: "true": the backend's services are already exposed by routes[4]`,
			},
		},
		{
			name: "routes next to all: true",
			doc: `backends:
  - {name: orders, target: "orders:9090"}
routes:
  - backend: orders
    services: [orders.v1.OrderService, grpc.health.v1.Health]
    methods: [orders.v1.CartService/Get, orders.v1.CartService/Get]
  - backend: orders
    all: true
`,
			want: []string{
				`grpcws.yaml:5: routes[0].services[0]: "orders.v1.OrderService": already exposed by routes[1] (all: true)`,
				`grpcws.yaml:6: routes[0].methods[0]: "orders.v1.CartService/Get": already exposed by routes[1] (all: true)`,
				`grpcws.yaml:6: routes[0].methods[1]: "orders.v1.CartService/Get": already exposed by routes[0].methods[0]`,
			},
		},
		{
			name: "aliases",
			doc: `backends:
  - {name: orders, target: "orders:9090"}
routes:
  - backend: orders
    services: [orders.v1.OrderService]
    methods: [orders.v1.CartService/Get]
    aliases:
      orders.v1.OrderService/Watch: orders.watch
      orders.v1.CartService/Get: "cart get"
      orders.v1.CartService/Put: cart.put
      orders.v1.OrderService: orders
      orders.v1.OrderService/Get: orders.get+json
      orders.v1.OrderService/List: base64url.bearer.grpcws.x
      orders.v1.OrderService/Put: ""
  - backend: orders
    methods: [orders.v2.OrderService/Watch]
    aliases:
      orders.v2.OrderService/Watch: orders.watch
`,
			want: []string{
				`grpcws.yaml:9: routes[0].aliases["orders.v1.CartService/Get"]: "cart get": must be a WebSocket subprotocol: letters, digits and !#$%&'*+-.^_` + "`" + `|~`,
				`grpcws.yaml:10: routes[0].aliases["orders.v1.CartService/Put"]: the route does not expose this method`,
				`grpcws.yaml:11: routes[0].aliases["orders.v1.OrderService"]: the key must be a method, "package.Service/Method"`,
				`grpcws.yaml:12: routes[0].aliases["orders.v1.OrderService/Get"]: "orders.get+json": must not end in "+json": the JSON encoding adds it`,
				`grpcws.yaml:13: routes[0].aliases["orders.v1.OrderService/List"]: "base64url.bearer.grpcws.x": must not start with "base64url.bearer.": that is a bearer token`,
				`grpcws.yaml:14: routes[0].aliases["orders.v1.OrderService/Put"]: "": must not be empty`,
				`grpcws.yaml:18: routes[1].aliases["orders.v2.OrderService/Watch"]: "orders.watch": already the alias of routes[0].aliases["orders.v1.OrderService/Watch"]`,
			},
		},
		{
			name: "route limits",
			doc: `backends:
  - {name: orders, target: "orders:9090"}
routes:
  - backend: orders
    all: true
    max_message_size: 4GiB
    idle_timeout: -1m
    max_stream_duration: -1h
`,
			want: []string{
				`grpcws.yaml:6: routes[0].max_message_size: "4GiB": must be at most 2GiB`,
				`grpcws.yaml:7: routes[0].idle_timeout: "-1m": must not be negative`,
				`grpcws.yaml:8: routes[0].max_stream_duration: "-1h": must not be negative`,
			},
		},
		{
			name: "limits",
			doc: `limits:
  max_connections: -1
  max_connections_per_ip: -5
  handshake_timeout: 0s
  idle_timeout: -1s
  max_stream_duration: -1s
  max_message_size: 0
  write_timeout: 0s
  ping_interval: 500ms
  ping_timeout: 0s
  read_timeout: -1s
`,
			want: []string{
				`grpcws.yaml:2: limits.max_connections: "-1": must not be negative (0 means no limit)`,
				`grpcws.yaml:3: limits.max_connections_per_ip: "-5": must not be negative (0 means no limit)`,
				`grpcws.yaml:4: limits.handshake_timeout: "0s": must be positive`,
				`grpcws.yaml:5: limits.idle_timeout: "-1s": must not be negative`,
				`grpcws.yaml:6: limits.max_stream_duration: "-1s": must not be negative`,
				`grpcws.yaml:7: limits.max_message_size: "0": must be positive`,
				`grpcws.yaml:8: limits.write_timeout: "0s": must be positive`,
				`grpcws.yaml:9: limits.ping_interval: "500ms": must be 0 (no pings) or at least 1s`,
				`grpcws.yaml:10: limits.ping_timeout: "0s": must be positive`,
				`grpcws.yaml:11: limits.read_timeout: "-1s": must be positive`,
			},
		},
		{
			name: "mux limits",
			doc: `limits:
  mux:
    max_streams: 0
    max_resets: -1
    stream_window: 512B
`,
			want: []string{
				`grpcws.yaml:3: limits.mux.max_streams: "0": must be positive`,
				`grpcws.yaml:4: limits.mux.max_resets: "-1": must be positive`,
				`grpcws.yaml:5: limits.mux.stream_window: "512B": must be from 1KiB to 2GiB less one byte`,
			},
		},
		{
			name: "mux windows",
			doc:  "limits:\n  mux:\n    stream_window: 1MiB\n    connection_window: 512KiB\n",
			want: []string{`grpcws.yaml:4: limits.mux.connection_window: "512KiB": must be from stream_window to 2GiB less one byte`},
		},
		{
			name: "negative size",
			doc:  "limits:\n  max_message_size: -1MiB\n",
			want: []string{`grpcws.yaml:2: limits.max_message_size: "-1MiB": must not be negative`},
		},
		{
			name: "origins",
			doc: `origins:
  - app.example.com
  - "[a-"
  - https://app.example.com/
  - ://app.example.com
  - ""
  - "https://"
`,
			want: []string{
				`grpcws.yaml:3: origins[1]: "[a-": must be a pattern in path.Match syntax`,
				`grpcws.yaml:4: origins[2]: "https://app.example.com/": must not have a path: an origin is [scheme://]host[:port]`,
				`grpcws.yaml:5: origins[3]: "://app.example.com": the scheme must not be empty: write "https://host" or just "host"`,
				`grpcws.yaml:6: origins[4]: "": must not be empty`,
				`grpcws.yaml:7: origins[5]: "https://": must name a host`,
			},
		},
		{
			name: "metadata",
			doc: `metadata:
  headers: [X-Request-Id, Grpc-Timeout, "x request", Host, "x:y"]
  cookies: [session, "a=b"]
  allow: [x-client, Grpc-Status, "x y", ""]
  forward_client_address: sometimes
`,
			want: []string{
				`grpcws.yaml:2: metadata.headers[1]: "Grpc-Timeout": is reserved by gRPC and cannot be metadata`,
				`grpcws.yaml:2: metadata.headers[2]: "x request": must be a header name made of letters, digits, _ . and -`,
				`grpcws.yaml:2: metadata.headers[3]: "Host": is reserved by gRPC and cannot be metadata`,
				`grpcws.yaml:2: metadata.headers[4]: "x:y": must be a header name made of letters, digits, _ . and -`,
				`grpcws.yaml:3: metadata.cookies[1]: "a=b": must be a cookie name: letters, digits and !#$%&'*+-.^_` + "`" + `|~`,
				`grpcws.yaml:4: metadata.allow[1]: "Grpc-Status": is reserved by gRPC: clients can never set it`,
				`grpcws.yaml:4: metadata.allow[2]: "x y": must be a metadata key made of letters, digits, _ . and -`,
				`grpcws.yaml:4: metadata.allow[3]: "": must not be empty`,
				`grpcws.yaml:5: metadata.forward_client_address: "sometimes": must be true or false`,
			},
		},
		{
			name: "trusted proxies",
			doc:  "trusted_proxies: [10.0.0.0/8, 10.1.0.0/8, 192.168.1.1, fe80::1%eth0, 10.0.0.0/33, proxy]\n",
			want: []string{
				`grpcws.yaml:1: trusted_proxies[1]: "10.1.0.0/8": has address bits set past the prefix length`,
				`grpcws.yaml:1: trusted_proxies[3]: "fe80::1%eth0": must be an IP address or a CIDR prefix, such as "10.0.0.0/8"`,
				`grpcws.yaml:1: trusted_proxies[4]: "10.0.0.0/33": must be an IP address or a CIDR prefix, such as "10.0.0.0/8"`,
				`grpcws.yaml:1: trusted_proxies[5]: "proxy": must be an IP address or a CIDR prefix, such as "10.0.0.0/8"`,
			},
		},
		{
			name: "tracing enabled without an endpoint",
			doc:  "tracing:\n  enabled: true\n  service_name: \"\"\n",
			want: []string{
				`grpcws.yaml:1: tracing.otlp_endpoint: "": must not be empty when tracing is enabled`,
				`grpcws.yaml:3: tracing.service_name: "": must not be empty when tracing is enabled`,
			},
		},
		{
			name: "tracing endpoint",
			doc:  "tracing:\n  otlp_endpoint: otel-collector:4318\n",
			want: []string{`grpcws.yaml:2: tracing.otlp_endpoint: "otel-collector:4318": must be an http:// or https:// URL, such as "http://otel-collector:4318"`},
		},
		{
			name: "drain timeout below the grace period",
			doc:  "drain:\n  grace_period: 1m\n",
			want: []string{`grpcws.yaml:1: drain.timeout: "30s": must be at least drain.grace_period`},
		},
		{
			name: "drain",
			doc:  "drain:\n  grace_period: -1s\n  timeout: 0s\n",
			want: []string{
				`grpcws.yaml:2: drain.grace_period: "-1s": must not be negative`,
				`grpcws.yaml:3: drain.timeout: "0s": must be positive`,
			},
		},
		{
			name: "a value that did not decode hides what follows from it",
			doc: `backends:
  - name: orders
    target: orders:9090
    connect_timeout: soon
  - name: [billing]
    target: billing:9090
routes:
  - backend: billing
    all: true
`,
			want: []string{
				`grpcws.yaml:4: backends[0].connect_timeout: "soon": must be a duration with a unit, such as "30s", "5m" or "1h30m"`,
				`grpcws.yaml:5: backends[1].name: must be a string, not a list`,
			},
		},
		{
			name: "the example in the documentation",
			doc: `# grpcws.yaml
listen:
  address: ":8080"
admin:
  address: ":9901"
log:
  format: json
  level: info
  access: true

backends:
  - name: orders
    # The address of the backend.
    target: ""
`,
			want: []string{`grpcws.yaml:14: backends[0].target: "": must not be empty`},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseTest(tt.doc, tt.env)
			if err == nil {
				t.Fatalf("Parse = nil error; want\n%s", strings.Join(tt.want, "\n"))
			}
			if cfg != nil {
				t.Errorf("Parse returned a Config with an error")
			}
			if got, want := err.Error(), strings.Join(tt.want, "\n"); got != want {
				t.Errorf("Parse error:\n%s\nwant:\n%s", got, want)
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != len(tt.want) {
				t.Errorf("errors.As(Errors) = %d errors; want %d", len(errs), len(tt.want))
			}
		})
	}
}

func TestParseErrorFields(t *testing.T) {
	t.Parallel()
	_, err := parseTest("backends:\n  - name: orders\n    target: http://orders\n", nil)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("errors.As(%v, *Error) = false", err)
	}
	want := &Error{File: "grpcws.yaml", Line: 3, Field: "backends[0].target", Value: "http://orders", HasValue: true,
		Problem: "the scheme must be dns, unix, unix-abstract or passthrough"}
	if !reflect.DeepEqual(e, want) {
		t.Errorf("Error = %#v; want %#v", e, want)
	}
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{"", "# nothing yet\n", "---\n", "listen:\nadmin: ~\nlimits:\n"} {
		cfg, err := parseTest(doc, nil)
		if err != nil {
			t.Errorf("Parse(%q): %v", doc, err)
			continue
		}
		if !reflect.DeepEqual(cfg, Default()) {
			t.Errorf("Parse(%q) = %+v; want Default()", doc, cfg)
		}
	}
}

func TestParseValues(t *testing.T) {
	t.Parallel()
	const doc = `
listen:
  address: 127.0.0.1:8443
  tls:
    cert_file: /tls/tls.crt
    key_file: /tls/tls.key
    client_ca_file: /tls/ca.crt
    client_auth: verify_if_given
admin:
  address: "[::1]:0"
  pprof: true
log:
  format: json
  level: debug
  access: false
backends:
  - name: orders
    target: dns:///orders:9090
    tls:
      ca_file: /tls/ca.crt
      cert_file: /tls/tls.crt
      key_file: /tls/tls.key
      server_name: orders.internal
    load_balancing: round_robin
    keepalive: &keepalive
      time: 1m
      timeout: 5s
      permit_without_stream: true
    max_message_size: 16MiB
    descriptors:
      reflection: true
      refresh_interval: 5m
    required: false
    connect_timeout: 3s
  - name: billing
    target: unix:///run/billing.sock
    keepalive: *keepalive
    descriptors:
      files: [/api.binpb]
routes:
  - backend: orders
    services: [orders.v1.OrderService]
    methods: [orders.v1.CartService/Get]
    aliases:
      orders.v1.OrderService/Watch: orders.watch.v1
    max_message_size: 1MB
    idle_timeout: 5m
    max_stream_duration: 1h
  - backend: billing
    all: true
limits:
  max_connections: 0
  max_connections_per_ip: 0
  handshake_timeout: 5s
  idle_timeout: 10m
  max_stream_duration: 24h
  max_message_size: 1048576
  write_timeout: 1m
  read_timeout: 20s
  ping_interval: 0
  ping_timeout: 10s
  mux:
    max_streams: 20
    max_resets: 40
    stream_window: 64KiB
    connection_window: 1MiB
origins: ["*.example.com", "localhost:*"]
metadata:
  headers: [X-Request-Id]
  cookies: [session]
  allow: [x-client]
  forward_client_address: false
trusted_proxies: [10.0.0.0/8, "2001:db8::1"]
tracing:
  enabled: true
  otlp_endpoint: https://otel:4318
  service_name: edge
drain:
  grace_period: 0s
  timeout: 5s
`
	got, err := parseTest(doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	no, keepalive := false, Keepalive{Time: time.Minute, Timeout: 5 * time.Second, PermitWithoutStream: true}
	want := &Config{
		Listen: Listen{Address: "127.0.0.1:8443", TLS: &ListenTLS{
			CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key", ClientCAFile: "/tls/ca.crt", ClientAuth: "verify_if_given", MinVersion: "1.2",
		}},
		Admin: Admin{Address: "[::1]:0", Pprof: true},
		Log:   Log{Format: "json", Level: "debug", Access: &no},
		Backends: []Backend{{
			Name:           "orders",
			Target:         "dns:///orders:9090",
			TLS:            &BackendTLS{CAFile: "/tls/ca.crt", CertFile: "/tls/tls.crt", KeyFile: "/tls/tls.key", ServerName: "orders.internal"},
			LoadBalancing:  "round_robin",
			Keepalive:      keepalive,
			MaxMessageSize: 16 * MiB,
			Descriptors:    Descriptors{Reflection: new(true), RefreshInterval: 5 * time.Minute},
			Required:       &no,
			ConnectTimeout: 3 * time.Second,
		}, {
			Name:           "billing",
			Target:         "unix:///run/billing.sock",
			LoadBalancing:  "pick_first",
			Keepalive:      keepalive,
			MaxMessageSize: 4 * MiB,
			Descriptors:    Descriptors{Files: []string{"/api.binpb"}},
			ConnectTimeout: 10 * time.Second,
		}},
		Routes: []Route{{
			Backend:           "orders",
			Services:          []string{"orders.v1.OrderService"},
			Methods:           []string{"orders.v1.CartService/Get"},
			Aliases:           map[string]string{"orders.v1.OrderService/Watch": "orders.watch.v1"},
			MaxMessageSize:    MB,
			IdleTimeout:       5 * time.Minute,
			MaxStreamDuration: time.Hour,
		}, {Backend: "billing", All: true}},
		Limits: Limits{
			HandshakeTimeout:  5 * time.Second,
			IdleTimeout:       10 * time.Minute,
			MaxStreamDuration: 24 * time.Hour,
			MaxMessageSize:    MiB,
			WriteTimeout:      time.Minute,
			ReadTimeout:       20 * time.Second,
			PingTimeout:       10 * time.Second,
			Mux:               MuxLimits{MaxStreams: 20, MaxResets: 40, StreamWindow: 64 * KiB, ConnectionWindow: MiB},
		},
		Origins:        []string{"*.example.com", "localhost:*"},
		Metadata:       Metadata{Headers: []string{"X-Request-Id"}, Cookies: []string{"session"}, Allow: []string{"x-client"}, ForwardClientAddress: &no},
		TrustedProxies: []string{"10.0.0.0/8", "2001:db8::1"},
		Tracing:        Tracing{Enabled: true, OTLPEndpoint: "https://otel:4318", ServiceName: "edge"},
		Drain:          Drain{Timeout: 5 * time.Second},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", got, want)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := testPKI()
	writeFile(t, dir, "tls/tls.crt", p.cert)
	writeFile(t, dir, "tls/tls.key", p.key)
	writeFile(t, dir, "grpcws.yaml", []byte(`listen:
  tls:
    cert_file: `+filepath.Join(dir, "tls/tls.crt")+`
    key_file: `+filepath.Join(dir, "tls/tls.key")+`
    client_ca_file: `+filepath.Join(dir, "tls")+`
backends:
  - name: a
    target: a:1
    descriptors:
      files: [`+filepath.Join(dir, "missing.binpb")+`]
`))
	name := filepath.Join(dir, "grpcws.yaml")
	_, err := Load(name)
	want := name + `:5: listen.tls.client_ca_file: "` + filepath.Join(dir, "tls") + `": cannot read: is a directory` + "\n" +
		name + `:10: backends[0].descriptors.files[0]: "` + filepath.Join(dir, "missing.binpb") + `": no such file`
	if err == nil || err.Error() != want {
		t.Errorf("Load = %v; want\n%s", err, want)
	}

	if _, err := Load(filepath.Join(dir, "nope.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing file) = %v; want an error that is os.ErrNotExist", err)
	}
}
