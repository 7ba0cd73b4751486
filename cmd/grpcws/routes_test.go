package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/ with what the tests get")

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -run %s -update rewrites it):\n--- got\n%s\n--- want\n%s", path, t.Name(), got, want)
	}
}

// formats are the output formats of grpcws routes and their golden files'
// extensions.
var formats = map[string]string{"text": "txt", "json": "json"}

// runRoutes runs grpcws routes with args and returns what it printed and
// its error.
func runRoutes(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out bytes.Buffer
	err = run(ctx, append([]string{"routes"}, args...), nil, &out, io.Discard)
	return out.String(), err
}

// TestRoutesReflection lists the demo backend's routes, read by server
// reflection, in both formats.
func TestRoutesReflection(t *testing.T) {
	t.Parallel()
	addr, stop, err := startDemo()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	for format, ext := range formats {
		got, err := runRoutes(t, "--backend", addr, "--expose", "*", "--format", format)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		golden(t, "routes-reflection."+ext, got)
	}
}

// TestRoutesDescriptorSet lists routes from a descriptor set and a
// configuration file with an alias and one method alone, in both formats.
// The backend is not running: a descriptor set needs none.
func TestRoutesDescriptorSet(t *testing.T) {
	t.Parallel()
	set := testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto, chatv1.File_examples_chat_v1_chat_proto)
	cfg := filepath.Join(t.TempDir(), "grpcws.yaml")
	writeFile(t, cfg, fmt.Sprintf(`backends:
  - name: api
    target: 127.0.0.1:1
    descriptors:
      files: [%s]
routes:
  - backend: api
    services: [examples.chat.v1.ChatService]
    methods: [examples.echo.v1.EchoService/Echo]
    aliases:
      examples.echo.v1.EchoService/Echo: echo.v1
`, set))
	for format, ext := range formats {
		got, err := runRoutes(t, "--config", cfg, "--format", format)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		golden(t, "routes-descriptors."+ext, strings.ReplaceAll(got, set, "$DESCRIPTORS"))
	}

	// The JSON is what tools read: check it decodes into the fields the
	// documentation names.
	got, _ := runRoutes(t, "--config", cfg, "--format", "json")
	var doc struct {
		Routes []struct {
			Method, Kind, Request, Response, Backend, Descriptors string
			Subprotocols                                          []string
			JSONSubprotocols                                      []string `json:"json_subprotocols"`
		}
		Problems []string
	}
	if err := json.Unmarshal([]byte(got), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Routes) != 2 || doc.Routes[1].Method != "/examples.echo.v1.EchoService/Echo" ||
		strings.Join(doc.Routes[1].JSONSubprotocols, " ") != "examples.echo.v1.EchoService.Echo+json echo.v1+json" ||
		doc.Routes[1].Descriptors != set || doc.Routes[0].Kind != "bidi" {
		t.Errorf("decoded %+v", doc)
	}
}

// TestRoutesErrors: what cannot be loaded is named, and so is a route that
// would not be served.
func TestRoutesErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.binpb")
	writeFile(t, broken, "not a descriptor set")
	set := testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)
	missing := filepath.Join(dir, "grpcws.yaml")
	writeFile(t, missing, fmt.Sprintf(`backends:
  - name: api
    target: 127.0.0.1:1
    descriptors: {files: [%s]}
routes:
  - backend: api
    services: [examples.echo.v1.EchoService, no.such.Service]
`, set))
	// A port nothing listens on.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()

	tests := []struct {
		name   string
		args   []string
		want   []string // in the error
		stdout string   // in what was printed
		usage  bool
	}{
		{name: "broken descriptor set", args: []string{"--backend", "127.0.0.1:1", "--expose", "*", "--descriptors", broken},
			want: []string{"backend default", broken, "is not a descriptor set"}},
		{name: "missing descriptor set", args: []string{"--backend", "127.0.0.1:1", "--expose", "*", "--descriptors", filepath.Join(dir, "nope.binpb")},
			want: []string{"nope.binpb"}, usage: true},
		{name: "no reflection: nothing listens", args: []string{"--backend", closed, "--expose", "*"},
			want: []string{"backend default (" + closed + ")", "server reflection", "Unavailable"}},
		{name: "a route to a missing service", args: []string{"--config", missing},
			want:   []string{"routes not served", "routes[0]: backend api has no service no.such.Service"},
			stdout: "examples.echo.v1.EchoService: backend api"},
		{name: "bad format", args: []string{"--config", missing, "--format", "xml"}, want: []string{`--format "xml"`}, usage: true},
		{name: "nothing to list", args: nil, want: []string{"usage: grpcws routes"}, usage: true},
		{name: "backend without expose", args: []string{"--backend", "127.0.0.1:1"}, want: []string{"--expose"}, usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := runRoutes(t, tt.args...)
			if err == nil {
				t.Fatalf("no error; printed %q", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if ue := (usageError{}); errors.As(err, &ue) != tt.usage {
				t.Errorf("error %q: a usage error %v; want %v", err, !tt.usage, tt.usage)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("printed %q; want it to contain %q", out, tt.stdout)
			}
		})
	}
}
