package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/testpki"
)

// TestServerRotation serves HTTPS and WebSocket with a certificate that is
// replaced while connections are open: new handshakes get the new
// certificate, the open connections keep working on the old one.
func TestServerRotation(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	logger, logs := newLogger()
	c, err := Server(ServerOptions{CertFile: certFile, KeyFile: keyFile, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, c, true)
	// A client that offers h2 gets it; one that offers HTTP/1.1 alone, as
	// for a WebSocket, gets that.
	h2 := mustDial(t, addr, &tls.Config{RootCAs: p.CertPool, NextProtos: []string{"h2", "http/1.1"}})
	if got, want := h2.ConnectionState().NegotiatedProtocol, "h2"; got != want {
		t.Errorf("negotiated protocol %q; want %q", got, want)
	}
	h2.Close()
	client := &tls.Config{RootCAs: p.CertPool, NextProtos: []string{"http/1.1"}}
	old := mustDial(t, addr, client)
	if got, want := old.ConnectionState().NegotiatedProtocol, "http/1.1"; got != want {
		t.Errorf("negotiated protocol %q; want %q", got, want)
	}
	before := old.serial()
	if want := fileSerial(t, certFile, keyFile); before.Cmp(want) != 0 {
		t.Fatalf("serial %x; want %x from %s", before, want, certFile)
	}
	if body, err := old.get(); err != nil || body != "client=" {
		t.Fatalf("get = %q, %v; want client=", body, err)
	}
	ws := dialWebSocket(t, addr, p.CertPool)
	echo(t, ws, "before the rotation")

	after := p.Rotate(t, "bridge", "127.0.0.1")
	if got := serverSerial(t, addr, client); got.Cmp(after) != 0 {
		t.Fatalf("a new handshake got serial %x; want the new %x (old %x)", got, after, before)
	}
	if body, err := old.get(); err != nil || body != "client=" {
		t.Errorf("get on the connection made before the rotation = %q, %v; want client=", body, err)
	}
	if got := old.serial(); got.Cmp(before) != 0 {
		t.Errorf("the old connection's serial changed to %x", got)
	}
	echo(t, ws, "after the rotation")
	if err := ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close the WebSocket: %v", err)
	}

	infos := logs.records(slog.LevelInfo)
	if len(infos) != 1 || infos[0]["serial"] != after.Text(16) || !strings.Contains(infos[0]["files"], certFile) {
		t.Errorf("info logs %v; want one for serial %x naming %s", infos, after, certFile)
	}
	if errs := logs.records(slog.LevelError); len(errs) != 0 {
		t.Errorf("error logs %v; want none", errs)
	}
}

func dialWebSocket(t *testing.T, addr string, roots *x509.CertPool) *websocket.Conn {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss://"+addr+"/ws", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatalf("dial wss://%s: %v", addr, err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	if resp.ProtoMajor != 1 {
		t.Errorf("upgrade over %s; want HTTP/1.1", resp.Proto)
	}
	return ws
}

func echo(t *testing.T, ws *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_, got, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("read the echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q; want %q", got, msg)
	}
}

// TestServerBadReplacement replaces a file with one that cannot be loaded:
// the server keeps its certificate and client CAs, logs the error once,
// and takes the next good replacement.
func TestServerBadReplacement(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		file  string // "cert", "key" or "ca": the file broken
		data  string // its new content
		gone  bool   // remove the file instead
		wants string // in the logged error
	}{
		{name: "corrupt certificate", file: "cert", data: "not a certificate", wants: "failed to find any PEM data in certificate input"},
		{name: "empty key", file: "key", data: "", wants: "failed to find any PEM data in key input"},
		{name: "key of another certificate", file: "key", wants: "private key does not match public key"},
		{name: "certificate removed", file: "cert", gone: true, wants: "no such file"},
		{name: "corrupt client CA", file: "ca", data: "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n", wants: "no PEM certificates"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := testpki.New(t)
			certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
			logger, logs := newLogger()
			c, err := Server(ServerOptions{
				CertFile:     certFile,
				KeyFile:      keyFile,
				ClientCAFile: p.CAFile,
				ClientAuth:   tls.VerifyClientCertIfGiven,
				Logger:       logger,
			})
			if err != nil {
				t.Fatal(err)
			}
			addr := serveHTTPS(t, c, false)
			client := p.ClientTLS(t, "alice", "alice")
			before := serverSerial(t, addr, client)

			file := map[string]string{"cert": certFile, "key": keyFile, "ca": p.CAFile}[tt.file]
			original := readFile(t, file)
			switch {
			case tt.gone:
				if err := os.Remove(file); err != nil {
					t.Fatal(err)
				}
			case tt.name == "key of another certificate":
				_, otherKey := p.Server(t, "other", "127.0.0.1")
				replace(t, file, readFile(t, otherKey))
			default:
				replace(t, file, []byte(tt.data))
			}
			for range 2 {
				hc := mustDial(t, addr, client)
				if got := hc.serial(); got.Cmp(before) != 0 {
					t.Fatalf("serial %x after a bad replacement; want the previous %x", got, before)
				}
				// The client CAs are the previous ones too.
				if body, err := hc.get(); err != nil || body != "client=alice" {
					t.Fatalf("get = %q, %v; want client=alice", body, err)
				}
				hc.Close()
			}
			errs := logs.records(slog.LevelError)
			if len(errs) != 1 {
				t.Fatalf("error logs %v; want exactly one", errs)
			}
			if !strings.Contains(errs[0]["files"], file) || !strings.Contains(errs[0]["error"], file) || !strings.Contains(errs[0]["error"], tt.wants) {
				t.Errorf("error log %v; want one naming %s with %q", errs[0], file, tt.wants)
			}

			if tt.file == "ca" {
				replace(t, file, original)
			} else {
				p.Rotate(t, "bridge", "127.0.0.1")
			}
			want := fileSerial(t, certFile, keyFile)
			hc := mustDial(t, addr, client)
			if got := hc.serial(); got.Cmp(want) != 0 {
				t.Errorf("serial %x after a good replacement; want %x", got, want)
			}
			if body, err := hc.get(); err != nil || body != "client=alice" {
				t.Errorf("get = %q, %v; want client=alice", body, err)
			}
			if infos := logs.records(slog.LevelInfo); len(infos) != 1 {
				t.Errorf("info logs %v; want one", infos)
			}
		})
	}
}

// TestServerClientAuth checks client certificates: required, verified if
// given, and not requested without a client CA file.
func TestServerClientAuth(t *testing.T) {
	t.Parallel()
	p, other := testpki.New(t), testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	trusted := &p.ClientTLS(t, "alice", "alice").Certificates[0]
	untrusted := &other.ClientTLS(t, "mallory", "mallory").Certificates[0]
	tests := []struct {
		name    string
		noCA    bool
		auth    tls.ClientAuthType
		cert    *tls.Certificate // what the client presents if asked
		want    string           // the response body; empty: the request fails
		wantErr string           // part of the error when it fails
	}{
		{name: "require, none", auth: tls.RequireAndVerifyClientCert, wantErr: "certificate required"},
		{name: "require, trusted", auth: tls.RequireAndVerifyClientCert, cert: trusted, want: "client=alice"},
		{name: "require, untrusted", auth: tls.RequireAndVerifyClientCert, cert: untrusted, wantErr: "unknown certificate authority"},
		{name: "if given, none", auth: tls.VerifyClientCertIfGiven, want: "client="},
		{name: "if given, trusted", auth: tls.VerifyClientCertIfGiven, cert: trusted, want: "client=alice"},
		{name: "if given, untrusted", auth: tls.VerifyClientCertIfGiven, cert: untrusted, wantErr: "unknown certificate authority"},
		{name: "zero means require", wantErr: "certificate required"},
		{name: "no CA file, none", noCA: true, auth: tls.RequireAndVerifyClientCert, want: "client="},
		{name: "no CA file, a certificate is not asked for", noCA: true, auth: tls.RequireAndVerifyClientCert, cert: trusted, want: "client="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientAuth: tt.auth, Logger: slog.New(&logRecorder{})}
			if !tt.noCA {
				opts.ClientCAFile = p.CAFile
			}
			c, err := Server(opts)
			if err != nil {
				t.Fatal(err)
			}
			addr := serveHTTPS(t, c, false)
			// In TLS 1.3 the client's handshake ends before the server has
			// checked its certificate: the request is what fails.
			// GetClientCertificate rather than Certificates, so that the
			// client presents its certificate even when the server's list
			// of acceptable CAs does not include its issuer.
			client := &tls.Config{
				RootCAs: p.CertPool,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
					if tt.cert == nil {
						return &tls.Certificate{}, nil
					}
					return tt.cert, nil
				},
			}
			hc, err := dial(t, addr, client)
			var body string
			if err == nil {
				body, err = hc.get()
			}
			if tt.want != "" {
				if err != nil || body != tt.want {
					t.Errorf("get = %q, %v; want %q", body, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("get = %q, %v; want an error with %q", body, err, tt.wantErr)
			}
		})
	}
}

// TestClient dials an HTTPS server that requires client certificates with
// configurations made by Client.
func TestClient(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	addr := serveHTTPS(t, p.ServerTLS(t, "backend", "localhost"), true)
	certFile, keyFile := p.Client(t, "grpcws", "grpcws")
	tests := []struct {
		name    string
		opts    ClientOptions
		want    string // the response body; empty: the request fails
		wantErr string // part of the error when it fails
	}{
		{
			name: "mutual TLS",
			opts: ClientOptions{CAFile: p.CAFile, CertFile: certFile, KeyFile: keyFile, ServerName: "localhost"},
			want: "client=grpcws",
		},
		{
			name:    "no client certificate",
			opts:    ClientOptions{CAFile: p.CAFile, ServerName: "localhost"},
			wantErr: "certificate required",
		},
		{
			name:    "no server name",
			opts:    ClientOptions{CAFile: p.CAFile, CertFile: certFile, KeyFile: keyFile},
			wantErr: "127.0.0.1",
		},
		{
			name:    "system roots",
			opts:    ClientOptions{CertFile: certFile, KeyFile: keyFile, ServerName: "localhost"},
			wantErr: "unknown authority",
		},
		{
			name: "insecure",
			opts: ClientOptions{CertFile: certFile, KeyFile: keyFile, InsecureSkipVerify: true},
			want: "client=grpcws",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Client(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			hc, err := dial(t, addr, c)
			var body string
			if err == nil {
				body, err = hc.get()
			}
			if tt.want != "" {
				if err != nil || body != tt.want {
					t.Errorf("get = %q, %v; want %q", body, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("get = %q, %v; want an error with %q", body, err, tt.wantErr)
			}
		})
	}
}

// TestClientRotation replaces the client certificate: the next connection
// presents the new one.
func TestClientRotation(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	addr := serveHTTPS(t, p.ServerTLS(t, "backend", "127.0.0.1"), true)
	certFile, keyFile := p.Client(t, "grpcws", "grpcws-1")
	logger, logs := newLogger()
	c, err := Client(ClientOptions{CAFile: p.CAFile, CertFile: certFile, KeyFile: keyFile, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	old := mustDial(t, addr, c)
	if body, err := old.get(); err != nil || body != "client=grpcws-1" {
		t.Fatalf("get = %q, %v; want client=grpcws-1", body, err)
	}

	p.Client(t, "grpcws", "grpcws-2")
	want := fileSerial(t, certFile, keyFile)
	if body, err := mustDial(t, addr, c).get(); err != nil || body != "client=grpcws-2" {
		t.Errorf("get on a new connection = %q, %v; want client=grpcws-2", body, err)
	}
	if body, err := old.get(); err != nil || body != "client=grpcws-1" {
		t.Errorf("get on the old connection = %q, %v; want client=grpcws-1", body, err)
	}

	// A bad replacement keeps the previous certificate.
	replace(t, keyFile, []byte("not a key"))
	if body, err := mustDial(t, addr, c).get(); err != nil || body != "client=grpcws-2" {
		t.Errorf("get after a bad replacement = %q, %v; want client=grpcws-2", body, err)
	}
	infos, errs := logs.records(slog.LevelInfo), logs.records(slog.LevelError)
	if len(infos) != 1 || infos[0]["serial"] != want.Text(16) {
		t.Errorf("info logs %v; want one for serial %x", infos, want)
	}
	if len(errs) != 1 || !strings.Contains(errs[0]["error"], keyFile) {
		t.Errorf("error logs %v; want one naming %s", errs, keyFile)
	}
}

// TestConcurrentHandshakes rotates the certificate while clients connect:
// every handshake gets a whole certificate, the previous or the new one.
func TestConcurrentHandshakes(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	c, err := Server(ServerOptions{CertFile: certFile, KeyFile: keyFile, Logger: slog.New(&logRecorder{})})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, c, false)
	client := &tls.Config{RootCAs: p.CertPool}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 20 {
				hc, err := dial(t, addr, client)
				if err == nil {
					_, err = hc.get()
					hc.Close()
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 5 {
		p.Rotate(t, "bridge", "127.0.0.1")
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
}

// TestCheckInterval checks that the files are not looked at again before
// the interval has passed. It changes checkInterval, so it does not run in
// parallel.
func TestCheckInterval(t *testing.T) {
	saved := checkInterval
	checkInterval = time.Hour
	t.Cleanup(func() { checkInterval = saved })
	p := testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	c, err := Server(ServerOptions{CertFile: certFile, KeyFile: keyFile, Logger: slog.New(&logRecorder{})})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveHTTPS(t, c, false)
	client := &tls.Config{RootCAs: p.CertPool}
	before := serverSerial(t, addr, client)
	p.Rotate(t, "bridge", "127.0.0.1")
	if got := serverSerial(t, addr, client); got.Cmp(before) != 0 {
		t.Errorf("serial %x within the check interval; want the previous %x", got, before)
	}
}

// TestLoadErrors checks that options and files that cannot be loaded give
// an error naming what is wrong.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	certFile, keyFile := p.Server(t, "bridge", "127.0.0.1")
	dir := t.TempDir()
	missing := dir + "/missing.pem"
	garbage := dir + "/garbage.pem"
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	serverTests := []struct {
		name  string
		opts  ServerOptions
		names []string // what the error must mention
	}{
		{name: "no files", opts: ServerOptions{}, names: []string{"certificate file", "key file"}},
		{name: "no key file", opts: ServerOptions{CertFile: certFile}, names: []string{"key file"}},
		{name: "missing certificate", opts: ServerOptions{CertFile: missing, KeyFile: keyFile}, names: []string{missing}},
		{name: "missing key", opts: ServerOptions{CertFile: certFile, KeyFile: missing}, names: []string{missing}},
		{name: "garbage certificate", opts: ServerOptions{CertFile: garbage, KeyFile: keyFile}, names: []string{garbage}},
		{name: "garbage key", opts: ServerOptions{CertFile: certFile, KeyFile: garbage}, names: []string{garbage}},
		{name: "missing client CA", opts: ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: missing}, names: []string{missing}},
		{name: "garbage client CA", opts: ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: garbage}, names: []string{garbage}},
		{
			name:  "client auth without verification",
			opts:  ServerOptions{CertFile: certFile, KeyFile: keyFile, ClientCAFile: p.CAFile, ClientAuth: tls.RequireAnyClientCert},
			names: []string{"RequireAnyClientCert"},
		},
	}
	for _, tt := range serverTests {
		t.Run("server/"+tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Server(tt.opts)
			if c != nil {
				t.Errorf("Server returned a configuration with the error %v", err)
			}
			wantErrorNaming(t, err, append(tt.names, "tlsfiles:")...)
		})
	}
	clientTests := []struct {
		name  string
		opts  ClientOptions
		names []string
	}{
		{name: "missing CA", opts: ClientOptions{CAFile: missing}, names: []string{missing}},
		{name: "garbage CA", opts: ClientOptions{CAFile: garbage}, names: []string{garbage}},
		{name: "certificate without key", opts: ClientOptions{CertFile: certFile}, names: []string{"key file"}},
		{name: "key without certificate", opts: ClientOptions{KeyFile: keyFile}, names: []string{"certificate file"}},
		{name: "missing certificate", opts: ClientOptions{CertFile: missing, KeyFile: keyFile}, names: []string{missing}},
		{name: "mismatched pair", opts: ClientOptions{CertFile: certFile, KeyFile: garbage}, names: []string{certFile, garbage}},
	}
	for _, tt := range clientTests {
		t.Run("client/"+tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Client(tt.opts)
			if c != nil {
				t.Errorf("Client returned a configuration with the error %v", err)
			}
			wantErrorNaming(t, err, append(tt.names, "tlsfiles:")...)
		})
	}
	// The file's own error survives the wrapping.
	_, err := Server(ServerOptions{CertFile: missing, KeyFile: keyFile})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("error %v; want one wrapping os.ErrNotExist", err)
	}
}

// TestClientGRPC reaches a gRPC backend that requires client certificates,
// as the bridge does, and checks on the backend which client it saw.
func TestClientGRPC(t *testing.T) {
	t.Parallel()
	p := testpki.New(t)
	var (
		mu   sync.Mutex
		seen []string // the client common names the backend saw
	)
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if pr, ok := peer.FromContext(ctx); ok {
			if info, ok := pr.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				mu.Lock()
				seen = append(seen, info.State.PeerCertificates[0].Subject.CommonName)
				mu.Unlock()
			}
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(p.ServerTLS(t, "backend", "127.0.0.1"))),
		grpc.UnaryInterceptor(record),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	certFile, keyFile := p.Client(t, "grpcws", "grpcws")

	tests := []struct {
		name string
		opts ClientOptions
		want codes.Code
	}{
		{name: "mutual TLS", opts: ClientOptions{CAFile: p.CAFile, CertFile: certFile, KeyFile: keyFile}, want: codes.OK},
		{name: "no client certificate", opts: ClientOptions{CAFile: p.CAFile}, want: codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Client(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(c)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
			if got := status.Code(err); got != tt.want {
				t.Errorf("health check: %v; want code %v", err, tt.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 || seen[0] != "grpcws" {
		t.Errorf("the backend saw clients %q; want [grpcws]", seen)
	}
}
