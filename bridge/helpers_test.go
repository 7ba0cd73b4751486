package bridge_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
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

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
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
