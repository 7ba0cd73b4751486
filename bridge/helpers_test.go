package bridge_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
)

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

func compiledServices() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"),
		chatv1.File_examples_chat_v1_chat_proto.Services().ByName("ChatService"),
	}
}

// fixture is a backend and a bridge in front of it, both on 127.0.0.1.
type fixture struct {
	backend *testbackend.Backend
	handler *bridge.Handler
	server  *httptest.Server
	url     string
}

func newFixture(t *testing.T, opts ...bridge.Option) *fixture {
	t.Helper()
	return newFixtureServices(t, func(conn grpc.ClientConnInterface) []bridge.Service {
		var services []bridge.Service
		for _, d := range compiledServices() {
			services = append(services, bridge.Service{Desc: d, Conn: conn})
		}
		return services
	}, opts...)
}

// newFixtureServices is newFixture with the services that services returns
// for the backend's connection.
func newFixtureServices(t *testing.T, services func(grpc.ClientConnInterface) []bridge.Service, opts ...bridge.Option) *fixture {
	t.Helper()
	b := testbackend.Start(t)
	opts = append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	h, err := bridge.NewHandler(services(b.Conn), opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &fixture{backend: b, handler: h, server: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/"}
}

// dial opens a WebSocket to the bridge with the given subprotocols.
func (f *fixture) dial(t *testing.T, ctx context.Context, path string, header http.Header, subprotocols ...string) *websocket.Conn {
	t.Helper()
	c, res, err := websocket.Dial(ctx, f.url+path, &websocket.DialOptions{Subprotocols: subprotocols, HTTPHeader: header})
	if err != nil {
		t.Fatalf("dial %v: %v", subprotocols, err)
	}
	if res.Body != nil {
		res.Body.Close()
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(64 << 20)
	return c
}

// result is everything the bridge sent on one connection.
type result struct {
	headers *grpcwsv1.Metadata
	frames  int // data frames
	binary  [][]byte
	text    []string
	end     *grpcwsv1.End
	close   websocket.StatusCode
	reason  string
	order   []string // "headers", "message", "end"
	readErr error
}

// readAll reads until the bridge closes the connection.
func readAll(t *testing.T, ctx context.Context, c *websocket.Conn) result {
	t.Helper()
	var r result
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			r.close = websocket.CloseStatus(err)
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				r.reason = ce.Reason
			} else {
				r.readErr = err
			}
			return r
		}
		if typ == websocket.MessageText && len(b) > 0 && b[0] == '#' {
			var sc grpcwsv1.ServerControl
			if err := protojson.Unmarshal(b[1:], &sc); err != nil {
				t.Fatalf("bad control frame %q: %v", b, err)
			}
			switch {
			case sc.GetHeaders() != nil:
				r.headers = sc.GetHeaders()
				r.order = append(r.order, "headers")
			case sc.GetEnd() != nil:
				r.end = sc.GetEnd()
				r.order = append(r.order, "end")
			default:
				t.Fatalf("control frame with nothing set: %q", b)
			}
			continue
		}
		if r.end != nil {
			t.Fatalf("data frame after the end frame")
		}
		r.frames++
		r.order = append(r.order, "message")
		if typ == websocket.MessageBinary {
			r.binary = append(r.binary, b)
		} else {
			r.text = append(r.text, string(b))
		}
	}
}

func (r result) code() int32 {
	if r.end == nil {
		return -1
	}
	return r.end.GetStatus().GetCode()
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func send(t *testing.T, ctx context.Context, c *websocket.Conn, m proto.Message) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageBinary, mustMarshal(t, m)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func sendText(t *testing.T, ctx context.Context, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func values(md *grpcwsv1.Metadata, key string) []string {
	return md.GetEntries()[key].GetValues()
}

// readBody drains and closes an HTTP response body.
func readBody(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
