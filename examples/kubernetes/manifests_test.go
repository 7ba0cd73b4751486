// Package kubernetes_test checks the Kubernetes examples: that every
// manifest is well formed, that the grpcws.yaml each ConfigMap carries is a
// valid configuration, and that the manifests agree with it and with each
// other (paths, ports, probes, timeouts, selectors). It needs no cluster.
package kubernetes_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/big"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/descset"
)

// layouts are the example directories; each is applied on its own.
var layouts = []string{"sidecar", "edge"}

// namespace is where the test pretends the manifests are applied: they
// name none, so they go to kubectl's current namespace.
const namespace = "default"

// An object is one YAML document of a manifest, decoded into generic maps.
type object struct {
	file  string // relative to examples/kubernetes
	index int    // of the document in its file, from 0
	m     map[string]any
}

func (o object) kind() string { return str(o.m["kind"]) }
func (o object) name() string { return str(dig(o.m, "metadata", "name")) }
func (o object) String() string {
	return fmt.Sprintf("%s[%d] %s/%s", o.file, o.index, o.kind(), o.name())
}

// TestManifests checks that every document of every manifest is a
// Kubernetes object and that no two objects of a layout share a kind and a
// name.
func TestManifests(t *testing.T) {
	t.Parallel()
	for _, dir := range layouts {
		objs := load(t, dir)
		if len(objs) == 0 {
			t.Errorf("%s: no manifests", dir)
		}
		seen := map[string]object{}
		for _, o := range objs {
			if str(o.m["apiVersion"]) == "" || o.kind() == "" || o.name() == "" {
				t.Errorf("%s: apiVersion, kind and metadata.name are required; got %q, %q, %q",
					o, str(o.m["apiVersion"]), o.kind(), o.name())
			}
			key := o.kind() + "/" + o.name()
			if prev, ok := seen[key]; ok {
				t.Errorf("%s: the same kind and name as %s", o, prev)
			}
			seen[key] = o
		}
	}
}

// TestLayouts checks each grpcws container of each layout against its
// configuration and the objects around it.
func TestLayouts(t *testing.T) {
	t.Parallel()
	for _, dir := range layouts {
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			objs := load(t, dir)
			var found int
			for _, w := range objs {
				if w.kind() != "Deployment" {
					continue
				}
				pod := mapOf(dig(w.m, "spec", "template", "spec"))
				for _, c := range containers(pod) {
					if strings.Contains(str(c["image"]), "/grpcws:") {
						found++
						checkBridge(t, objs, w, pod, c)
					}
				}
			}
			if found == 0 {
				t.Fatalf("%s: no Deployment with a grpcws container", dir)
			}
			checkReferences(t, objs)
		})
	}
}

// checkBridge checks one grpcws container c of workload w, whose pod spec
// is pod.
func checkBridge(t *testing.T, objs []object, w object, pod, c map[string]any) {
	where := fmt.Sprintf("%s container %s", w, str(c["name"]))
	mounts := volumeMounts(t, pod, c)

	// --config names the file where the ConfigMap is mounted.
	file := configFlag(list(c["args"]))
	if file == "" {
		t.Fatalf("%s: args %v have no --config FILE", where, c["args"])
	}
	m, rel, ok := mountFor(mounts, file)
	if !ok || m.configMap == "" {
		t.Fatalf("%s: --config %s is not in a mounted ConfigMap", where, file)
	}
	key := m.key(rel)
	cm, ok := find(objs, "ConfigMap", m.configMap)
	if !ok {
		t.Fatalf("%s: --config %s: no ConfigMap %s in the layout", where, file, m.configMap)
	}
	data, ok := dig(cm.m, "data", key).(string)
	if !ok {
		t.Fatalf("%s: --config %s: ConfigMap %s has no key %q", where, file, m.configMap, key)
	}

	env := environment(c)
	cfg, files := parseConfig(t, fmt.Sprintf("%s[%s]", cm.file, key), []byte(data), env)

	// Ports: the WebSocket port is listen.address's, the admin port
	// admin.address's, and neither listens on loopback only.
	ports := containerPorts(c)
	listenPort := portOf(t, "listen.address", cfg.Listen.Address)
	adminPort := portOf(t, "admin.address", cfg.Admin.Address)
	wsName := ""
	for _, name := range []string{"ws", "wss"} {
		if p, ok := ports[name]; ok {
			wsName = name
			if p != listenPort {
				t.Errorf("%s: port %s is %d; want listen.address's %d", where, name, p, listenPort)
			}
		}
	}
	if wsName == "" {
		t.Errorf("%s: no container port named ws or wss", where)
	}
	if wsName == "wss" && cfg.Listen.TLS == nil || wsName == "ws" && cfg.Listen.TLS != nil {
		t.Errorf("%s: port named %s; want wss with listen.tls and ws without", where, wsName)
	}
	if p, ok := ports["admin"]; !ok || p != adminPort {
		t.Errorf("%s: port admin is %d; want admin.address's %d", where, p, adminPort)
	}
	for _, a := range []struct{ key, addr string }{{"listen.address", cfg.Listen.Address}, {"admin.address", cfg.Admin.Address}} {
		if host, _, _ := net.SplitHostPort(a.addr); host != "" && isLoopback(host) {
			t.Errorf("%s: %s %q is loopback; the kubelet and the Service reach the pod's address", where, a.key, a.addr)
		}
	}

	// Probes: liveness on /healthz, readiness on /readyz, both on the
	// admin port; readiness quick to notice a drain.
	for _, p := range []struct{ probe, path string }{{"livenessProbe", "/healthz"}, {"readinessProbe", "/readyz"}} {
		get := mapOf(dig(c, p.probe, "httpGet"))
		if get == nil {
			t.Errorf("%s: no %s.httpGet", where, p.probe)
			continue
		}
		if got := str(get["path"]); got != p.path {
			t.Errorf("%s: %s path %q; want %q", where, p.probe, got, p.path)
		}
		if got := resolvePort(get["port"], ports); got != adminPort {
			t.Errorf("%s: %s port %v is %d; want the admin port %d", where, p.probe, get["port"], got, adminPort)
		}
	}
	ready := mapOf(c["readinessProbe"])
	if n := num(ready["periodSeconds"], 10); n > 5 {
		t.Errorf("%s: readinessProbe.periodSeconds %d; want at most 5, for a draining pod to leave the endpoints fast", where, n)
	}
	if n := num(ready["failureThreshold"], 3); n > 2 {
		t.Errorf("%s: readinessProbe.failureThreshold %d; want 1 or 2", where, n)
	}

	// Stopping: the preStop sleep, then drain.timeout, fit in the grace
	// period; other containers of the pod outlive the bridge's drain.
	sleep := preStopSleep(c)
	if sleep <= 0 {
		t.Errorf("%s: no lifecycle.preStop.sleep; want a few seconds for the endpoints to drop the pod before SIGTERM", where)
	}
	drain := ceilSeconds(cfg.Drain.Timeout)
	grace := num(pod["terminationGracePeriodSeconds"], 30) // Kubernetes' default
	if grace < sleep+drain {
		t.Errorf("%s: terminationGracePeriodSeconds %d; want at least preStop sleep %d + drain.timeout %d", where, grace, sleep, drain)
	}
	if cfg.Drain.GracePeriod > cfg.Drain.Timeout {
		t.Errorf("%s: drain.grace_period %v > drain.timeout %v", where, cfg.Drain.GracePeriod, cfg.Drain.Timeout)
	}
	for _, other := range list(pod["containers"]) {
		o := mapOf(other)
		if str(o["name"]) == str(c["name"]) {
			continue
		}
		if s := preStopSleep(o); s < sleep+drain {
			t.Errorf("%s: container %s sleeps %d s before SIGTERM; want at least %d (the bridge's preStop %d + drain.timeout %d), so that it serves the bridge's streams to the end",
				w, str(o["name"]), s, sleep+drain, sleep, drain)
		}
		if grace < preStopSleep(o) {
			t.Errorf("%s: terminationGracePeriodSeconds %d is shorter than container %s's preStop sleep %d", w, grace, str(o["name"]), preStopSleep(o))
		}
	}

	// Files the configuration reads are in mounted volumes; keys in
	// Secrets.
	for _, f := range files {
		m, rel, ok := mountFor(mounts, f.path)
		switch {
		case !ok:
			t.Errorf("%s: %s %s is under no volumeMount", where, f.key, f.path)
		case f.kind == keyFile && m.secret == "":
			t.Errorf("%s: %s %s is in volume %s, which is not a Secret", where, f.key, f.path, m.volume)
		case m.configMap != "":
			if cm, ok := find(objs, "ConfigMap", m.configMap); ok && dig(cm.m, "data", m.key(rel)) == nil && dig(cm.m, "binaryData", m.key(rel)) == nil {
				t.Errorf("%s: %s %s: ConfigMap %s has no key %q", where, f.key, f.path, m.configMap, m.key(rel))
			}
		}
	}

	// Security and resources.
	psc, csc := mapOf(pod["securityContext"]), mapOf(c["securityContext"])
	if csc["runAsNonRoot"] != true && psc["runAsNonRoot"] != true {
		t.Errorf("%s: runAsNonRoot not set", where)
	}
	if csc["readOnlyRootFilesystem"] != true {
		t.Errorf("%s: readOnlyRootFilesystem not set", where)
	}
	if csc["allowPrivilegeEscalation"] != false {
		t.Errorf("%s: allowPrivilegeEscalation not false", where)
	}
	if drop := list(dig(csc, "capabilities", "drop")); !slices.Contains(drop, any("ALL")) {
		t.Errorf("%s: capabilities.drop %v; want ALL", where, drop)
	}
	for _, r := range []string{"requests", "limits"} {
		if dig(c, "resources", r, "memory") == nil {
			t.Errorf("%s: no resources.%s.memory", where, r)
		}
	}
	if tag := str(c["image"])[strings.LastIndex(str(c["image"]), ":")+1:]; tag == "latest" || strings.Contains(tag, "/") {
		t.Errorf("%s: image %s; want a pinned tag", where, str(c["image"]))
	}

	// Metrics are scraped from the admin port.
	ann := mapOf(dig(w.m, "spec", "template", "metadata", "annotations"))
	if p, ok := ann["prometheus.io/port"]; ok && str(p) != strconv.Itoa(adminPort) {
		t.Errorf("%s: prometheus.io/port %v; want the admin port %d", w, p, adminPort)
	}

	// Services in front of the pod reach the WebSocket port, and only it.
	labels := mapOf(dig(w.m, "spec", "template", "metadata", "labels"))
	var services []object
	for _, s := range objs {
		if s.kind() == "Service" && selects(mapOf(dig(s.m, "spec", "selector")), labels) {
			services = append(services, s)
		}
	}
	if len(services) == 0 {
		t.Errorf("%s: no Service selects the pods", w)
	}
	for _, s := range services {
		for _, sp := range list(dig(s.m, "spec", "ports")) {
			sp := mapOf(sp)
			target := sp["targetPort"]
			if target == nil {
				target = sp["port"]
			}
			switch got := resolvePort(target, ports); got {
			case listenPort:
			case adminPort:
				t.Errorf("%s: port %v exposes the admin port", s, sp["name"])
			default:
				t.Errorf("%s: targetPort %v is %d; want the WebSocket port %d", s, target, got, listenPort)
			}
		}
	}

	// An Ingress in front keeps idle connections open longer than the
	// bridge's ping interval, and speaks TLS to it if it serves TLS.
	for _, ing := range objs {
		if ing.kind() != "Ingress" || !routesTo(ing, services) {
			continue
		}
		ann := mapOf(dig(ing.m, "metadata", "annotations"))
		for _, a := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
			v, err := strconv.Atoi(str(ann["nginx.ingress.kubernetes.io/"+a]))
			if err != nil || time.Duration(v)*time.Second <= cfg.Limits.PingInterval {
				t.Errorf("%s: %s %q; want seconds longer than limits.ping_interval %v", ing, a, str(ann["nginx.ingress.kubernetes.io/"+a]), cfg.Limits.PingInterval)
			}
		}
		if https := str(ann["nginx.ingress.kubernetes.io/backend-protocol"]) == "HTTPS"; https != (cfg.Listen.TLS != nil) {
			t.Errorf("%s: backend-protocol HTTPS is %v; grpcws serves TLS is %v", ing, https, cfg.Listen.TLS != nil)
		}
	}

	// round_robin over a cluster DNS name needs a headless Service.
	for _, b := range cfg.Backends {
		if b.LoadBalancing != "round_robin" || !strings.HasPrefix(b.Target, "dns:") {
			continue
		}
		u := strings.TrimPrefix(b.Target, "dns:")
		u = u[strings.LastIndex(u, "/")+1:] // dns:///host:port or dns://authority/host:port
		host, port, err := net.SplitHostPort(u)
		if err != nil || !strings.HasSuffix(host, ".svc.cluster.local") {
			continue
		}
		name, rest, _ := strings.Cut(host, ".")
		if ns, _, _ := strings.Cut(rest, "."); ns != namespace {
			t.Errorf("%s: backend %s: target %s is in namespace %q; want the pod's own, %q", where, b.Name, b.Target, ns, namespace)
		}
		s, ok := find(objs, "Service", name)
		if !ok {
			t.Errorf("%s: backend %s: target %s: no Service %s in the layout", where, b.Name, b.Target, name)
			continue
		}
		if str(dig(s.m, "spec", "clusterIP")) != "None" {
			t.Errorf("%s: backend %s balances round_robin over %s, which is not headless (clusterIP: None)", where, b.Name, s)
		}
		p, _ := strconv.Atoi(port)
		if !slices.ContainsFunc(list(dig(s.m, "spec", "ports")), func(sp any) bool { return num(mapOf(sp)["port"], 0) == p }) {
			t.Errorf("%s: backend %s: %s has no port %d", where, b.Name, s, p)
		}
	}
}

// checkReferences checks that what names another object in the layout
// finds it: HPA and PDB targets, Ingress backends.
func checkReferences(t *testing.T, objs []object) {
	for _, o := range objs {
		switch o.kind() {
		case "HorizontalPodAutoscaler":
			ref := mapOf(dig(o.m, "spec", "scaleTargetRef"))
			w, ok := find(objs, str(ref["kind"]), str(ref["name"]))
			if !ok {
				t.Errorf("%s: scaleTargetRef %s/%s is not in the layout", o, ref["kind"], ref["name"])
				continue
			}
			if lo := num(dig(o.m, "spec", "minReplicas"), 1); lo < 2 {
				t.Errorf("%s: minReplicas %d; want at least 2, so a drain never leaves no replica", o, lo)
			}
			if r := num(dig(w.m, "spec", "replicas"), 1); r < num(dig(o.m, "spec", "minReplicas"), 1) {
				t.Errorf("%s: %s has %d replicas, fewer than minReplicas", o, w, r)
			}
		case "PodDisruptionBudget":
			sel := mapOf(dig(o.m, "spec", "selector", "matchLabels"))
			if !slices.ContainsFunc(objs, func(w object) bool {
				return w.kind() == "Deployment" && selects(sel, mapOf(dig(w.m, "spec", "template", "metadata", "labels")))
			}) {
				t.Errorf("%s: selects no Deployment of the layout", o)
			}
		case "Ingress":
			for _, b := range ingressBackends(o) {
				s, ok := find(objs, "Service", str(b["name"]))
				if !ok {
					t.Errorf("%s: backend service %s is not in the layout", o, b["name"])
					continue
				}
				want := mapOf(b["port"])
				if !slices.ContainsFunc(list(dig(s.m, "spec", "ports")), func(sp any) bool {
					sp2 := mapOf(sp)
					return want["name"] != nil && sp2["name"] == want["name"] || want["number"] != nil && num(sp2["port"], 0) == num(want["number"], -1)
				}) {
					t.Errorf("%s: %s has no port %v", o, s, want)
				}
			}
		}
	}
}

// parseConfig parses and validates a grpcws.yaml with the sidecar's own
// configuration package, with env as the environment. It returns the
// configuration and the files it names, with the paths written in the
// manifest.
//
// Those files (certificates, keys, descriptor sets) live in the cluster,
// not here, and the configuration package reads them to validate them. So
// parseConfig writes throwaway stand-ins to a temporary directory, a
// self-signed certificate and its key, the echo service's descriptor set,
// and parses a copy of the configuration whose paths point at them. The
// paths the test checks against the volume mounts are the ones in the
// manifest.
func parseConfig(t *testing.T, name string, data []byte, env map[string]string) (*config.Config, []configFile) {
	t.Helper()
	files := configFiles(t, name, data, env)
	standIns := writeStandIns(t)
	for _, f := range files {
		// Replace the path as written, which keeps every line where it is
		// for the configuration's error messages.
		data = bytes.ReplaceAll(data, []byte(f.raw), []byte(standIns[f.kind]))
	}
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
	cfg, err := config.Parse(data, name, lookup)
	if err != nil {
		t.Fatal(err) // the errors name the file and the line
	}
	return cfg, files
}

// A configFile is a file the configuration names.
type configFile struct {
	key  string // e.g. "listen.tls.cert_file"
	raw  string // the path as written
	path string // with ${NAME} expanded
	kind fileKind
}

type fileKind int

const (
	certFile fileKind = iota
	keyFile           // a private key: belongs in a Secret
	caFile
	descriptorFile
)

// configFiles finds the files a grpcws.yaml names.
func configFiles(t *testing.T, name string, data []byte, env map[string]string) []configFile {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil || len(doc.Content) == 0 {
		t.Fatalf("%s: %v", name, err)
	}
	root := doc.Content[0]
	var out []configFile
	add := func(key string, n *yaml.Node, kind fileKind) {
		if n == nil || n.Kind != yaml.ScalarNode || n.Value == "" {
			return
		}
		path := os.Expand(n.Value, func(k string) string { return env[k] })
		out = append(out, configFile{key: key, raw: n.Value, path: path, kind: kind})
	}
	tls := child(root, "listen", "tls")
	add("listen.tls.cert_file", child(tls, "cert_file"), certFile)
	add("listen.tls.key_file", child(tls, "key_file"), keyFile)
	add("listen.tls.client_ca_file", child(tls, "client_ca_file"), caFile)
	if backends := child(root, "backends"); backends != nil {
		for i, b := range backends.Content {
			tls := child(b, "tls")
			add(fmt.Sprintf("backends[%d].tls.ca_file", i), child(tls, "ca_file"), caFile)
			add(fmt.Sprintf("backends[%d].tls.cert_file", i), child(tls, "cert_file"), certFile)
			add(fmt.Sprintf("backends[%d].tls.key_file", i), child(tls, "key_file"), keyFile)
			if files := child(b, "descriptors", "files"); files != nil {
				for j, f := range files.Content {
					add(fmt.Sprintf("backends[%d].descriptors.files[%d]", i, j), f, descriptorFile)
				}
			}
		}
	}
	return out
}

// child walks mappings by key; nil if a step is missing.
func child(n *yaml.Node, keys ...string) *yaml.Node {
	for _, k := range keys {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == k {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

// writeStandIns writes a file of each kind to a temporary directory: a
// self-signed certificate that is also its own CA, its key, and a
// descriptor set.
func writeStandIns(t *testing.T) map[fileKind]string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "grpcws stand-in"},
		DNSNames:              []string{"localhost"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	descriptors, err := descset.Marshal(echov1.File_examples_echo_v1_echo_proto)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out := map[fileKind]string{}
	for kind, f := range map[fileKind]struct {
		name string
		data []byte
	}{
		certFile:       {"tls.crt", certPEM},
		keyFile:        {"tls.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})},
		caFile:         {"ca.crt", certPEM},
		descriptorFile: {"api.binpb", descriptors},
	} {
		out[kind] = filepath.Join(dir, f.name)
		if err := os.WriteFile(out[kind], f.data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// load reads every document of every YAML file under dir.
func load(t *testing.T, dir string) []object {
	t.Helper()
	var out []object
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (path.Ext(p) != ".yaml" && path.Ext(p) != ".yml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var m map[string]any
			err := dec.Decode(&m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("%s: document %d: %w", p, i, err)
			}
			if m == nil {
				return fmt.Errorf("%s: document %d is empty", p, i)
			}
			out = append(out, object{file: filepath.ToSlash(p), index: i, m: m})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// A mount is a container's volumeMount with the volume it mounts.
type mount struct {
	path, volume      string
	configMap, secret string            // the volume's source, if either
	items             map[string]string // the volume's items: path → key
}

// key returns the key of the ConfigMap or Secret behind rel, a path
// relative to the mount.
func (m mount) key(rel string) string {
	if k, ok := m.items[rel]; ok {
		return k
	}
	return rel
}

func volumeMounts(t *testing.T, pod, c map[string]any) []mount {
	t.Helper()
	volumes := map[string]map[string]any{}
	for _, v := range list(pod["volumes"]) {
		volumes[str(mapOf(v)["name"])] = mapOf(v)
	}
	var out []mount
	for _, vm := range list(c["volumeMounts"]) {
		vm := mapOf(vm)
		if vm["subPath"] != nil {
			t.Errorf("container %s: volumeMount %s uses subPath, which never sees updates", c["name"], vm["name"])
		}
		v, ok := volumes[str(vm["name"])]
		if !ok {
			t.Errorf("container %s: volumeMount %s: no such volume", c["name"], vm["name"])
			continue
		}
		m := mount{path: str(vm["mountPath"]), volume: str(vm["name"]), items: map[string]string{}}
		src := mapOf(v["configMap"])
		m.configMap = str(src["name"])
		if s := mapOf(v["secret"]); s != nil {
			src, m.secret = s, str(s["secretName"])
		}
		for _, it := range list(src["items"]) {
			m.items[str(mapOf(it)["path"])] = str(mapOf(it)["key"])
		}
		out = append(out, m)
	}
	return out
}

// mountFor returns the mount whose directory holds file, and file's path
// relative to it.
func mountFor(mounts []mount, file string) (mount, string, bool) {
	for _, m := range mounts {
		if rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.path, "/")+"/"); ok && rel != "" {
			return m, rel, true
		}
	}
	return mount{}, "", false
}

// configFlag returns the value of --config in args.
func configFlag(args []any) string {
	for i, a := range args {
		s := str(a)
		for _, flag := range []string{"--config", "-config"} {
			if v, ok := strings.CutPrefix(s, flag+"="); ok {
				return v
			}
			if s == flag && i+1 < len(args) {
				return str(args[i+1])
			}
		}
	}
	return ""
}

// environment is what the container's env gives the process: the value
// when written, the namespace for the Downward API's metadata.namespace,
// and a stand-in for other values from the Downward API, ConfigMaps and
// Secrets.
func environment(c map[string]any) map[string]string {
	env := map[string]string{}
	for _, e := range list(c["env"]) {
		e := mapOf(e)
		name := str(e["name"])
		switch {
		case e["value"] != nil:
			env[name] = str(e["value"])
		case str(dig(e, "valueFrom", "fieldRef", "fieldPath")) == "metadata.namespace":
			env[name] = namespace
		default:
			env[name] = "stand-in-for-" + strings.ToLower(name)
		}
	}
	return env
}

func containers(pod map[string]any) []map[string]any {
	var out []map[string]any
	for _, k := range []string{"initContainers", "containers"} {
		for _, c := range list(pod[k]) {
			out = append(out, mapOf(c))
		}
	}
	return out
}

func containerPorts(c map[string]any) map[string]int {
	out := map[string]int{}
	for _, p := range list(c["ports"]) {
		p := mapOf(p)
		out[str(p["name"])] = num(p["containerPort"], 0)
	}
	return out
}

// resolvePort returns the number a probe's or Service's port names: a
// number, or the name of a container port.
func resolvePort(p any, ports map[string]int) int {
	if n, ok := p.(int); ok {
		return n
	}
	if n, ok := ports[str(p)]; ok {
		return n
	}
	return -1
}

func portOf(t *testing.T, key, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	n, err2 := strconv.Atoi(port)
	if err != nil || err2 != nil {
		t.Fatalf("%s %q: not host:port", key, addr)
	}
	return n
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func preStopSleep(c map[string]any) int {
	return num(dig(c, "lifecycle", "preStop", "sleep", "seconds"), 0)
}

func ceilSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

// selects reports whether the selector matches the labels. An empty
// selector selects nothing here.
func selects(selector, labels map[string]any) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func ingressBackends(ing object) []map[string]any {
	var out []map[string]any
	if b := mapOf(dig(ing.m, "spec", "defaultBackend", "service")); b != nil {
		out = append(out, b)
	}
	for _, r := range list(dig(ing.m, "spec", "rules")) {
		for _, p := range list(dig(mapOf(r), "http", "paths")) {
			if b := mapOf(dig(mapOf(p), "backend", "service")); b != nil {
				out = append(out, b)
			}
		}
	}
	return out
}

func routesTo(ing object, services []object) bool {
	return slices.ContainsFunc(ingressBackends(ing), func(b map[string]any) bool {
		return slices.ContainsFunc(services, func(s object) bool { return s.name() == str(b["name"]) })
	})
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			return o, true
		}
	}
	return object{}, false
}

// dig walks nested maps by key; nil if a step is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m := mapOf(v)
		if m == nil {
			return nil
		}
		v = m[k]
	}
	return v
}

func mapOf(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any           { l, _ := v.([]any); return l }

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// num returns v as an int, or def when it is absent.
func num(v any, def int) int {
	switch v := v.(type) {
	case int:
		return v
	case nil:
		return def
	default:
		n, err := strconv.Atoi(str(v))
		if err != nil {
			return def
		}
		return n
	}
}
