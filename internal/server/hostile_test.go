package server

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1test"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/h2test"
	"github.com/grpcws/grpcws/internal/wstest"
)

// The sidecar's defences against hostile connections that the bridge
// library leaves to the server: the handshake timeout and the connection
// limit per client address. docs/security.md lists them.

// TestHandshakeTimeout opens connections that never finish the upgrade:
// silent ones, and ones that dribble the request a byte at a time (a
// slowloris). Each is cut at limits.handshake_timeout, and well-behaved
// clients are served meanwhile.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.HandshakeTimeout = 500 * time.Millisecond
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	addr := r.Addr().String()
	request := wstest.Request{Host: addr, Subprotocols: []string{echoRoute}}.Bytes()

	tests := []struct {
		name string
		send func(nc net.Conn) // writes to the connection until it fails
	}{
		{"silent", func(net.Conn) {}},
		{"one byte every 100ms", func(nc net.Conn) {
			for _, c := range request {
				if _, err := nc.Write([]byte{c}); err != nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}},
		{"endless headers", func(nc net.Conn) {
			if _, err := io.WriteString(nc, "GET / HTTP/1.1\r\nHost: "+addr+"\r\n"); err != nil {
				return
			}
			for i := 0; ; i++ {
				if _, err := fmt.Fprintf(nc, "X-Pad-%d: 1\r\n", i); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}},
		{"all but the last CRLF", func(nc net.Conn) {
			_, _ = nc.Write(request[:len(request)-2])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now() // before the server's clock starts, at its accept
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			_ = nc.SetDeadline(start.Add(10 * time.Second))
			go tt.send(nc)
			got, err := io.ReadAll(nc) // until the server closes
			d := time.Since(start)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("still open after %v", d)
			}
			// net/http closes in silence, or with 400 when the timeout
			// cut a line in half.
			if len(got) != 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400 ") {
				t.Errorf("the server answered %q; want nothing or 400", got)
			}
			if d < cfg.Limits.HandshakeTimeout || d > cfg.Limits.HandshakeTimeout+2*time.Second {
				t.Errorf("cut after %v; want about %v", d, cfg.Limits.HandshakeTimeout)
			}
		})
	}
	t.Run("good clients meanwhile", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		for range 5 {
			if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
				t.Fatalf("echo: close %d; want 1000", code)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	// Once upgraded, the handshake timeout no longer applies: a stream
	// outlives it.
	t.Run("upgraded streams outlive it", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "a"})
		v1test.Next(t, ctx, c)
		time.Sleep(2 * cfg.Limits.HandshakeTimeout)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "b"})
		v1test.Next(t, ctx, c)
	})
}

// TestPerIPFlood floods the bridge from one address while it holds that
// address's whole allowance: every extra connection is refused with 1013,
// the open ones keep working, and another address is served throughout.
func TestPerIPFlood(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.MaxConnections = 1000
	cfg.Limits.MaxConnectionsPerIP = 3
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	flooder := dialer{src: "127.0.0.2"}
	var held []*websocket.Conn
	for i := range cfg.Limits.MaxConnectionsPerIP {
		c := flooder.mustDial(t, ctx, r.url, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: fmt.Sprint(i)})
		v1test.Next(t, ctx, c)
		held = append(held, c)
	}

	const flood = 50
	var wg sync.WaitGroup
	codes := make(chan string, flood)
	for range flood {
		wg.Go(func() {
			c, err := flooder.dial(t, ctx, r.url, echoRoute)
			if err != nil {
				codes <- err.Error()
				return
			}
			_, _, err = c.Read(ctx)
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				codes <- fmt.Sprintf("read %v", err)
				return
			}
			codes <- fmt.Sprintf("%d %s", ce.Code, ce.Reason)
		})
	}
	// Another address is served during the flood.
	other := dialer{src: "127.0.0.3"}
	for range 5 {
		if code := callEcho(t, ctx, other, r.url); code != websocket.StatusNormalClosure {
			t.Errorf("from another address during the flood: close %d; want 1000", code)
		}
	}
	wg.Wait()
	close(codes)
	want := "1013 grpcws: too many connections from your address: try again later"
	for got := range codes {
		if got != want {
			t.Errorf("flood connection: %s; want %s", got, want)
		}
	}
	// The held connections were not disturbed.
	for i, c := range held {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: fmt.Sprint("again ", i)})
		v1test.Next(t, ctx, c)
	}
	// The calls from the other address give their places back once the
	// server side of each has finished, which may be after the client saw
	// the close.
	waitFor(t, "the other address's places", func() bool { return r.limiter.Open() == len(held) })
	_, body := r.get(t, "/metrics")
	if want := fmt.Sprintf(`grpcws_handshakes_total{outcome="over_limit"} %d`, flood); !strings.Contains(body, want) {
		t.Errorf("metrics lack %q", want)
	}
	// A closed connection gives its place back.
	held[0].Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the freed place", func() bool { return r.limiter.Open() == len(held)-1 })
	if code := callEcho(t, ctx, flooder, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("from the flooder after a close: close %d; want 1000", code)
	}
}

// TestLimitsCountHTTP: gRPC-Web, Connect and gRPC calls hold places in the
// same connection limits as WebSockets, so that a flood from one address is
// stopped whatever protocol it uses.
func TestLimitsCountHTTP(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.MaxConnectionsPerIP = 1
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)
	base := "http://" + r.Addr().String()
	client := func(src string) *http.Client {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		tr := &http.Transport{DialContext: nd.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	echo := func(src string) error {
		c := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](client(src), base+"/examples.echo.v1.EchoService/Echo", connect.WithGRPCWeb())
		_, err := c.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "hi"}))
		return err
	}

	ws := dialer{src: "127.0.0.2"}.mustDial(t, ctx, r.url, bidiRoute)
	v1test.Send(t, ctx, ws, &echov1.BidiRequest{Message: "held"})
	v1test.Next(t, ctx, ws)
	const want = "grpcws: too many connections from your address: try again later"
	if err := echo("127.0.0.2"); connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), want) {
		t.Errorf("gRPC-Web call beside a WebSocket from one address: %v; want RESOURCE_EXHAUSTED %q", err, want)
	}
	if err := echo("127.0.0.3"); err != nil {
		t.Errorf("gRPC-Web call from another address: %v", err)
	}
	// An HTTP call in progress holds its place against a WebSocket.
	openTicker(t, ctx, client("127.0.0.4"), base, 10*time.Millisecond)
	c, err := dialer{src: "127.0.0.4"}.dial(t, ctx, r.url, echoRoute)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
		t.Errorf("WebSocket beside an HTTP stream from one address: %v; want 1013", err)
	}
	_, body := r.get(t, "/metrics")
	if want := `grpcws_handshakes_total{outcome="over_limit"} 2`; !strings.Contains(body, want) {
		t.Errorf("metrics lack %q", want)
	}
}

// TestHandshakeHeaderLimit sends an upgrade whose headers exceed what the
// server reads (net/http's 1 MB): refused with 431 before the bridge.
func TestHandshakeHeaderLimit(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	addr := r.Addr().String()
	junk := make([]string, 150_000)
	for i := range junk {
		junk[i] = fmt.Sprintf("junk.%d", i)
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	c := wstest.NewConn(nc)
	go func() { _ = c.Write(wstest.Request{Host: addr, Subprotocols: junk}.Bytes()) }()
	res, err := c.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %s; want 431", res.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code := callEcho(t, ctx, dialer{}, r.url); code != websocket.StatusNormalClosure {
		t.Errorf("echo after: close %d; want 1000", code)
	}
}

// readUntilClosed reads a connection until the server closes it, and
// returns how long that took from start; it fails the test after 10 s.
func readUntilClosed(t *testing.T, nc net.Conn, start time.Time) time.Duration {
	t.Helper()
	_ = nc.SetReadDeadline(start.Add(10 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	d := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open after %v", d)
	}
	return d
}

func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := nd.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// TestHTTP2Handshake opens HTTP/2 connections that never finish a request:
// the preface and SETTINGS only, or a header block that never ends. Each
// is cut at limits.handshake_timeout, and while they are open they count
// against the limit per address: one too many is closed at once. A header
// block that stalls after a first request is cut by the pings.
func TestHTTP2Handshake(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.HandshakeTimeout = 500 * time.Millisecond
	cfg.Limits.MaxConnectionsPerIP = 3
	cfg.Limits.PingInterval = time.Second
	cfg.Limits.PingTimeout = time.Second
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	addr := r.Addr().String()
	grpcHeaders := map[string]string{"content-type": "application/grpc", "te": "trailers"}

	for _, tc := range []struct {
		name string
		send func(c *h2test.Conn) error
	}{
		{"preface and settings", func(c *h2test.Conn) error { return c.Preface() }},
		{"headers without their end", func(c *h2test.Conn) error {
			return c.Headers(1, "/examples.echo.v1.EchoService/Echo", grpcHeaders, false, false)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			nc := dialFrom(t, "127.0.0.1", addr)
			if err := tc.send(h2test.New(nc)); err != nil {
				t.Fatal(err)
			}
			d := readUntilClosed(t, nc, start)
			if lim := cfg.Limits.HandshakeTimeout; d < lim || d > lim+2*time.Second {
				t.Errorf("cut after %v; want about %v", d, lim)
			}
		})
	}

	t.Run("counted per address", func(t *testing.T) {
		t.Parallel()
		for range cfg.Limits.MaxConnectionsPerIP {
			if err := h2test.New(dialFrom(t, "127.0.0.5", addr)).Preface(); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(100 * time.Millisecond) // for the server to read the prefaces
		start := time.Now()
		nc := dialFrom(t, "127.0.0.5", addr)
		if err := h2test.New(nc).Preface(); err != nil {
			t.Fatal(err)
		}
		if d := readUntilClosed(t, nc, start); d > cfg.Limits.HandshakeTimeout/2 {
			t.Errorf("one over the limit cut after %v; want at once", d)
		}
		// Another address is served meanwhile.
		ctx := testContext(t)
		if code := callEcho(t, ctx, dialer{src: "127.0.0.6"}, r.url); code != websocket.StatusNormalClosure {
			t.Errorf("from another address: close %d; want 1000", code)
		}
	})

	t.Run("headers stalled after a request", func(t *testing.T) {
		t.Parallel()
		nc := dialFrom(t, "127.0.0.1", addr)
		c := h2test.New(nc)
		req, err := proto.Marshal(&echov1.EchoRequest{Message: "first"})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Request(1, "/examples.echo.v1.EchoService/Echo", grpcHeaders, append([]byte{0, 0, 0, 0, byte(len(req))}, req...)); err != nil {
			t.Fatal(err)
		}
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		for ended := false; !ended; {
			f, err := c.ReadFrame()
			if err != nil {
				t.Fatalf("the first request: %v", err)
			}
			ended = f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagHeadersEndStream) && f.Header().Type == http2.FrameHeaders
		}
		start := time.Now()
		if err := c.Headers(3, "/examples.echo.v1.EchoService/Echo", grpcHeaders, false, false); err != nil {
			t.Fatal(err)
		}
		d := readUntilClosed(t, nc, start)
		if lim := cfg.Limits.PingInterval + cfg.Limits.PingTimeout; d > lim+2*time.Second {
			t.Errorf("cut after %v; want within the ping interval and timeout, %v", d, lim)
		}
	})
}

// TestPlainRequestBodies sends requests that are neither calls nor
// upgrades, with bodies that never end: each is answered at once, counted
// against the limit per address while it lasts, and its connection closed.
func TestPlainRequestBodies(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Limits.ReadTimeout = 500 * time.Millisecond
	r := serve(t, Options{Config: cfg, Fallback: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "the page")
	})})
	r.waitReady(t)
	for _, method := range []string{"POST", "PUT"} {
		start := time.Now()
		nc := dialFrom(t, "127.0.0.1", r.Addr().String())
		fmt.Fprintf(nc, "%s / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabcd", method)
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(body) != "the page" || !res.Close {
			t.Errorf("%s: %d %q close=%v; want 200, the page, Connection: close", method, res.StatusCode, body, res.Close)
		}
		if d := time.Since(start); d > cfg.Limits.ReadTimeout {
			t.Errorf("%s: answered after %v; want at once", method, d)
		}
		readUntilClosed(t, nc, start)
	}
}
