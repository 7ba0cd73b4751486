package bridge_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/connlimit"
	"github.com/grpcws/grpcws/internal/h2test"
)

// The gateway's defences against hostile requests: docs/security.md lists
// them with these tests.

const (
	echoPath   = "/examples.echo.v1.EchoService/Echo"
	tickerPath = "/examples.echo.v1.EchoService/Ticker"
	uploadPath = "/examples.echo.v1.EchoService/Upload"
	bidiPath   = "/examples.echo.v1.EchoService/Bidi"
)

// A rawCall is a request as a hostile client would write it.
type rawCall struct {
	name   string
	client *http.Client
	path   string
	ct     string
	header map[string]string
	body   []byte
}

func (c rawCall) do(t testing.TB, ctx context.Context, base string) (codes.Code, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+c.path, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", c.ct)
	if strings.HasPrefix(c.ct, "application/proto") || strings.HasPrefix(c.ct, "application/json") {
		req.Header.Set("Connect-Protocol-Version", "1")
	}
	if strings.HasPrefix(c.ct, "application/grpc") && !strings.HasPrefix(c.ct, "application/grpc-web") {
		req.Header.Set("Te", "trailers")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	res, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s: reading the response: %v", c.name, err)
	}
	code, msg := rpcStatus(t, res, body)
	return code, msg, res
}

// rpcStatus reads the status of a call from its response, in whichever of
// the gateway's protocols it is.
func rpcStatus(t testing.TB, res *http.Response, body []byte) (codes.Code, string) {
	t.Helper()
	ct := res.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/grpc-web"):
		if s := res.Header.Get("Grpc-Status"); s != "" {
			return grpcCode(t, s), unescape(res.Header.Get("Grpc-Message"))
		}
		for len(body) >= 5 {
			n := int(binary.BigEndian.Uint32(body[1:5]))
			frame := body[5 : 5+n]
			if body[0]&0x80 != 0 {
				h := http.Header{}
				for line := range strings.SplitSeq(string(frame), "\r\n") {
					if k, v, ok := strings.Cut(line, ":"); ok {
						h.Add(k, strings.TrimSpace(v))
					}
				}
				return grpcCode(t, h.Get("Grpc-Status")), unescape(h.Get("Grpc-Message"))
			}
			body = body[5+n:]
		}
	case strings.HasPrefix(ct, "application/grpc"):
		if s := res.Header.Get("Grpc-Status"); s != "" {
			return grpcCode(t, s), unescape(res.Header.Get("Grpc-Message"))
		}
		return grpcCode(t, res.Trailer.Get("Grpc-Status")), unescape(res.Trailer.Get("Grpc-Message"))
	case strings.HasPrefix(ct, "application/connect+"):
		for len(body) >= 5 {
			n := int(binary.BigEndian.Uint32(body[1:5]))
			if body[0]&0x02 != 0 {
				var end struct {
					Error *struct{ Code, Message string } `json:"error"`
				}
				if err := json.Unmarshal(body[5:5+n], &end); err != nil {
					t.Fatalf("end of stream %q: %v", body[5:5+n], err)
				}
				if end.Error == nil {
					return codes.OK, ""
				}
				return connectCode(t, end.Error.Code), end.Error.Message
			}
			body = body[5+n:]
		}
	case res.StatusCode == http.StatusOK:
		return codes.OK, ""
	case strings.HasPrefix(ct, "application/json"):
		var e struct{ Code, Message string }
		if err := json.Unmarshal(body, &e); err != nil {
			t.Fatalf("error %q: %v", body, err)
		}
		return connectCode(t, e.Code), e.Message
	}
	t.Fatalf("no status in a %d response of type %q: %q", res.StatusCode, ct, body)
	return 0, ""
}

func grpcCode(t testing.TB, s string) codes.Code {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("grpc-status %q", s)
	}
	return codes.Code(n)
}

func connectCode(t testing.TB, s string) codes.Code {
	t.Helper()
	var c connect.Code
	if err := c.UnmarshalText([]byte(s)); err != nil {
		t.Fatalf("code %q: %v", s, err)
	}
	return codes.Code(c)
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bomb is the gzip of an EchoRequest's first bytes and then zeros: about
// 1 KiB per MiB that it inflates to.
func bomb(t *testing.T, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	_, _ = w.Write([]byte{0x0a, 0x04, 'b', 'o', 'm', 'b'})
	zeros := make([]byte, 1<<20)
	for range size >> 20 {
		_, _ = w.Write(zeros)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Each malformed request gets the code a client can act on, with a
// message that says what was wrong, in each protocol, and none reaches the
// backend.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	f := newHTTPFixture(t, bridge.WithMaxMessageSize(limit))
	ctx := testContext(t)
	echo := mustMarshal(t, &echov1.EchoRequest{Message: "hi"})
	big := mustMarshal(t, &echov1.EchoRequest{Payload: make([]byte, limit)})
	bigJSON := []byte(`{"message":"` + strings.Repeat("a", limit) + `"}`)
	h2 := h2c()
	for _, tc := range []struct {
		rawCall
		code codes.Code
		msg  string
	}{
		{rawCall{"connect: over the limit", f.client, echoPath, "application/proto", nil, big}, codes.ResourceExhausted, "exceeded"},
		{rawCall{"connect json: over the limit", f.client, echoPath, "application/json", nil, bigJSON}, codes.ResourceExhausted, "exceeded"},
		{rawCall{"connect json: malformed", f.client, echoPath, "application/json", nil, []byte(`{"message":`)}, codes.InvalidArgument, "not a valid examples.echo.v1.EchoRequest in JSON"},
		{rawCall{"connect json: wrong type", f.client, echoPath, "application/json", nil, []byte(`{"message":5}`)}, codes.InvalidArgument, "not a valid examples.echo.v1.EchoRequest in JSON"},
		{rawCall{"connect: not gzip", f.client, echoPath, "application/proto", map[string]string{"Content-Encoding": "gzip"}, []byte("plain")}, codes.InvalidArgument, "not valid gzip"},
		{rawCall{"connect: bomb", f.client, echoPath, "application/proto", map[string]string{"Content-Encoding": "gzip"}, bomb(t, 8<<20)}, codes.ResourceExhausted, "inflates past the limit of 65536 bytes"},
		{rawCall{"grpc-web: two messages", f.client, echoPath, "application/grpc-web+proto", nil, append(lpm(0, echo), lpm(0, echo)...)}, codes.InvalidArgument, "more than one request message"},
		{rawCall{"grpc-web: no message", f.client, echoPath, "application/grpc-web+proto", nil, nil}, codes.InvalidArgument, "no request message"},
		{rawCall{"grpc-web: truncated message", f.client, echoPath, "application/grpc-web+proto", nil, lpm(0, echo)[:7]}, codes.InvalidArgument, "ended inside a message"},
		{rawCall{"grpc-web: truncated prefix", f.client, echoPath, "application/grpc-web+proto", nil, []byte{0, 0, 0}}, codes.InvalidArgument, "ended inside a message"},
		{rawCall{"grpc-web: over the limit", f.client, echoPath, "application/grpc-web+proto", nil, lpm(0, big)}, codes.ResourceExhausted, "larger than 65536 bytes"},
		{rawCall{"grpc-web: compressed, no encoding", f.client, echoPath, "application/grpc-web+proto", nil, lpm(1, echo)}, codes.InvalidArgument, "names no compression"},
		{rawCall{"grpc-web: bomb", f.client, echoPath, "application/grpc-web+proto", map[string]string{"Grpc-Encoding": "gzip"}, lpm(1, bomb(t, 8<<20))}, codes.ResourceExhausted, "inflates past the limit"},
		{rawCall{"grpc-web json: malformed", f.client, echoPath, "application/grpc-web+json", nil, lpm(0, []byte("{"))}, codes.InvalidArgument, "in JSON"},
		{rawCall{"grpc: two messages", h2, echoPath, "application/grpc", nil, append(lpm(0, echo), lpm(0, echo)...)}, codes.InvalidArgument, "more than one request message"},
		{rawCall{"grpc: no message", h2, echoPath, "application/grpc", nil, nil}, codes.InvalidArgument, "no request message"},
		{rawCall{"grpc: truncated message", h2, echoPath, "application/grpc", nil, lpm(0, echo)[:7]}, codes.InvalidArgument, "ended inside a message"},
		{rawCall{"grpc: over the limit", h2, echoPath, "application/grpc", nil, lpm(0, big)}, codes.ResourceExhausted, "larger than 65536 bytes"},
		{rawCall{"grpc: bomb", h2, echoPath, "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, lpm(1, bomb(t, 8<<20))}, codes.ResourceExhausted, "inflates past the limit"},
		{rawCall{"grpc: not gzip", h2, echoPath, "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, lpm(1, []byte("plain"))}, codes.InvalidArgument, "not valid gzip"},
		{rawCall{"grpc: bad binary metadata", h2, echoPath, "application/grpc", map[string]string{"X-Key-Bin": "***"}, lpm(0, echo)}, codes.InvalidArgument, `metadata "x-key-bin": value is not base64`},
		{rawCall{"grpc: bad timeout", h2, echoPath, "application/grpc", map[string]string{"Grpc-Timeout": "soon"}, lpm(0, echo)}, codes.InvalidArgument, `grpc-timeout "soon"`},
		{rawCall{"connect stream: truncated", f.client, tickerPath, "application/connect+proto", nil, lpm(0, echo)[:7]}, codes.InvalidArgument, "ended inside a message"},
		{rawCall{"connect stream: two messages", f.client, tickerPath, "application/connect+proto", nil, append(lpm(0, echo), lpm(0, echo)...)}, codes.InvalidArgument, "more than one request message"},
		{rawCall{"connect stream json: malformed", f.client, tickerPath, "application/connect+json", nil, lpm(0, []byte("{"))}, codes.InvalidArgument, "not a valid examples.echo.v1.TickerRequest in JSON"},
		{rawCall{"connect stream: bomb", f.client, tickerPath, "application/connect+proto", map[string]string{"Connect-Content-Encoding": "gzip"}, lpm(1, bomb(t, 8<<20))}, codes.ResourceExhausted, "inflates past the limit"},
	} {
		code, msg, res := tc.do(t, ctx, f.url)
		if code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %v %q; want %v with %q", tc.name, code, msg, tc.code, tc.msg)
		}
		if strings.HasPrefix(tc.ct, "application/proto") || strings.HasPrefix(tc.ct, "application/json") {
			want := map[codes.Code]int{codes.ResourceExhausted: http.StatusTooManyRequests, codes.InvalidArgument: http.StatusBadRequest}[tc.code]
			if res.StatusCode != want {
				t.Errorf("%s: HTTP %d; want %d", tc.name, res.StatusCode, want)
			}
		}
	}
	if calls := f.backend.Calls(); len(calls) != 0 {
		t.Errorf("the backend saw %d calls, the first to %s; want none", len(calls), calls[0].Method)
	}

	// Well-formed compressed requests, in both codecs, are served.
	for _, tc := range []rawCall{
		{"connect gzip", f.client, echoPath, "application/proto", map[string]string{"Content-Encoding": "gzip"}, gzipped(t, echo)},
		{"connect json gzip", f.client, echoPath, "application/json", map[string]string{"Content-Encoding": "gzip"}, gzipped(t, []byte(`{"message":"hi"}`))},
		{"grpc-web gzip", f.client, echoPath, "application/grpc-web+proto", map[string]string{"Grpc-Encoding": "gzip"}, lpm(1, gzipped(t, echo))},
		{"grpc gzip", h2, echoPath, "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, lpm(1, gzipped(t, echo))},
	} {
		if code, msg, _ := tc.do(t, ctx, f.url); code != codes.OK {
			t.Errorf("%s: %v %q; want OK", tc.name, code, msg)
		}
	}
}

// A client stream that breaks off in a message it cannot finish (cut
// short, not JSON, inflating past the limit) fails, and its backend stream
// is cancelled: the backend never sees a shorter stream end well.
func TestClientStreamBadMessage(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	chunk := mustMarshal(t, &echov1.UploadRequest{Chunk: []byte("one")})
	for _, tc := range []struct {
		name, ct string
		header   map[string]string
		body     []byte
		code     codes.Code
	}{
		{"grpc: truncated", "application/grpc", nil, append(lpm(0, chunk), lpm(0, chunk)[:6]...), codes.InvalidArgument},
		{"grpc json: malformed", "application/grpc+json", nil, append(lpm(0, []byte(`{"chunk":"b25l"}`)), lpm(0, []byte(`{"chunk":`))...), codes.InvalidArgument},
		{"grpc: bomb", "application/grpc", map[string]string{"Grpc-Encoding": "gzip"}, append(lpm(0, chunk), lpm(1, bomb(t, 2<<20))...), codes.ResourceExhausted},
		{"connect stream json: malformed", "application/connect+json", nil, append(lpm(0, []byte(`{"chunk":"b25l"}`)), lpm(0, []byte(`{"chunk":`))...), codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newHTTPFixture(t, bridge.WithMaxMessageSize(1<<20))
			code, msg, _ := rawCall{tc.name, h2c(), uploadPath, tc.ct, tc.header, tc.body}.do(t, ctx, f.url)
			if code != tc.code {
				t.Errorf("%v %q; want %v", code, msg, tc.code)
			}
			c, err := f.backend.WaitCall(ctx, uploadPath)
			if err != nil {
				t.Fatal(err)
			}
			if c.Err == nil || c.CtxErr == nil {
				t.Errorf("the backend's Upload ended with %v (context %v); want it cancelled", c.Err, c.CtxErr)
			}
		})
	}
}

// slowBody is a request body that the test writes bit by bit.
type slowBody struct {
	*io.PipeReader
	w *io.PipeWriter
}

func newSlowBody() slowBody {
	r, w := io.Pipe()
	return slowBody{r, w}
}

// Every request body is bounded in time: one read may wait the read
// timeout while a message is incomplete, a client stream may pause as long
// as it likes between whole messages, and the backend stream of a stalled
// request is cancelled.
func TestRequestBodyTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	bidi := func(s string) []byte { return lpm(0, []byte(`{"message":"`+s+`"}`)) }

	t.Run("a connect body that stops", func(t *testing.T) {
		t.Parallel()
		f := newHTTPFixture(t, bridge.WithReadTimeout(timeout))
		nc, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		start := time.Now()
		fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\nConnect-Protocol-Version: 1\r\nContent-Length: 100000\r\n\r\nabcd", echoPath)
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		d := time.Since(start)
		code, msg := rpcStatus(t, res, body)
		if code != codes.DeadlineExceeded || !strings.Contains(msg, "sent no bytes of its request for 300ms") {
			t.Errorf("%v %q; want DEADLINE_EXCEEDED, no bytes for 300ms", code, msg)
		}
		if d < timeout || d > timeout+2*time.Second {
			t.Errorf("answered after %v; want about %v", d, timeout)
		}
		if !res.Close {
			t.Errorf("the connection stays open with the body unread; want Connection: close")
		}
		if n := len(f.backend.Calls()); n != 0 {
			t.Errorf("the backend saw %d calls; want none", n)
		}
	})

	for _, tc := range []struct {
		name  string
		write func(w io.Writer, pause func(time.Duration)) // writes and pauses, then the body ends
		code  codes.Code
		sent  int // messages the backend answers before the end
	}{
		{"pauses between messages", func(w io.Writer, pause func(time.Duration)) {
			for _, m := range []string{"a", "b", "c"} {
				_, _ = w.Write(bidi(m))
				pause(3 * timeout)
			}
		}, codes.OK, 3},
		{"stops inside a message", func(w io.Writer, pause func(time.Duration)) {
			_, _ = w.Write(bidi("a"))
			pause(timeout / 3)
			_, _ = w.Write(bidi("b")[:3])
			pause(10 * timeout)
		}, codes.DeadlineExceeded, 1},
		{"dribbles a message", func(w io.Writer, pause func(time.Duration)) {
			for _, c := range bidi("a byte at a time") {
				_, _ = w.Write([]byte{c})
				pause(timeout / 3)
			}
		}, codes.OK, 1},
	} {
		t.Run("grpc bidi "+tc.name, func(t *testing.T) {
			t.Parallel()
			f := newHTTPFixture(t, bridge.WithReadTimeout(timeout))
			ctx := testContext(t)
			body := newSlowBody()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url+bidiPath, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/grpc+json")
			req.Header.Set("Te", "trailers")
			done := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tc.write(body.w, func(d time.Duration) {
					select {
					case <-time.After(d):
					case <-done:
					}
				})
				body.w.Close()
			})
			defer wg.Wait()
			defer close(done)
			res, err := h2c().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, err := io.ReadAll(res.Body)
			if err != nil {
				t.Fatal(err)
			}
			code, msg := rpcStatus(t, res, b)
			if code != tc.code {
				t.Errorf("%v %q; want %v", code, msg, tc.code)
			}
			if got := bytes.Count(b, []byte(`"index"`)); got != tc.sent {
				t.Errorf("%d answers; want %d", got, tc.sent)
			}
			c, err := f.backend.WaitCall(ctx, bidiPath)
			if err != nil {
				t.Fatal(err)
			}
			if (c.Err == nil) != (tc.code == codes.OK) {
				t.Errorf("the backend's stream ended with %v; want it to end %v", c.Err, tc.code)
			}
		})
	}
}

// A server stream whose client reads nothing is dropped after the write
// timeout, and its backend stream cancelled, over HTTP/1.1 and HTTP/2.
func TestUnreadServerStream(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	req := mustMarshal(t, &echov1.TickerRequest{Message: strings.Repeat("x", 32<<10), Interval: durationpb.New(0)})
	for _, tc := range []struct {
		name  string
		http2 bool
	}{{"http/1.1", false}, {"http/2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newHTTPFixture(t, bridge.WithWriteTimeout(timeout))
			ctx := testContext(t)
			nc, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if tc.http2 {
				// A client that sends its request and then reads nothing,
				// not even the server's SETTINGS, so that its window never
				// opens.
				c := h2test.New(nc)
				if err := c.Request(1, tickerPath, map[string]string{"content-type": "application/connect+proto"}, lpm(0, req)); err != nil {
					t.Fatal(err)
				}
			} else {
				fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/connect+proto\r\nContent-Length: %d\r\n\r\n%s", tickerPath, 5+len(req), lpm(0, req))
			}
			c, err := f.backend.WaitCall(ctx, tickerPath)
			if err != nil {
				t.Fatal(err)
			}
			if c.CtxErr == nil {
				t.Errorf("the backend's Ticker ended with %v, its context not done; want it cancelled", c.Err)
			}
		})
	}
}

// A call over a limit is refused at once, even while its body is still to
// come, and its connection closed.
func TestRefusalDoesNotWaitForTheBody(t *testing.T) {
	t.Parallel()
	limiter := connlimit.New(0, 1)
	f := newHTTPFixture(t, bridge.WithLimiter(limiter), bridge.WithReadTimeout(10*time.Second))
	ctx := testContext(t)
	f.openTicker(t, ctx)
	nc, err := net.Dial("tcp", strings.TrimPrefix(f.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	start := time.Now()
	fmt.Fprintf(nc, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nContent-Length: 100000\r\n\r\nabcd", echoPath)
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if code, msg := rpcStatus(t, res, body); code != codes.ResourceExhausted {
		t.Errorf("%v %q; want RESOURCE_EXHAUSTED", code, msg)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("refused after %v; want at once", d)
	}
	if !res.Close {
		t.Errorf("the connection stays open with the body unread; want Connection: close")
	}
}
