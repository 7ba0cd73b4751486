package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/client"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
)

// A generated gRPC stub calling a backend through a bridge.
func Example() {
	// A gRPC backend and a bridge in front of it, both on 127.0.0.1.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	backend := grpc.NewServer()
	demobackend.Register(backend)
	go backend.Serve(lis)
	defer backend.Stop()
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
	defer h.Shutdown(context.Background())

	// The client: the stub is the one protoc-gen-go-grpc generates.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.New("ws" + strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	echo := echov1.NewEchoServiceClient(conn)

	res, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hello"})
	fmt.Println(res.GetMessage(), err)

	_, err = echo.Echo(ctx, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 5, Message: "no such thing"}})
	fmt.Println(status.Code(err), status.Convert(err).Message())

	stream, err := echo.Ticker(ctx, &echov1.TickerRequest{Message: "tick", Count: 2})
	if err != nil {
		log.Fatal(err)
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println(res.GetMessage(), res.GetIndex())
	}
	// Output:
	// hello <nil>
	// NotFound no such thing
	// tick 1
	// tick 2
	// EOF
}

// All the RPCs of a Conn on one WebSocket, with a bearer token that is
// replaced while the Conn is in use.
func ExampleWithMultiplexing() {
	url, stop := startExampleBridge()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.New(url, client.WithMultiplexing(), client.WithToken("first-token"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	echo := echov1.NewEchoServiceClient(conn)

	// A stream and a unary call share the WebSocket.
	stream, err := echo.Ticker(ctx, &echov1.TickerRequest{Message: "tick", Count: 2})
	if err != nil {
		log.Fatal(err)
	}
	res, err := echo.Echo(ctx, &echov1.EchoRequest{Message: "hello"})
	fmt.Println(res.GetMessage(), err)

	// Later RPCs carry the new token; the stream keeps its own.
	if err := conn.SetToken("second-token"); err != nil {
		log.Fatal(err)
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Println(res.GetMessage(), res.GetIndex())
	}
	// Output:
	// hello <nil>
	// tick 1
	// tick 2
	// EOF
}

// startExampleBridge runs a gRPC backend and a bridge in front of it, both
// on 127.0.0.1, and returns the bridge's URL.
func startExampleBridge() (url string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	backend := grpc.NewServer()
	demobackend.Register(backend)
	go backend.Serve(lis)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	h, err := bridge.NewHandler([]bridge.Service{{
		Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"),
		Conn: cc,
	}}, bridge.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), func() {
		h.Shutdown(context.Background())
		srv.Close()
		cc.Close()
		backend.Stop()
	}
}
