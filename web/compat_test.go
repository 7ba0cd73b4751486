package web_test

// The real clients of grpcwebproxy's users, in Chromium, against the bridge
// (grpc-websockets over WebSocket) and the HTTP gateway (gRPC-Web, Connect):
// @improbable-eng/grpc-web, nice-grpc-web, Google's grpc-web and
// @connectrpc/connect-web, from npm, bundled by esbuild from web/compat/
// when the tests start.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
)

// A testBundle is a test page's script: one entry point under web/,
// bundled once, when a test first needs it.
type testBundle struct {
	entry string // relative to the repository's root
	once  sync.Once
	js    []byte
	err   error
}

// compatBundle is web/compat/main.ts bundled.
var compatBundle = &testBundle{entry: "web/compat/main.ts"}

// bundleCompat returns compatBundle's script.
func bundleCompat(t *testing.T) []byte {
	t.Helper()
	return compatBundle.build(t)
}

// build runs the pinned esbuild from node_modules (npm ci). Without it the
// test is skipped, unless CI is set.
func (b *testBundle) build(t *testing.T) []byte {
	t.Helper()
	esbuild, err := filepath.Abs(filepath.Join("..", "node_modules", ".bin", "esbuild"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(esbuild); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing and CI is set: run npm ci", esbuild)
		}
		t.Skipf("skipping: %s is missing (npm ci)", esbuild)
	}
	b.once.Do(func() {
		cmd := exec.Command(esbuild, b.entry, "--bundle", "--format=iife", "--platform=browser",
			"--target=es2022", "--log-level=warning")
		cmd.Dir = ".."
		var stderr strings.Builder
		cmd.Stderr = &stderr
		b.js, b.err = cmd.Output()
		if b.err != nil {
			b.err = fmt.Errorf("esbuild %s: %w: %s", b.entry, b.err, stderr.String())
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.js
}

const compatPage = `<!doctype html><meta charset="utf-8"><title>grpcws compat</title><script src="/compat.js"></script>`

// compatPageHandler serves the test page and its script.
func compatPageHandler(js []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(compatPage))
		case "/compat.js":
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			_, _ = w.Write(js)
		default:
			http.NotFound(w, r)
		}
	})
}

// compatSite is what the sidecar serves on its one listener: the bridge for
// WebSocket upgrades (grpc-websockets included), the gateway for gRPC-Web
// and Connect, the page for the rest. Only EchoService is routed.
type compatSite struct {
	backend *testbackend.Backend
	url     string
}

func newCompatSite(t *testing.T, origins ...string) *compatSite {
	t.Helper()
	return newHTTPSite(t, bundleCompat(t), origins...)
}

// newHTTPSite is newCompatSite with the page's script js.
func newHTTPSite(t *testing.T, js []byte, origins ...string) *compatSite {
	t.Helper()
	b := testbackend.Start(t)
	services := []bridge.Service{{Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"), Conn: b.Conn}}
	discard := slog.New(slog.DiscardHandler)
	h, err := bridge.NewHandler(services, bridge.WithLogger(discard), bridge.WithOriginPatterns(origins...),
		bridge.WithHTTPProtocols(true), bridge.WithFallback(compatPageHandler(js)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &compatSite{backend: b, url: srv.URL}
}

// compatResult mirrors Result in web/compat/scenarios.ts.
type compatResult struct {
	Code      int
	Message   string
	Responses []string
	Header    string
	Trailer   string
}

// openCompat loads the test page at url and waits for its script.
func openCompat(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(url))
	waitFor(t, ctx, "the compat bundle", `typeof globalThis.compat === "object"`)
}

// Every RPC kind each client supports, its errors, metadata, trailers,
// cancellation and deadlines, against the expectations of a gRPC client:
// one table for all eight clients and transports.
func TestCompatClients(t *testing.T) {
	t.Parallel()
	const failMessage = "nicht gefunden: Straße ✗ 見つかりません 100%"
	clients := []struct {
		name      string
		websocket bool // client-streaming and bidi
		// Google's grpc-web hands over the response headers when the
		// response completes: a stream that fails or is cancelled shows
		// none. In binary mode it hands over messages only then too, so an
		// endless stream cannot be cancelled after two messages.
		headersAtEnd, messagesAtEnd bool
	}{
		{name: "improbable-ws", websocket: true},
		{name: "improbable-http"},
		{name: "nice-ws", websocket: true},
		{name: "nice-fetch"},
		{name: "connect"},
		{name: "connect-grpcweb"},
		{name: "grpc-web-text", headersAtEnd: true},
		{name: "grpc-web-binary", headersAtEnd: true, messagesAtEnd: true},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := newCompatSite(t)
			ctx := newTab(t, 40*time.Second)
			openCompat(t, ctx, s.url+"/")
			call := func(scenario string) compatResult {
				return eval[compatResult](t, ctx, fmt.Sprintf(`compat.clients(location.origin)[%q].%s()`, c.name, scenario))
			}
			id := c.name
			scenarios := []struct {
				name string
				want compatResult
				// ignore the header (trailers-only responses: clients differ in
				// whether headers and trailers both get the metadata) or the
				// message (the bridge's own words)
				anyHeader, anyMessage bool
			}{
				{name: "unary", want: compatResult{Code: 0, Responses: []string{"grüß dich ✓"}, Header: id, Trailer: id}},
				{name: "serverStream", want: compatResult{Code: 0, Responses: []string{"1", "2", "3"}, Header: id, Trailer: id}},
				{name: "clientStream", want: compatResult{Code: 0, Responses: []string{"3/6"}, Header: id, Trailer: id}},
				{name: "bidi", want: compatResult{Code: 0, Responses: []string{"one#1", "two 👋#2"}, Header: id, Trailer: id}},
				{name: "fail", want: compatResult{Code: int(codes.NotFound), Message: failMessage, Trailer: id}, anyHeader: true},
				{name: "failStream", want: compatResult{Code: int(codes.FailedPrecondition), Message: "à la fin", Responses: []string{"1", "2"}, Header: id, Trailer: id}},
				{name: "unknown", want: compatResult{Code: int(codes.Unimplemented)}, anyHeader: true, anyMessage: true},
				{name: "deadline", want: compatResult{Code: int(codes.DeadlineExceeded)}, anyHeader: true, anyMessage: true},
				{name: "cancel", want: compatResult{Code: -1, Responses: []string{"1", "2"}, Header: id}, anyMessage: true},
			}
			for _, sc := range scenarios {
				if !c.websocket && (sc.name == "clientStream" || sc.name == "bidi") || c.messagesAtEnd && sc.name == "cancel" {
					continue
				}
				if c.headersAtEnd && (sc.name == "failStream" || sc.name == "cancel") {
					sc.anyHeader = true
				}
				got := call(sc.name)
				if sc.anyHeader {
					got.Header = sc.want.Header
				}
				if sc.anyMessage {
					got.Message = sc.want.Message
				}
				if sc.name == "unknown" || sc.name == "deadline" {
					got.Trailer = sc.want.Trailer
				}
				if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", sc.want) {
					t.Errorf("%s:\n got  %+v\n want %+v", sc.name, got, sc.want)
				}
			}

			// At the backend: the cancel arrived, the deadline arrived, and
			// every call is over.
			bctx := backendContext(t)
			if !c.messagesAtEnd {
				waitCall(t, bctx, s.backend, "cancelled ticker", func(call testbackend.Call) bool {
					return call.Method == "/examples.echo.v1.EchoService/Ticker" && call.Done && status.Code(call.Err) == codes.Canceled
				})
			}
			waitCall(t, bctx, s.backend, "echo past its deadline", func(call testbackend.Call) bool {
				return call.Method == "/examples.echo.v1.EchoService/Echo" && call.Done && call.HasDeadline
			})
			if err := s.backend.WaitIdle(bctx); err != nil {
				t.Error(err)
			}
			for _, call := range s.backend.Calls() {
				if call.Method == "/examples.echo.v1.EchoService/Nope" {
					t.Errorf("the backend saw a call to a method no route has")
				}
				if got := call.MD.Get("x-echo-from"); !slices.Equal(got, []string{id}) {
					t.Errorf("%s at the backend: x-echo-from %q; want %q", call.Method, got, id)
				}
			}
		})
	}
}

// waitCall polls the backend's calls until one satisfies ok.
func waitCall(t *testing.T, ctx context.Context, b *testbackend.Backend, what string, ok func(testbackend.Call) bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if slices.ContainsFunc(b.Calls(), ok) {
			return
		}
		select {
		case <-ctx.Done():
			t.Errorf("no %s at the backend: %v", what, ctx.Err())
			return
		case <-tick.C:
		}
	}
}

// A page on another origin: the bridge and the gateway serve it when the
// origin is allowed (CORS for HTTP, the metadata exposed to the page), and
// refuse it before the backend when it is not: PERMISSION_DENIED in the
// trailers for grpc-websockets, a refused CORS request for HTTP.
func TestCompatCrossOrigin(t *testing.T) {
	t.Parallel()
	js := bundleCompat(t)
	other := httptest.NewServer(compatPageHandler(js)) // another port: another origin
	t.Cleanup(other.Close)
	otherHost := strings.TrimPrefix(other.URL, "http://")
	allowing := newCompatSite(t, otherHost)
	refusing := newCompatSite(t)

	ctx := newTab(t, 40*time.Second)
	openCompat(t, ctx, other.URL+"/")
	call := func(site *compatSite, client string) compatResult {
		return eval[compatResult](t, ctx, fmt.Sprintf(`compat.clients(%q)[%q].unary()`, site.url, client))
	}
	for _, client := range []string{"improbable-ws", "improbable-http", "nice-ws", "nice-fetch", "connect", "connect-grpcweb", "grpc-web-text", "grpc-web-binary"} {
		got := call(allowing, client)
		want := compatResult{Responses: []string{"grüß dich ✓"}, Header: client, Trailer: client}
		if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
			t.Errorf("%s from an allowed origin:\n got  %+v\n want %+v", client, got, want)
		}
		got = call(refusing, client)
		switch {
		case strings.HasSuffix(client, "-ws"):
			if got.Code != int(codes.PermissionDenied) || got.Message != fmt.Sprintf("grpcws: origin %q not allowed", other.URL) {
				t.Errorf("%s from another origin: %+v; want PERMISSION_DENIED, origin not allowed", client, got)
			}
		case got.Code == 0 || len(got.Responses) > 0:
			t.Errorf("%s from another origin: %+v; want a failed call", client, got)
		}
	}
	if n := len(refusing.backend.Calls()); n != 0 {
		t.Errorf("the backend saw %d calls from the refused origin; want none", n)
	}
}
