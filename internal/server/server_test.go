package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/muxtest"
	"github.com/grpcws/grpcws/internal/muxwire"
	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/demobackend"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	echoRoute   = "examples.echo.v1.EchoService.Echo"
	tickerRoute = "examples.echo.v1.EchoService.Ticker"
	uploadRoute = "examples.echo.v1.EchoService.Upload"
	bidiRoute   = "examples.echo.v1.EchoService.Bidi"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// backendServer is a demo gRPC backend with reflection that can be stopped
// and started again on the same address.
type backendServer struct {
	t     *testing.T
	addr  string
	chat  bool // also serve ChatService
	creds credentials.TransportCredentials

	mu   sync.Mutex
	srv  *grpc.Server
	done chan struct{}
}

func startBackend(t *testing.T, chat bool, creds credentials.TransportCredentials) *backendServer {
	b := &backendServer{t: t, addr: "127.0.0.1:0", chat: chat, creds: creds}
	b.start()
	t.Cleanup(b.stop)
	return b
}

func (b *backendServer) start() {
	b.t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the port may linger briefly after stop
		if lis, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	var opts []grpc.ServerOption
	if b.creds != nil {
		opts = append(opts, grpc.Creds(b.creds))
	}
	s := grpc.NewServer(opts...)
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{})
	if b.chat {
		chatv1.RegisterChatServiceServer(s, demobackend.NewChatServer())
	}
	reflection.Register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	b.mu.Lock()
	b.srv, b.done = s, done
	b.mu.Unlock()
}

func (b *backendServer) stop() {
	b.mu.Lock()
	s, done := b.srv, b.done
	b.srv = nil
	b.mu.Unlock()
	if s != nil {
		s.Stop()
		<-done
	}
}

// testConfig returns a configuration on loopback ports with one backend,
// "echo", at addr, whose services are all exposed.
func testConfig(addr string) *config.Config {
	cfg := config.Default()
	cfg.Listen.Address = "127.0.0.1:0"
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Backends = []config.Backend{config.NewBackend("echo", addr)}
	cfg.Routes = []config.Route{{Backend: "echo", All: true}}
	cfg.Drain.GracePeriod = 300 * time.Millisecond
	cfg.Drain.Timeout = 5 * time.Second
	return cfg
}

// running is a Server serving in the background.
type running struct {
	*Server
	url   string // ws:// or wss://
	admin string // http://host:port
	stop  func() error
}

func serve(t *testing.T, opts Options) *running {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	scheme := "ws://"
	if opts.Config.Listen.TLS != nil {
		scheme = "wss://"
	}
	r := &running{Server: s, url: scheme + s.Addr().String() + "/", admin: "http://" + s.AdminAddr().String()}
	r.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// waitReady polls /readyz until it answers 200.
func (r *running) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, "ready", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusOK
	})
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	res, err := http.Get(r.admin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialer opens WebSockets, optionally from a source address and over TLS.
type dialer struct {
	src    string
	tls    *tls.Config
	header http.Header
}

func (d dialer) dial(t *testing.T, ctx context.Context, url, subprotocol string) (*websocket.Conn, error) {
	t.Helper()
	nd := &net.Dialer{}
	if d.src != "" {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(d.src)}
	}
	client := &http.Client{Transport: &http.Transport{DialContext: nd.DialContext, TLSClientConfig: d.tls}}
	c, res, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: client, HTTPHeader: d.header, Subprotocols: []string{subprotocol}})
	if res != nil && res.Body != nil {
		res.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

func (d dialer) mustDial(t *testing.T, ctx context.Context, url, subprotocol string) *websocket.Conn {
	t.Helper()
	c, err := d.dial(t, ctx, url, subprotocol)
	if err != nil {
		t.Fatalf("dial %s: %v", subprotocol, err)
	}
	return c
}

// callEcho makes one Echo call and returns the close code.
func callEcho(t *testing.T, ctx context.Context, d dialer, url string) websocket.StatusCode {
	t.Helper()
	c, err := d.dial(t, ctx, url, echoRoute)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "hi"})
	code, _ := v1test.CloseCode(ctx, c)
	return code
}

func TestServe(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	ctx := testContext(t)
	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Fatalf("echo: close %d; want 1000", code)
	}
	// Plain HTTP without a fallback gets the bridge's 426.
	res, err := http.Get("http" + strings.TrimPrefix(r.url, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("GET / = %d; want 426", res.StatusCode)
	}
	if code, body := r.get(t, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
}

func TestExposeOnlyChosen(t *testing.T) {
	t.Parallel()
	b := startBackend(t, true, nil)
	cfg := testConfig(b.addr)
	cfg.Routes = []config.Route{
		{Backend: "echo", Methods: []string{"examples.echo.v1.EchoService/Echo"}},
		{Backend: "echo", Services: []string{"no.such.Service"}},
	}
	r := serve(t, Options{Config: cfg})
	ctx := testContext(t)
	waitFor(t, "the route to Echo", func() bool {
		return callEcho(t, ctx, dialer{}, r.url) == websocket.StatusNormalClosure
	})
	for _, route := range []string{tickerRoute, "chat.v1", "grpc.reflection.v1.ServerReflection.ServerReflectionInfo"} {
		c := dialer{}.mustDial(t, ctx, r.url, route)
		if code, _ := v1test.CloseCode(ctx, c); code != 4012 {
			t.Errorf("%s: close %d; want 4012 (not exposed)", route, code)
		}
	}
	code, body := r.get(t, "/readyz")
	if want := "routes[1]: backend echo has no service no.such.Service"; code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
		t.Errorf("/readyz = %d %q; want 503 and %q", code, body, want)
	}
}

// TestReadyz kills the backend and brings it back: /readyz follows, new
// streams fail with UNAVAILABLE while it is down and work again after.
func TestReadyz(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	ctx := testContext(t)

	b.stop()
	waitFor(t, "not ready", func() bool {
		code, body := r.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "backend echo: ")
	})
	if code := callEcho(t, ctx, dialer{}, r.url); code != 4014 {
		t.Errorf("echo while the backend is down: close %d; want 4014", code)
	}
	b.start()
	r.waitReady(t)
	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("echo after the backend returned: close %d; want 1000", code)
	}
}

// TestReflectionRefresh redeploys the backend with one more service: when
// it reconnects, the bridge reads its reflection again and serves it.
func TestReflectionRefresh(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	ctx := testContext(t)
	c := dialer{}.mustDial(t, ctx, r.url, "chat.v1")
	if code, _ := v1test.CloseCode(ctx, c); code != 4012 {
		t.Fatalf("chat before: close %d; want 4012", code)
	}
	b.stop()
	b.chat = true
	b.start()
	waitFor(t, "the chat route", func() bool {
		c := dialer{}.mustDial(t, ctx, r.url, "chat.v1")
		v1test.Send(t, ctx, c, &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r", Nickname: "n"}}})
		typ, _, err := c.Read(ctx)
		c.CloseNow()
		return err == nil && typ == websocket.MessageText // the headers: the route exists
	})
}

func TestLimits(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.MaxConnections = 3
	cfg.Limits.MaxConnectionsPerIP = 2
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	open := func(src string) *websocket.Conn {
		c := dialer{src: src}.mustDial(t, ctx, r.url, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: src})
		v1test.Next(t, ctx, c)
		return c
	}
	refused := func(src string) {
		t.Helper()
		c := dialer{src: src}.mustDial(t, ctx, r.url, bidiRoute)
		if code, _ := v1test.CloseCode(ctx, c); code != websocket.StatusTryAgainLater {
			t.Errorf("from %s: close %d; want 1013", src, code)
		}
	}
	conns := []*websocket.Conn{open("127.0.0.2"), open("127.0.0.2")}
	refused("127.0.0.2") // per address
	conns = append(conns, open("127.0.0.3"))
	refused("127.0.0.4") // in total
	for _, c := range conns {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "undisturbed"})
		v1test.Next(t, ctx, c)
	}
	_, body := r.get(t, "/metrics")
	if want := `grpcws_handshakes_total{outcome="over_limit"} 2`; !strings.Contains(body, want) {
		t.Errorf("metrics lack %q", want)
	}
}

// TestMetrics checks the metrics after a known exchange.
func TestMetrics(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	ctx := testContext(t)

	c := dialer{}.mustDial(t, ctx, r.url, uploadRoute)
	for range 3 {
		v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte("12345")}) // 7 bytes
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`)); err != nil {
		t.Fatal(err)
	}
	if code, n := v1test.CloseCode(ctx, c); code != websocket.StatusNormalClosure || n != 1 {
		t.Fatalf("upload: close %d, %d messages; want 1000, 1", code, n)
	}
	c = dialer{}.mustDial(t, ctx, r.url, "no.such.Route")
	v1test.CloseCode(ctx, c)

	want := []string{
		`grpcws_handshakes_total{outcome="accepted"} 1`,
		`grpcws_handshakes_total{outcome="unknown_route"} 1`,
		`grpcws_messages_total{direction="client_to_backend",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 3`,
		`grpcws_message_bytes_total{direction="client_to_backend",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 21`,
		`grpcws_messages_total{direction="backend_to_client",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 1`,
		`grpcws_streams_total{code="OK",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 1`,
		`grpcws_stream_duration_seconds_count{protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 1`,
		`grpcws_streams_open{protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Upload"} 0`,
		`grpcws_connections_open 0`,
		`grpcws_backend_up{backend="echo"} 1`,
		`grpcws_draining 0`,
	}
	waitFor(t, "the stream's end in the metrics", func() bool {
		_, body := r.get(t, "/metrics")
		return strings.Contains(body, want[5])
	})
	_, body := r.get(t, "/metrics")
	lines := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		lines[sc.Text()] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("metrics lack the line %q", w)
		}
	}
}

// TestDrain stops the server with two streams open: one ends inside the
// grace period, the other is closed with 1001 after it and its backend
// stream cancelled.
func TestDrain(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Drain.GracePeriod = 500 * time.Millisecond
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	finishing := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
	v1test.Send(t, ctx, finishing, &echov1.BidiRequest{Message: "a"})
	v1test.Next(t, ctx, finishing)
	endless := dialer{}.mustDial(t, ctx, r.url, tickerRoute)
	v1test.Send(t, ctx, endless, &echov1.TickerRequest{Interval: durationpb.New(50 * time.Millisecond)})
	v1test.Next(t, ctx, endless)

	stopped := make(chan error, 1)
	began := time.Now()
	go func() { stopped <- r.stop() }()
	waitFor(t, "not ready while draining", func() bool {
		code, body := r.get(t, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "draining")
	})
	if _, page := r.get(t, "/"); !strings.Contains(page, `<span id="state" class="badge bad">draining</span>`) {
		t.Error("the status page does not say the sidecar is draining")
	}
	c := dialer{}.mustDial(t, ctx, r.url, echoRoute)
	if code, _ := v1test.CloseCode(ctx, c); code != websocket.StatusGoingAway {
		t.Errorf("new connection while draining: close %d; want 1001", code)
	}
	// The finishing stream still works, to its natural end.
	v1test.Send(t, ctx, finishing, &echov1.BidiRequest{Message: "b"})
	v1test.Next(t, ctx, finishing)
	if err := finishing.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`)); err != nil {
		t.Fatal(err)
	}
	if code, _ := v1test.CloseCode(ctx, finishing); code != websocket.StatusNormalClosure {
		t.Errorf("finishing stream: close %d; want 1000", code)
	}
	// The endless one ticks through the grace period, then gets 1001.
	code, ticks := v1test.CloseCode(ctx, endless)
	if code != websocket.StatusGoingAway || ticks < 3 {
		t.Errorf("endless stream: close %d after %d ticks; want 1001 after several", code, ticks)
	}
	if d := time.Since(began); d < cfg.Drain.GracePeriod {
		t.Errorf("closed after %v, inside the grace period", d)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// serial returns the serial number of the certificate a TLS server at url
// presents.
func serial(t *testing.T, pool *x509.CertPool, addr string) *big.Int {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestTLS serves wss with certificates from a test CA, rotates the
// certificate with a stream open across the rotation, and verifies client
// certificates.
func TestTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	certFile, keyFile := pki.Server(t, "bridge", "127.0.0.1")
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Listen.TLS = &config.ListenTLS{CertFile: certFile, KeyFile: keyFile}
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	d := dialer{tls: &tls.Config{RootCAs: pki.CertPool}}

	open := d.mustDial(t, ctx, r.url, bidiRoute)
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "before"})
	v1test.Next(t, ctx, open)
	before := serial(t, pki.CertPool, r.Addr().String())

	after := pki.Rotate(t, "bridge", "127.0.0.1")
	waitFor(t, "the new certificate", func() bool {
		return serial(t, pki.CertPool, r.Addr().String()).Cmp(after) == 0
	})
	if before.Cmp(after) == 0 {
		t.Fatal("the rotation kept the serial")
	}
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "after"})
	v1test.Next(t, ctx, open)
	if code := callEcho(t, ctx, d, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("echo with the new certificate: close %d", code)
	}
	// A client that does not trust the CA cannot connect.
	if _, err := (dialer{tls: &tls.Config{}}).dial(t, ctx, r.url, echoRoute); err == nil {
		t.Error("a client without the CA connected")
	}

	// The same listener serves HTTP/2 through ALPN: gRPC clients, and
	// Connect and gRPC-Web calls from clients that offer it.
	grpcBidi(t, ctx, r.Addr().String(), credentials.NewTLS(&tls.Config{RootCAs: pki.CertPool}))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.CertPool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+r.Addr().String()+"/examples.echo.v1.EchoService/Echo",
		strings.NewReader(`{"message":"connect over h2"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Connect-Protocol-Version", "1")
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK || !strings.Contains(string(body), "connect over h2") {
		t.Errorf("Connect over TLS: %s %s %s; want HTTP/2 200 and the echo", res.Proto, res.Status, body)
	}
}

func TestClientCertificates(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	certFile, keyFile := pki.Server(t, "bridge", "127.0.0.1")
	clientCert, clientKey := pki.Client(t, "browser", "alice")
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Listen.TLS = &config.ListenTLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: pki.CAFile, ClientAuth: "require"}
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	if _, err := (dialer{tls: &tls.Config{RootCAs: pki.CertPool}}).dial(t, ctx, r.url, echoRoute); err == nil {
		t.Error("a client without a certificate connected")
	}
	pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	d := dialer{tls: &tls.Config{RootCAs: pki.CertPool, Certificates: []tls.Certificate{pair}}}
	if code := callEcho(t, ctx, d, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("echo with a client certificate: close %d; want 1000", code)
	}
}

// TestBackendMTLS reaches a backend that requires client certificates.
func TestBackendMTLS(t *testing.T) {
	t.Parallel()
	pki := testpki.New(t)
	b := startBackend(t, false, credentials.NewTLS(pki.ServerTLS(t, "backend", "127.0.0.1")))
	certFile, keyFile := pki.Client(t, "bridge-client", "grpcws")
	cfg := testConfig(b.addr)
	cfg.Backends[0].TLS = &config.BackendTLS{CAFile: pki.CAFile, CertFile: certFile, KeyFile: keyFile}
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Fatalf("echo over mTLS: close %d; want 1000", code)
	}

	// Without the client certificate the backend refuses the bridge.
	cfg = testConfig(b.addr)
	cfg.Backends[0].TLS = &config.BackendTLS{CAFile: pki.CAFile}
	r = serve(t, Options{Config: cfg})
	time.Sleep(500 * time.Millisecond)
	if code, body := r.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "backend echo") {
		t.Errorf("/readyz without a client certificate = %d %q; want 503 naming the backend", code, body)
	}
}

// TestReloadKeepsStreams reloads a configuration that moves the route to
// another backend: new connections go there, the open stream stays on the
// old one until it ends, and then the old backend's connection is closed.
func TestReloadKeepsStreams(t *testing.T) {
	t.Parallel()
	first := startBackend(t, false, nil)
	second := startBackend(t, true, nil)
	cfg := testConfig(first.addr)
	next2 := testConfig(second.addr)
	var mu sync.Mutex
	current := cfg
	r := serve(t, Options{Config: cfg, Load: func() (*config.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}})
	r.waitReady(t)
	ctx := testContext(t)
	open := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "before"})
	v1test.Next(t, ctx, open)

	mu.Lock()
	current = next2
	mu.Unlock()
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	// The second backend has the chat service.
	waitFor(t, "the chat route", func() bool {
		c := dialer{}.mustDial(t, ctx, r.url, "chat.v1")
		v1test.Send(t, ctx, c, &chatv1.ChatRequest{Kind: &chatv1.ChatRequest_Join{Join: &chatv1.Join{Room: "r", Nickname: "n"}}})
		typ, _, err := c.Read(ctx)
		c.CloseNow()
		return err == nil && typ == websocket.MessageText
	})
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "after"})
	v1test.Next(t, ctx, open)

	// A failed reload keeps what runs.
	mu.Lock()
	bad := testConfig(second.addr)
	bad.Routes[0].Backend = "missing"
	current = bad
	mu.Unlock()
	if err := r.Reload(); err == nil {
		t.Error("a reload with a route to a missing backend succeeded")
	}
	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("echo after a failed reload: close %d", code)
	}
}

// TestTracing turns tracing on: the backend stream's span continues the
// trace of the upgrade request, and the backend gets the span's context.
func TestTracing(t *testing.T) {
	t.Parallel()
	tb := testbackend.Start(t)
	cfg := testConfig(tb.Addr)
	cfg.Backends[0].Descriptors.Files = []string{testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)}
	cfg.Tracing.Enabled = true
	cfg.Tracing.OTLPEndpoint = "http://127.0.0.1:4318"
	spans := tracetest.NewSpanRecorder()
	r := serve(t, Options{Config: cfg, TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))})
	r.waitReady(t)
	ctx := testContext(t)

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	d := dialer{header: http.Header{"Traceparent": {"00-" + traceID + "-" + parentID + "-01"}}}
	if code := callEcho(t, ctx, d, r.url); code != websocket.StatusNormalClosure {
		t.Fatalf("echo: close %d", code)
	}
	call, err := tb.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	got := call.MD.Get("traceparent")
	if len(got) != 1 || !strings.HasPrefix(got[0], "00-"+traceID+"-") || strings.Contains(got[0], parentID) {
		t.Fatalf("backend traceparent %q; want the trace %s with the bridge's span", got, traceID)
	}
	waitFor(t, "the span", func() bool { return len(spans.Ended()) > 0 })
	s := spans.Ended()[0]
	if s.Name() != "examples.echo.v1.EchoService/Echo" || s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID {
		t.Errorf("span %q trace %s parent %s; want the method, trace %s, parent %s", s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID(), traceID, parentID)
	}
	if !strings.Contains(got[0], s.SpanContext().SpanID().String()) {
		t.Errorf("backend traceparent %q does not carry the span %s", got[0], s.SpanContext().SpanID())
	}
}

// TestMultiplexed: the sidecar serves grpcws.mux.v1 with the configured
// limits and windows, counts its streams in the connection limits, and
// reports it in the metrics.
func TestMultiplexed(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.Mux.MaxStreams = 2
	cfg.Limits.Mux.StreamWindow = 64 * config.KiB
	cfg.Limits.MaxConnectionsPerIP = 3 // the socket and two streams
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	c := muxtest.Dial(t, ctx, r.url, nil, nil)
	if c.Settings.MaxStreams != 2 || c.Settings.StreamWindow != 64<<10 {
		t.Fatalf("settings %+v; want 2 streams, 64 KiB", c.Settings)
	}
	msg, err := proto.Marshal(&echov1.BidiRequest{Message: "m"})
	if err != nil {
		t.Fatal(err)
	}
	tick := func(id uint32) []byte { return muxtest.Data(id, msg, true) }
	c.Send(t, ctx, muxtest.Open(t, 1, bidiRoute, nil, ""), tick(1), muxtest.Open(t, 3, bidiRoute, nil, ""), tick(3))
	if !c.Wait(ctx, func(c *muxtest.Conn) bool { return len(c.Stream(1).Messages) == 1 && len(c.Stream(3).Messages) == 1 }) {
		t.Fatal("no answers on two streams")
	}
	// A third stream is over max_streams; a second socket from the same
	// address is over max_connections_per_ip, which counts the streams.
	c.Send(t, ctx, muxtest.Open(t, 5, bidiRoute, nil, ""))
	if s := c.WaitEnd(t, ctx, 5); s.Status.Code() != codes.ResourceExhausted {
		t.Errorf("a third stream: %v; want RESOURCE_EXHAUSTED", s.Status)
	}
	ws, res, err := websocket.Dial(ctx, r.url, &websocket.DialOptions{Subprotocols: []string{muxwire.Subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	defer ws.CloseNow()
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Errorf("a second socket: %v; want 1013", err)
	}
	_, body := r.get(t, "/metrics")
	for _, want := range []string{"grpcws_mux_connections_open 1", `grpcws_streams_open{protocol="grpcws.mux.v1",route="/examples.echo.v1.EchoService/Bidi"} 2`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
