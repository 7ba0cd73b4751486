package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
	"github.com/grpcws/grpcws/internal/testbackend"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
	}))
}

// start runs the sidecar in-process and returns its address. It stops when
// the test ends, and the test fails if run returned an error.
func start(t *testing.T, args ...string) string {
	t.Helper()
	addr, stop := launch(t, args...)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return addr
}

// launch runs the sidecar in-process and returns its address and a stop
// function that cancels run's context and returns what run returned. It
// stops when the test ends at the latest.
func launch(t *testing.T, args ...string) (addr string, stop func() error) {
	t.Helper()
	addr, _, stop = launchReload(t, nil, args...)
	return addr, stop
}

// launchReload is launch with a reload channel, and also returns the admin
// listener's address.
func launchReload(t *testing.T, reload chan os.Signal, args ...string) (addr, admin string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "error"}, args...), reload, pw, io.Discard)
		pw.CloseWithError(errors.New("run returned"))
		done <- err
	}()
	stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() { _ = stop() })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no listening line: %v", err)
	}
	go io.Copy(io.Discard, pr)
	// grpcws: listening on ADDR (admin ADDR)
	f := strings.Fields(line)
	if len(f) != 6 || f[1] != "listening" || f[4] != "(admin" {
		t.Fatalf("first line %q; want the listening addresses", line)
	}
	return f[3], strings.TrimSuffix(f[5], ")"), stop
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
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: msg})
	r := v1test.ReadAll(t, ctx, c)
	var res echov1.EchoResponse
	for _, b := range r.Binary {
		if err := proto.Unmarshal(b, &res); err != nil {
			t.Fatal(err)
		}
	}
	return res.GetMessage(), r.Close
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
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{})
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func TestDescriptors(t *testing.T) {
	t.Parallel()
	path := testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)
	addr := start(t, "--backend", echoOnly(t), "--descriptors", path, "--expose", "examples.echo.v1.EchoService")
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
		{nil, "nothing to serve: give --config FILE, --backend TARGET --expose SERVICE, or --demo"},
		{[]string{"--demo", "--backend", "x:1"}, `--demo and --backend "x:1": choose one`},
		{[]string{"--backend", "x:1"}, `--backend "x:1": name the services to expose with --expose SERVICE, or --expose '*' for every service it has`},
		{[]string{"--expose", "a.B"}, "--expose and --descriptors go with --backend"},
		{[]string{"--demo", "--max-message-size", "lots"}, `invalid value "lots" for flag -max-message-size`},
		{[]string{"--demo", "--log-format", "xml"}, `log.format: "xml"`},
		{[]string{"--demo", "--log-level", "loud"}, `log.level: "loud"`},
		{[]string{"--demo", "--listen", "8080"}, `listen.address: "8080"`},
		{[]string{"--demo", "extra"}, `unexpected argument "extra"`},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, nil, io.Discard, io.Discard)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v; want a usage error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, good, "backends:\n  - name: orders\n    target: 127.0.0.1:9090\nroutes:\n  - backend: orders\n    all: true\n")
	writeFile(t, bad, "backends:\n  - name: orders\n    target: 127.0.0.1:9090\nroutes:\n  - backend: nope\n    all: true\n")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check", "--config", good}, nil, &out, io.Discard); err != nil {
		t.Fatalf("check good: %v", err)
	}
	if got, want := out.String(), good+": ok\n"; got != want {
		t.Errorf("check good printed %q; want %q", got, want)
	}
	err := run(context.Background(), []string{"check", "--config", bad}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "bad.yaml:5: routes[0].backend: \"nope\"") {
		t.Errorf("check bad = %v; want the field, value and line", err)
	}
	var ue usageError
	if err := run(context.Background(), []string{"check"}, nil, io.Discard, io.Discard); !errors.As(err, &ue) {
		t.Errorf("check without --config = %v; want a usage error", err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReload rewrites the configuration file and sends SIGHUP's stand-in:
// a new route serves new connections, and a stream open across the reload
// goes on.
func TestReload(t *testing.T) {
	t.Parallel()
	backend := echoOnly(t)
	path := filepath.Join(t.TempDir(), "grpcws.yaml")
	descriptors := testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)
	conf := func(alias string) string {
		return fmt.Sprintf(`backends:
  - name: echo
    target: %s
    descriptors:
      files: [%s]
routes:
  - backend: echo
    methods: [examples.echo.v1.EchoService/Bidi, examples.echo.v1.EchoService/Echo]
    aliases:
      examples.echo.v1.EchoService/Echo: %s
`, backend, descriptors, alias)
	}
	writeFile(t, path, conf("echo-v1"))
	reload := make(chan os.Signal)
	addr, _, stop := launchReload(t, reload, "--config", path)
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{Subprotocols: []string{"examples.echo.v1.EchoService.Bidi"}})
	if err != nil {
		t.Fatal(err)
	}
	defer open.CloseNow()
	bidi := func(msg string) {
		t.Helper()
		b, _ := proto.Marshal(&echov1.BidiRequest{Message: msg})
		if err := open.Write(ctx, websocket.MessageBinary, b); err != nil {
			t.Fatal(err)
		}
		for {
			typ, _, err := open.Read(ctx)
			if err != nil {
				t.Fatalf("bidi: %v", err)
			}
			if typ == websocket.MessageBinary {
				return
			}
		}
	}
	bidi("before")

	writeFile(t, path, conf("echo-v2"))
	reload <- syscall.SIGHUP
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, code := echo(t, addr, "echo-v2", "new"); got == "new" && code == websocket.StatusNormalClosure {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new alias does not answer 5s after the reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, code := echo(t, addr, "echo-v1", "old"); code != 4012 {
		t.Errorf("old alias after the reload: close %d; want 4012", code)
	}
	bidi("after") // the stream opened before the reload still works

	// A broken file keeps the running configuration.
	writeFile(t, path, "routes: [")
	reload <- syscall.SIGHUP
	reload <- syscall.SIGHUP // the second send returns after the first reload ran
	if got, code := echo(t, addr, "echo-v2", "still"); got != "still" || code != websocket.StatusNormalClosure {
		t.Errorf("after a failed reload: %q, close %d; want still, 1000", got, code)
	}
}

// frame is one WebSocket message.
type frame struct {
	typ  websocket.MessageType
	data []byte
}

// readFrames reads until the connection closes and returns the frames and
// the close code.
func readFrames(ctx context.Context, c *websocket.Conn) ([]frame, websocket.StatusCode) {
	var frames []frame
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			return frames, websocket.CloseStatus(err)
		}
		frames = append(frames, frame{typ, b})
	}
}

// control decodes a control frame's JSON, or fails the test.
func control(t *testing.T, f frame) map[string]any {
	t.Helper()
	js, ok := bytes.CutPrefix(f.data, []byte("#"))
	if f.typ != websocket.MessageText || !ok {
		t.Fatalf("frame %v %q; want a text control frame", f.typ, f.data)
	}
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatalf("control frame %q: %v", f.data, err)
	}
	return m
}

// endCode returns the status code of an end frame.
func endCode(t *testing.T, f frame) float64 {
	t.Helper()
	end, ok := control(t, f)["end"].(map[string]any)
	if !ok {
		t.Fatalf("frame %q; want an end frame", f.data)
	}
	code, _ := end["status"].(map[string]any)["code"].(float64)
	return code
}

// TestDemoFrames checks a unary call frame by frame, as docs/protocol.md
// shows it.
func TestDemoFrames(t *testing.T) {
	t.Parallel()
	addr := start(t, "--demo")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{Subprotocols: []string{"examples.echo.v1.EchoService.Echo"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if got := c.Subprotocol(); got != "examples.echo.v1.EchoService.Echo" {
		t.Fatalf("subprotocol %q; want the route", got)
	}
	req, _ := proto.Marshal(&echov1.EchoRequest{Message: "hi"})
	if err := c.Write(ctx, websocket.MessageBinary, req); err != nil {
		t.Fatal(err)
	}
	frames, code := readFrames(ctx, c)
	if len(frames) != 3 || code != websocket.StatusNormalClosure {
		t.Fatalf("%d frames, close %d; want headers, message, end, then 1000", len(frames), code)
	}
	if _, ok := control(t, frames[0])["headers"]; !ok {
		t.Errorf("first frame %q; want headers", frames[0].data)
	}
	var res echov1.EchoResponse
	if frames[1].typ != websocket.MessageBinary {
		t.Errorf("second frame is %v; want binary", frames[1].typ)
	} else if err := proto.Unmarshal(frames[1].data, &res); err != nil || res.GetMessage() != "hi" {
		t.Errorf("response %v, %v; want hi", &res, err)
	}
	if code := endCode(t, frames[2]); code != 0 {
		t.Errorf("end status %v; want 0", code)
	}
}

func TestAdmin(t *testing.T) {
	t.Parallel()
	addr, admin, stop := launchReload(t, nil, "--demo")
	defer stop()
	// The demo backend connects in the background: wait for readiness.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + admin + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tt := range []struct {
		name, url string
		want      int
		wantBody  string
	}{
		{"healthz", "http://" + admin + "/healthz", http.StatusOK, "ok\n"},
		{"readyz", "http://" + admin + "/readyz", http.StatusOK, "ok\n"},
		{"metrics", "http://" + admin + "/metrics", http.StatusOK, "grpcws_handshakes_total"},
		{"status page", "http://" + admin + "/", http.StatusOK, "examples.<wbr>echo.<wbr>v1.<wbr>echoservice.<wbr>echo"},
		{"demo page", "http://" + addr + "/", http.StatusOK, "<!doctype html>"},
		{"no pprof by default", "http://" + admin + "/debug/pprof/", http.StatusNotFound, ""},
	} {
		res, err := http.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tt.want || !strings.Contains(strings.ToLower(string(body)), tt.wantBody) {
			t.Errorf("%s: %d %q; want %d %q", tt.name, res.StatusCode, body, tt.want, tt.wantBody)
		}
	}
}

// TestShutdown cancels run's context with a stream open: after the drain's
// grace period the client gets UNAVAILABLE and 1001, and run returns nil.
func TestShutdown(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "grpcws.yaml")
	writeFile(t, path, "drain:\n  grace_period: 200ms\n  timeout: 5s\n")
	addr, stop := launch(t, "--demo", "--config", path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/", &websocket.DialOptions{Subprotocols: []string{"examples.echo.v1.EchoService.Ticker"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	req, _ := proto.Marshal(&echov1.TickerRequest{Message: "t", Interval: durationpb.New(time.Hour)})
	if err := c.Write(ctx, websocket.MessageBinary, req); err != nil {
		t.Fatal(err)
	}
	for want := websocket.MessageText; ; want = websocket.MessageBinary { // headers, then the first tick
		typ, _, err := c.Read(ctx)
		if err != nil || typ != want {
			t.Fatalf("read %v, %v; want %v", typ, err, want)
		}
		if want == websocket.MessageBinary {
			break
		}
	}

	stopped := make(chan error, 1)
	began := time.Now()
	go func() { stopped <- stop() }()
	frames, code := readFrames(ctx, c)
	if len(frames) != 1 || endCode(t, frames[0]) != float64(codes.Unavailable) || code != websocket.StatusGoingAway {
		t.Errorf("%d frames, close %d; want an end frame with UNAVAILABLE, then 1001", len(frames), code)
	}
	if err := <-stopped; err != nil {
		t.Errorf("run = %v; want nil after a shutdown", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("still serving after shutdown")
	}
}
