package bridge_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
)

// A bridge in front of a gRPC backend, called in the JSON encoding the way a
// person at a terminal would.
func Example() {
	// The backend: any gRPC server.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	backend := grpc.NewServer()
	demobackend.Register(backend)
	go backend.Serve(lis)
	defer backend.Stop()

	// The bridge: one connection to the backend, the service's descriptor
	// from the compiled-in Go types.
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	h, err := bridge.NewHandler([]bridge.Service{{
		Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"),
		Conn: cc,
	}}, bridge.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer h.Close()

	// The client: a WebSocket whose subprotocol names the method.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		Subprotocols: []string{"examples.echo.v1.EchoService.Echo+json"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"message":"hello"}`)); err != nil {
		log.Fatal(err)
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			fmt.Println("close:", websocket.CloseStatus(err))
			return
		}
		if b[0] == '#' {
			fmt.Println("control:", strings.Fields(strings.ReplaceAll(string(b), ":", " "))[0])
			continue
		}
		fmt.Println("message:", strings.ReplaceAll(string(b), " ", ""))
	}
	// Output:
	// control: #{"headers"
	// message: {"message":"hello"}
	// control: #{"end"
	// close: StatusNormalClosure
}
