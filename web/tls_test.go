package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/server"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/testpki"
)

// The sidecar's TLS listener, as a browser sees it: the page and the
// gRPC-Web and Connect calls go over HTTP/2, which ALPN picks, while the
// WebSockets of the same origin, for which a browser offers only HTTP/1.1,
// are upgraded as before. Every client of the compat bundle works over it.
func TestCompatTLS(t *testing.T) {
	t.Parallel()
	js := bundleCompat(t)
	b := testbackend.Start(t)
	pki := testpki.New(t)
	certFile, keyFile := pki.Server(t, "bridge", "127.0.0.1")
	cfg := config.Default()
	cfg.Listen.Address = "127.0.0.1:0"
	cfg.Listen.TLS = &config.ListenTLS{CertFile: certFile, KeyFile: keyFile}
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Backends = []config.Backend{config.NewBackend("echo", b.Addr)}
	cfg.Routes = []config.Route{{Backend: "echo", Services: []string{"examples.echo.v1.EchoService"}}}
	cfg.Drain.GracePeriod = 100 * time.Millisecond
	srv, err := server.New(server.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Fallback: compatPageHandler(js)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	waitReady(t, "http://"+srv.AdminAddr().String()+"/readyz")

	tab := newTab(t, 40*time.Second)
	openCompat(t, tab, fmt.Sprintf("https://%s/", srv.Addr()))
	if got := eval[string](t, tab, `performance.getEntriesByType("navigation")[0].nextHopProtocol`); got != "h2" {
		t.Errorf("the page came over %q; want h2", got)
	}
	for _, c := range []struct {
		name      string
		websocket bool
	}{
		{"improbable-ws", true},
		{"nice-ws", true},
		{"improbable-http", false},
		{"connect", false},
		{"grpc-web-text", false},
	} {
		call := func(scenario string) compatResult {
			return eval[compatResult](t, tab, fmt.Sprintf(`compat.clients(location.origin)[%q].%s()`, c.name, scenario))
		}
		want := compatResult{Responses: []string{"1", "2", "3"}, Header: c.name, Trailer: c.name}
		if got := call("serverStream"); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("%s serverStream over TLS:\n got  %+v\n want %+v", c.name, got, want)
		}
		if !c.websocket {
			continue
		}
		want = compatResult{Responses: []string{"one#1", "two 👋#2"}, Header: c.name, Trailer: c.name}
		if got := call("bidi"); fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("%s bidi over TLS:\n got  %+v\n want %+v", c.name, got, want)
		}
	}
	// The HTTP calls shared the page's HTTP/2 connection.
	protos := eval[[]string](t, tab, `[...new Set(performance.getEntriesByType("resource").
		filter(e => e.name.includes("EchoService")).map(e => e.nextHopProtocol))]`)
	if fmt.Sprint(protos) != "[h2]" {
		t.Errorf("the HTTP calls went over %q; want h2 only", protos)
	}
	if err := b.WaitIdle(backendContext(t)); err != nil {
		t.Error(err)
	}
}

// waitReady polls a readiness URL until it answers 200.
func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready within 10s (%v)", url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
