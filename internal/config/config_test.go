package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	want := &Config{
		Listen: Listen{Address: ":8080"},
		Admin:  Admin{Address: "127.0.0.1:9901"},
		Log:    Log{Format: "text", Level: "info"},
		Limits: Limits{
			MaxConnections:      10000,
			MaxConnectionsPerIP: 100,
			HandshakeTimeout:    10 * time.Second,
			MaxMessageSize:      4 * MiB,
			WriteTimeout:        30 * time.Second,
			ReadTimeout:         30 * time.Second,
			PingInterval:        30 * time.Second,
			PingTimeout:         20 * time.Second,
			Mux:                 MuxLimits{MaxStreams: 100, MaxResets: 500, StreamWindow: 256 * KiB, ConnectionWindow: 16 * MiB},
		},
		Tracing: Tracing{ServiceName: "grpcws"},
		Drain:   Drain{GracePeriod: 25 * time.Second, Timeout: 30 * time.Second},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Default() = %+v; want %+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if !c.Log.AccessEnabled() || !c.Metadata.ForwardClientAddressEnabled() {
		t.Errorf("Default(): access log %v, forward client address %v; want both on", c.Log.AccessEnabled(), c.Metadata.ForwardClientAddressEnabled())
	}
	if Default() == c {
		t.Error("Default() returned the same Config twice")
	}
}

func TestNewBackend(t *testing.T) {
	t.Parallel()
	b := NewBackend("orders", "orders:9090")
	want := Backend{
		Name:           "orders",
		Target:         "orders:9090",
		LoadBalancing:  "pick_first",
		Keepalive:      Keepalive{Timeout: 20 * time.Second},
		MaxMessageSize: 4 * MiB,
		ConnectTimeout: 10 * time.Second,
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("NewBackend = %+v; want %+v", b, want)
	}
	if !b.IsRequired() || !b.Descriptors.UsesReflection() {
		t.Errorf("NewBackend: required %v, reflection %v; want both", b.IsRequired(), b.Descriptors.UsesReflection())
	}
	// A backend in a file starts from the same defaults.
	cfg, err := parseTest("backends: [{name: orders, target: \"orders:9090\"}]\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg.Backends, []Backend{want}) {
		t.Errorf("Parse: backends = %+v; want %+v", cfg.Backends, want)
	}
}

func TestHelpers(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	if (Backend{Required: &no}).IsRequired() || !(Backend{Required: &yes}).IsRequired() {
		t.Error("IsRequired does not follow Required")
	}
	if (Log{Access: &no}).AccessEnabled() || !(Log{Access: &yes}).AccessEnabled() {
		t.Error("AccessEnabled does not follow Access")
	}
	if (Metadata{ForwardClientAddress: &no}).ForwardClientAddressEnabled() {
		t.Error("ForwardClientAddressEnabled does not follow ForwardClientAddress")
	}
	if (Descriptors{Files: []string{"a.binpb"}}).UsesReflection() {
		t.Error("UsesReflection with files = true")
	}

	c := &Config{TrustedProxies: []string{"10.0.0.0/8", "192.168.1.1", "2001:db8::/32", "::1", "bad"}}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.1.1/32"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("::1/128"),
	}
	if got := c.TrustedProxyPrefixes(); !reflect.DeepEqual(got, want) {
		t.Errorf("TrustedProxyPrefixes = %v; want %v", got, want)
	}
}

func TestEffective(t *testing.T) {
	t.Parallel()
	l := Limits{MaxMessageSize: 4 * MiB, IdleTimeout: time.Minute, MaxStreamDuration: time.Hour}
	for _, tt := range []struct {
		name   string
		route  Route
		maxMsg ByteSize
		idle   time.Duration
		maxDur time.Duration
	}{
		{"inherits", Route{}, 4 * MiB, time.Minute, time.Hour},
		{"own", Route{MaxMessageSize: KiB, IdleTimeout: time.Second, MaxStreamDuration: 2 * time.Hour}, KiB, time.Second, 2 * time.Hour},
		{"some", Route{IdleTimeout: 5 * time.Minute}, 4 * MiB, 5 * time.Minute, time.Hour},
	} {
		maxMsg, idle, maxDur := tt.route.Effective(l)
		if maxMsg != tt.maxMsg || idle != tt.idle || maxDur != tt.maxDur {
			t.Errorf("%s: Effective = %v, %v, %v; want %v, %v, %v", tt.name, maxMsg, idle, maxDur, tt.maxMsg, tt.idle, tt.maxDur)
		}
	}
}

// Validate reports problems of a Config built in code without a file or
// line, and with the value as Go prints it.
func TestValidate(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Listen.Address = "localhost"
	c.Listen.TLS = &ListenTLS{CertFile: "/no/such/cert.pem", KeyFile: "/no/such/key.pem"}
	c.Log.Level = ""
	b := NewBackend("orders", "orders:9090")
	b.MaxMessageSize = -KiB
	c.Backends = []Backend{b, {Name: "billing", Target: "billing:9090"}}
	c.Routes = []Route{{Backend: "orders", Services: []string{"orders.v1.OrderService"}}, {Backend: "shipping", All: true}}
	c.Limits.IdleTimeout = -90 * time.Second
	c.Limits.MaxMessageSize = 3 * GiB
	c.Drain.GracePeriod = time.Minute
	err := c.Validate()
	want := `listen.address: "localhost": must be host:port or :port, such as ":8080" or "127.0.0.1:9901"
listen.tls.cert_file: "/no/such/cert.pem": no such file
listen.tls.key_file: "/no/such/key.pem": no such file
log.level: "": must be "debug", "info", "warn" or "error"
backends[0].max_message_size: "-1KiB": must not be negative
backends[1].connect_timeout: "0s": must be positive
routes[1].backend: "shipping": no backend has this name
limits.idle_timeout: "-1m30s": must not be negative
limits.max_message_size: "3GiB": must be at most 2GiB
drain.timeout: "30s": must be at least drain.grace_period`
	if err == nil || err.Error() != want {
		t.Errorf("Validate() =\n%v\nwant\n%s", err, want)
	}

	c = Default()
	c.Backends = []Backend{NewBackend("orders", "dns:///orders:9090")}
	c.Routes = []Route{{Backend: "orders", All: true}}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v; want nil", err)
	}
}

// The targets gRPC accepts, as the documentation lists them.
func TestTargets(t *testing.T) {
	t.Parallel()
	for _, target := range []string{
		"orders:9090",
		"127.0.0.1:9090",
		"[::1]:9090",
		"orders.shop.svc.cluster.local:9090",
		"dns:///orders:9090",
		"dns:///orders",
		"dns://8.8.8.8/orders:9090",
		"dns:orders:9090",
		"dns:///[::1]:9090",
		"unix:///run/orders.sock",
		"unix:run/orders.sock",
		"unix:/run/orders.sock",
		"unix-abstract:orders",
		"passthrough:///orders:9090",
	} {
		if p := targetProblem(target); p != "" {
			t.Errorf("target %q: %s; want no problem", target, p)
		}
	}
}

// The shipped examples parse and validate, with the files they name.
func TestExamples(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"POD_NAMESPACE": "shop"}
	for _, tt := range []struct {
		file  string
		files []string // the files it names
	}{
		{file: "../../examples/config/minimal.yaml"},
		{file: "../../examples/config/grpcws.yaml", files: []string{
			"/etc/grpcws/tls/tls.crt",
			"/etc/grpcws/tls/tls.key",
			"/etc/grpcws/backend-tls/ca.crt",
			"/etc/grpcws/backend-tls/tls.crt",
			"/etc/grpcws/backend-tls/tls.key",
			"/etc/grpcws/descriptors/billing.binpb",
		}},
	} {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := parse(data, tt.file, env(vars), materialize(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Backends) == 0 || len(cfg.Routes) == 0 {
				t.Errorf("%s: %d backends, %d routes; want some of each", tt.file, len(cfg.Backends), len(cfg.Routes))
			}
			// Without the environment, the file names the variable it needs.
			if strings.Contains(string(data), "${POD_NAMESPACE}") {
				_, err := parse(data, tt.file, env(nil), materialize(t, tt.files))
				if err == nil || !strings.Contains(err.Error(), "environment variable POD_NAMESPACE is not set") {
					t.Errorf("without POD_NAMESPACE: %v; want it named", err)
				}
			}
		})
	}
	// The full example uses every key; if a key is added, add it there.
	data, err := os.ReadFile("../../examples/config/grpcws.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	collectKeys(doc.Content[0], "", used)
	for _, k := range schemaKeys(reflect.TypeFor[Config](), "") {
		leaf := k[strings.LastIndex(k, ".")+1:]
		commented := regexp.MustCompile(`(?m)^\s*# ` + leaf + `: `).Match(data)
		if !used[k] && !commented {
			t.Errorf("examples/config/grpcws.yaml does not show the key %s, in use or in a comment", k)
		}
	}
}

// The ConfigMaps of the Kubernetes examples hold valid configurations.
func TestKubernetesExamples(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../examples/kubernetes/*/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var cm struct {
			Data map[string]string `yaml:"data"`
		}
		if err := yaml.Unmarshal(data, &cm); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		doc, ok := cm.Data["grpcws.yaml"]
		if !ok {
			t.Errorf("%s: no data grpcws.yaml", file)
			continue
		}
		tlsFiles := []string{"/etc/grpcws-tls/tls.crt", "/etc/grpcws-tls/tls.key"}
		if _, err := parse([]byte(doc), file, env(map[string]string{"POD_NAMESPACE": "shop"}), materialize(t, tlsFiles)); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// materialize writes the files named into a temporary directory, each by
// its name's base: CA, certificate, key or descriptor set, and returns a
// readFile that reads names from there.
func materialize(t *testing.T, names []string) func(string) ([]byte, error) {
	t.Helper()
	root := t.TempDir()
	p := testPKI()
	for _, name := range names {
		var data []byte
		switch base := filepath.Base(name); {
		case base == "ca.crt":
			data = p.caCert
		case strings.HasSuffix(base, ".crt"):
			data = p.cert
		case strings.HasSuffix(base, ".key"):
			data = p.key
		case strings.HasSuffix(base, ".binpb"):
			data = []byte("\x0a\x00")
		default:
			t.Fatalf("no content for %s", name)
		}
		writeFile(t, root, name, data)
	}
	return func(name string) ([]byte, error) {
		return os.ReadFile(filepath.Join(root, name))
	}
}

// collectKeys records the paths of every key under n, with list indexes
// and map keys left out: "backends.tls.ca_file".
func collectKeys(n *yaml.Node, path string, used map[string]bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := join(path, n.Content[i].Value)
			used[p] = true
			collectKeys(n.Content[i+1], p, used)
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			collectKeys(c, path, used)
		}
	}
}

// schemaKeys lists the paths of every key of struct t, as collectKeys
// writes them.
func schemaKeys(t reflect.Type, path string) []string {
	var out []string
	for i := range t.NumField() {
		name := yamlName(t.Field(i))
		if name == "" {
			continue
		}
		p := join(path, name)
		out = append(out, p)
		ft := t.Field(i).Type
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			out = append(out, schemaKeys(ft, p)...)
		}
	}
	return out
}
