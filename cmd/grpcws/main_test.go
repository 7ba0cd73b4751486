package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demo"
	"github.com/grpcws/grpcws/internal/testbackend"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs the sidecar in-process and returns its address. It stops when
// the test ends, and the test fails if run returned an error.
func start(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"--listen", "127.0.0.1:0", "--log-level", "error"}, args...), pw, io.Discard)
		pw.CloseWithError(errors.New("run returned"))
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "grpcws: listening on ")
	if !ok {
		t.Fatalf("first line %q; want the listening address", line)
	}
	return addr
}

// echo calls Echo through the sidecar at addr with subprotocol and returns
// the response message and the close code.
func echo(t *testing.T, addr, subprotocol, msg string) (string, websocket.StatusCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{Subprotocols: []string{subprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	b, err := proto.Marshal(&echov1.EchoRequest{Message: msg})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatal(err)
	}
	var got string
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return got, websocket.CloseStatus(err)
		}
		if typ == websocket.MessageBinary {
			var res echov1.EchoResponse
			if err := proto.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			got = res.GetMessage()
		}
	}
}

func TestDemo(t *testing.T) {
	t.Parallel()
	addr := start(t, "--demo")
	if got, code := echo(t, addr, "examples.echo.v1.EchoService.Echo", "hi"); got != "hi" || code != websocket.StatusNormalClosure {
		t.Errorf("echo: %q, close %d; want hi, 1000", got, code)
	}

	// The alias, found by server reflection.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{Subprotocols: []string{"chat.v1+json"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if c.Subprotocol() != "chat.v1+json" {
		t.Fatalf("subprotocol %q; want chat.v1+json", c.Subprotocol())
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"join":{"room":"lobby","nickname":"ann"}}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "ann joined") {
			break
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// echoOnly starts a backend with the echo service and no reflection, and
// returns its address.
func echoOnly(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	echov1.RegisterEchoServiceServer(s, &demo.EchoServer{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestBackendConnections(t *testing.T) {
	t.Parallel()
	addr := start(t, "--demo", "--backend-connections", "3")
	for i := range 4 { // more RPCs than connections: the rotation wraps around
		msg := fmt.Sprint("call ", i)
		if got, code := echo(t, addr, "examples.echo.v1.EchoService.Echo", msg); got != msg || code != websocket.StatusNormalClosure {
			t.Errorf("echo: %q, close %d; want %q, 1000", got, code, msg)
		}
	}
}

func TestDescriptors(t *testing.T) {
	t.Parallel()
	path := testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)
	addr := start(t, "--backend", echoOnly(t), "--descriptors", path)
	if got, code := echo(t, addr, "examples.echo.v1.EchoService.Echo", "from a set"); got != "from a set" || code != websocket.StatusNormalClosure {
		t.Errorf("echo: %q, close %d; want 'from a set', 1000", got, code)
	}
}

func TestFlagErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{nil, "--backend is required"},
		{[]string{"--demo", "--backend", "x:1"}, `--demo and --backend "x:1"`},
		{[]string{"--backend", "nohost"}, `--backend "nohost"`},
		{[]string{"--demo", "--max-message-size", "0"}, "--max-message-size 0"},
		{[]string{"--demo", "--log-format", "xml"}, `--log-format "xml"`},
		{[]string{"--demo", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--demo", "--listen", "8080"}, `--listen "8080"`},
		{[]string{"--demo", "extra"}, `unexpected argument "extra"`},
		{[]string{"--demo", "--backend-connections", "0"}, "--backend-connections 0"},
		{[]string{"--demo", "--pprof-listen", "6060"}, `--pprof-listen "6060"`},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v; want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestBackendWithoutReflection(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"--listen", "127.0.0.1:0", "--backend", echoOnly(t)}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--descriptors") {
		t.Errorf("run = %v; want an error that suggests --descriptors", err)
	}
}
