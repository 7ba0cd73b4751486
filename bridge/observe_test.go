package bridge_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/v1test"
)

// protocolObserver records the route and protocol of each accepted RPC.
type protocolObserver struct {
	mu       sync.Mutex
	accepted []bridge.Route
	ended    int
}

func (o *protocolObserver) Refused(bridge.Refusal) {}

func (o *protocolObserver) Accepted(r bridge.Route) bridge.StreamObserver {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.accepted = append(o.accepted, r)
	return o
}

func (o *protocolObserver) ClientMessage(int) {}
func (o *protocolObserver) ServerMessage(int) {}

func (o *protocolObserver) Ended(codes.Code, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended++
}

// TestObserverProtocol makes one Echo call in each protocol: the observer
// learns each call's protocol on the route it is given, and Routes keeps
// no protocol.
func TestObserverProtocol(t *testing.T) {
	t.Parallel()
	o := &protocolObserver{}
	b := testbackend.Start(t)
	f := newHTTPFixtureFor(t, b, []bridge.Service{{Desc: echoDesc, Conn: b.Conn}}, bridge.WithObserver(o))
	ctx := testContext(t)
	wsURL := "ws" + strings.TrimPrefix(f.url, "http") + "/"

	calls := []struct {
		want bridge.Protocol
		call func(t *testing.T)
	}{
		{bridge.ProtocolV1, func(t *testing.T) {
			c, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{echoRoute}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "v1"})
			if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
				t.Fatalf("close %d; want 1000", r.Close)
			}
		}},
		{bridge.ProtocolGRPCWebsockets, func(t *testing.T) {
			c, _, err := websocket.Dial(ctx, wsURL+"examples.echo.v1.EchoService/Echo", &websocket.DialOptions{Subprotocols: []string{bridge.GRPCWebsockets}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if err := c.Write(ctx, websocket.MessageBinary, []byte("content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n")); err != nil {
				t.Fatal(err)
			}
			gwsSend(t, ctx, c, &echov1.EchoRequest{Message: "gws"})
			gwsFinish(t, ctx, c)
			if code, msg := gwsReadAll(t, ctx, c).status(); code != codes.OK {
				t.Fatalf("status %v %q; want OK", code, msg)
			}
		}},
		{bridge.ProtocolConnect, connectEcho(ctx, f.client, f.url)},
		{bridge.ProtocolGRPCWeb, connectEcho(ctx, f.client, f.url, connect.WithGRPCWeb())},
		{bridge.ProtocolGRPC, connectEcho(ctx, h2c(), f.url, connect.WithGRPC())},
	}
	for i, c := range calls {
		c.call(t)
		o.mu.Lock()
		n := len(o.accepted)
		var got bridge.Route
		if n > 0 {
			got = o.accepted[n-1]
		}
		o.mu.Unlock()
		if n != i+1 || got.Protocol != c.want || got.Method != "/examples.echo.v1.EchoService/Echo" {
			t.Errorf("call %d: %d RPCs accepted, the last %s by %q; want %d, Echo by %q", i, n, got.Method, got.Protocol, i+1, c.want)
		}
	}
	for _, r := range f.handler.Routes() {
		if r.Protocol != "" {
			t.Errorf("Routes: %s has the protocol %q; want none", r.Method, r.Protocol)
		}
	}
}

// connectEcho returns a test step that makes one Echo call with
// connect-go's client.
func connectEcho(ctx context.Context, client *http.Client, url string, opts ...connect.ClientOption) func(t *testing.T) {
	return func(t *testing.T) {
		echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](client, url+"/examples.echo.v1.EchoService/Echo", opts...)
		res, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "http"}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.GetMessage() != "http" {
			t.Fatalf("echo %q; want http", res.Msg.GetMessage())
		}
	}
}
