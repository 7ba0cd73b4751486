package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/v1test"
)

// echoSetWithout returns a descriptor set of echo.proto and its imports in
// which EchoService lacks the named methods, as a build of an older or a
// newer version of the API would be.
func echoSetWithout(t *testing.T, methods ...string) []byte {
	t.Helper()
	echo := protodesc.ToFileDescriptorProto(echov1.File_examples_echo_v1_echo_proto)
	svc := echo.GetService()[0]
	svc.Method = slices.DeleteFunc(svc.Method, func(m *descriptorpb.MethodDescriptorProto) bool {
		return slices.Contains(methods, m.GetName())
	})
	set := &descriptorpb.FileDescriptorSet{}
	imports := echov1.File_examples_echo_v1_echo_proto.Imports()
	for i := range imports.Len() {
		set.File = append(set.File, protodesc.ToFileDescriptorProto(imports.Get(i).FileDescriptor))
	}
	set.File = append(set.File, echo)
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// configMapDir lays out a directory as the kubelet mounts a ConfigMap:
// name is a link into ..data, and ..data a link to a directory of the
// current version. Each update writes a new version directory and swaps
// ..data to it in one rename.
type configMapDir struct {
	t        *testing.T
	dir      string
	versions int
}

func newConfigMapDir(t *testing.T, name string, content []byte) (*configMapDir, string) {
	d := &configMapDir{t: t, dir: t.TempDir()}
	d.update(name, content)
	path := filepath.Join(d.dir, name)
	if err := os.Symlink(filepath.Join("..data", name), path); err != nil {
		t.Fatal(err)
	}
	return d, path
}

func (d *configMapDir) update(name string, content []byte) {
	t := d.t
	t.Helper()
	d.versions++
	version := "..2026_03_02_10_00_0" + string(rune('0'+d.versions))
	if err := os.Mkdir(filepath.Join(d.dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.dir, version, name), content, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(d.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// logBuffer collects a logger's lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// callRoute makes one call of an echo method, with the right messages for
// its kind, and returns the close code: 1000 when the route is served,
// 4012 when not.
func callRoute(t *testing.T, ctx context.Context, url, route string) websocket.StatusCode {
	t.Helper()
	c, err := dialer{}.dial(t, ctx, url, route)
	if err != nil {
		t.Fatalf("dial %s: %v", route, err)
	}
	defer c.CloseNow()
	var msg proto.Message
	switch route {
	case tickerRoute:
		msg = &echov1.TickerRequest{Count: 1}
	case uploadRoute:
		msg = &echov1.UploadRequest{Chunk: []byte("x")}
	case echoRoute:
		msg = &echov1.EchoRequest{Message: "x"}
	}
	// A refused connection may be closed before the writes: their errors
	// do not matter, the close code tells.
	b, _ := proto.Marshal(msg)
	_ = c.Write(ctx, websocket.MessageBinary, b)
	if route == uploadRoute {
		_ = c.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`))
	}
	code, _ := v1test.CloseCode(ctx, c)
	return code
}

// TestDescriptorFileSwap replaces the descriptor set under a running
// sidecar as Kubernetes updates a ConfigMap, by swapping a symbolic link:
// a method the new set adds becomes reachable and one it drops is refused
// with 4012, with no SIGHUP; a stream opened before the swap keeps going; a
// corrupt replacement changes nothing, is logged and counted, and the next
// good one is taken.
func TestDescriptorFileSwap(t *testing.T) {
	t.Parallel()
	tb := testbackend.Start(t)
	dir, path := newConfigMapDir(t, "api.binpb", echoSetWithout(t, "Upload"))
	cfg := testConfig(tb.Addr)
	cfg.Backends[0].Descriptors.Files = []string{path}
	cfg.Routes = []config.Route{{Backend: "echo", Services: []string{"examples.echo.v1.EchoService"}}}
	logs := &logBuffer{}
	r := serve(t, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	r.waitReady(t)
	ctx := testContext(t)

	for route, want := range map[string]websocket.StatusCode{tickerRoute: 1000, uploadRoute: 4012} {
		if got := callRoute(t, ctx, r.url, route); got != want {
			t.Fatalf("before the swap: %s closed with %d; want %d", route, got, want)
		}
	}
	open := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "before"})
	v1test.Next(t, ctx, open)
	// A stream of a method that the new set drops.
	ticking := dialer{}.mustDial(t, ctx, r.url, tickerRoute)
	v1test.Send(t, ctx, ticking, &echov1.TickerRequest{Interval: durationpb.New(20 * time.Millisecond)})
	v1test.Next(t, ctx, ticking)

	// The new version has Upload and no longer has Ticker.
	dir.update("api.binpb", echoSetWithout(t, "Ticker"))
	waitFor(t, "Upload, added by the new set", func() bool {
		return callRoute(t, ctx, r.url, uploadRoute) == websocket.StatusNormalClosure
	})
	if got := callRoute(t, ctx, r.url, tickerRoute); got != 4012 {
		t.Errorf("after the swap: Ticker closed with %d; want 4012", got)
	}
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "after the swap"})
	v1test.Next(t, ctx, open)
	// The Ticker stream opened before goes on ticking, and the status page
	// lists it as no longer routed.
	for range 3 {
		v1test.Next(t, ctx, ticking)
	}
	if _, page := r.get(t, "/"); !strings.Contains(page, `id="gone"`) || !strings.Contains(page, `id="route:/examples.echo.v1.EchoService/Ticker"`) {
		t.Errorf("the status page does not list Ticker as no longer routed")
	}
	ticking.Close(websocket.StatusNormalClosure, "")
	if !strings.Contains(logs.String(), "descriptor files reloaded") {
		t.Errorf("no log of the reload:\n%s", logs)
	}

	// A corrupt set: logged, counted, and the routes stay.
	dir.update("api.binpb", []byte("this is not a descriptor set"))
	waitFor(t, "the corrupt set logged", func() bool {
		return strings.Contains(logs.String(), "descriptor files changed but do not load")
	})
	if got := callRoute(t, ctx, r.url, uploadRoute); got != websocket.StatusNormalClosure {
		t.Errorf("after the corrupt set: Upload closed with %d; want 1000", got)
	}
	if got := callRoute(t, ctx, r.url, tickerRoute); got != 4012 {
		t.Errorf("after the corrupt set: Ticker closed with %d; want 4012", got)
	}
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, `grpcws_descriptor_loads_total{backend="echo",result="failure"} 1`) {
		t.Errorf("metrics do not count the failed load:\n%s", grepLines(body, "grpcws_descriptor_loads_total"))
	}
	if _, page := r.get(t, "/"); !strings.Contains(page, "is not a descriptor set") {
		t.Errorf("the status page does not show why the set did not load")
	}
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "do not load") {
			line = l
		}
	}
	if !strings.Contains(line, "level=ERROR") || !strings.Contains(line, path) || !strings.Contains(line, "is not a descriptor set") {
		t.Errorf("the log line %q does not name the level, the file and why", line)
	}

	// The next good version is taken: back to the first.
	dir.update("api.binpb", echoSetWithout(t, "Upload"))
	waitFor(t, "Ticker again", func() bool {
		return callRoute(t, ctx, r.url, tickerRoute) == websocket.StatusNormalClosure
	})
	if got := callRoute(t, ctx, r.url, uploadRoute); got != 4012 {
		t.Errorf("back to the first version: Upload closed with %d; want 4012", got)
	}

	// The stream opened before all this still works, to its natural end.
	v1test.Send(t, ctx, open, &echov1.BidiRequest{Message: "at the end"})
	v1test.Next(t, ctx, open)
	v1test.EndSend(t, ctx, open)
	if code, _ := v1test.CloseCode(ctx, open); code != websocket.StatusNormalClosure {
		t.Errorf("the stream opened before the swaps closed with %d; want 1000", code)
	}
	if _, body := r.get(t, "/metrics"); !strings.Contains(body, `grpcws_descriptor_loads_total{backend="echo",result="success"} 3`) {
		t.Errorf("metrics do not count the initial load and two reloads as successes:\n%s", grepLines(body, "grpcws_descriptor_loads_total"))
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for l := range strings.Lines(text) {
		if strings.Contains(l, s) {
			out = append(out, strings.TrimSuffix(l, "\n"))
		}
	}
	return strings.Join(out, "\n")
}
