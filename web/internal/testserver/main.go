// Command testserver runs the demo backend behind several bridges on
// 127.0.0.1, for the TypeScript client's tests in Node. It prints its base
// URL ("http://127.0.0.1:PORT") on the first line of its standard output,
// serves until its standard input closes (so it never outlives the test
// that started it), and records every backend call for the tests to check.
//
// It also serves the demo page, as `grpcws --demo` does, which makes it a
// development server for the page and the client:
//
//	go run ./web/internal/testserver -listen 127.0.0.1:8080 -origin 127.0.0.1:8000
//
// Flags:
//
//	-listen ADDR    the address to listen on (default 127.0.0.1:0: any free port)
//	-origin PATTERN allow browser pages from these origins too (repeatable)
//
// Routes:
//
//	/                     the bridge: EchoService and ChatService (protocol v1 and grpc-websockets);
//	                      gRPC-Web and Connect requests for them (the HTTP gateway); the demo page for plain GETs
//	/echo-only/           a bridge with EchoService only (ChatService is an unknown route)
//	/limited/             a bridge that allows one connection at a time
//	/doomed/              a bridge that POST /_test/close-doomed closes, and POST /_test/revive-doomed
//	                      replaces with a new one, as a restart would
//	/_test/calls?id=X     the backend calls whose x-test-id metadata is X, as JSON
//	/_test/close-doomed   closes the /doomed/ bridge (POST): its calls end, new ones are refused with 1001
//	/_test/revive-doomed  serves /doomed/ with a new bridge (POST)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/web/demo"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// calls serves what the backend saw of the calls whose x-test-id metadata
// is the query's id, as JSON.
func calls(b *testbackend.Backend) http.HandlerFunc {
	type call struct {
		Method        string              `json:"method"`
		Code          string              `json:"code"`   // the status the handler returned
		CtxErr        string              `json:"ctxErr"` // the context's error when it returned
		Done          bool                `json:"done"`
		HasDeadline   bool                `json:"hasDeadline"`
		Authorization string              `json:"authorization"`
		Metadata      map[string][]string `json:"metadata"`
	}
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		out := []call{}
		for _, c := range b.Calls() {
			if v := c.MD.Get("x-test-id"); len(v) == 0 || v[0] != id {
				continue
			}
			md := c.MD.Copy()
			j := call{Method: c.Method, Code: status.Code(c.Err).String(), Done: c.Done, HasDeadline: c.HasDeadline, Metadata: md}
			if v := md.Get("authorization"); len(v) > 0 {
				j.Authorization = v[0]
				delete(md, "authorization")
			}
			if c.CtxErr != nil {
				j.CtxErr = c.CtxErr.Error()
			}
			out = append(out, j)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

// A restartable serves a bridge that can be closed, as a shutdown does,
// and replaced, as a restart does.
type restartable struct {
	mu sync.Mutex
	h  *bridge.Handler
}

func (r *restartable) current() *bridge.Handler {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h
}

func (r *restartable) replace(h *bridge.Handler) (old *bridge.Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, r.h = r.h, h
	return old
}

func (r *restartable) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.current().ServeHTTP(w, req)
}

type patterns []string

func (p *patterns) String() string     { return fmt.Sprint(*p) }
func (p *patterns) Set(v string) error { *p = append(*p, v); return nil }

func run() error {
	listen := flag.String("listen", "127.0.0.1:0", "the `address` to listen on")
	var origins patterns
	flag.Var(&origins, "origin", "allow browser pages from origins matching this `pattern` (repeatable)")
	flag.Parse()

	backend, err := testbackend.New()
	if err != nil {
		return err
	}
	defer backend.Close()
	cc := backend.Conn

	echo := echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService")
	chat := chatv1.File_examples_chat_v1_chat_proto.Services().ByName("ChatService")
	newBridge := func(descs []protoreflect.ServiceDescriptor, opts ...bridge.Option) (*bridge.Handler, error) {
		services := make([]bridge.Service, 0, len(descs))
		for _, d := range descs {
			services = append(services, bridge.Service{Desc: d, Conn: cc})
		}
		return bridge.NewHandler(services, append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	}
	page := demo.Handler()
	full, err := newBridge([]protoreflect.ServiceDescriptor{echo, chat}, bridge.WithOriginPatterns(origins...),
		bridge.WithHTTPProtocols(true), bridge.WithFallback(page))
	if err != nil {
		return err
	}
	echoOnly, err := newBridge([]protoreflect.ServiceDescriptor{echo})
	if err != nil {
		return err
	}
	limited, err := newBridge([]protoreflect.ServiceDescriptor{echo}, bridge.WithConnLimits(1, 0))
	if err != nil {
		return err
	}
	first, err := newBridge([]protoreflect.ServiceDescriptor{echo})
	if err != nil {
		return err
	}
	doomed := &restartable{h: first}
	handlers := []*bridge.Handler{full, echoOnly, limited}
	mux := http.NewServeMux()
	mux.Handle("/", full)
	mux.Handle("/echo-only/", echoOnly)
	mux.Handle("/limited/", limited)
	mux.Handle("/doomed/", doomed)
	mux.Handle("GET /_test/calls", calls(backend))
	mux.HandleFunc("POST /_test/close-doomed", func(w http.ResponseWriter, _ *http.Request) {
		doomed.current().Close()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /_test/revive-doomed", func(w http.ResponseWriter, _ *http.Request) {
		h, err := newBridge([]protoreflect.ServiceDescriptor{echo})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		doomed.replace(h).Close()
		w.WriteHeader(http.StatusNoContent)
	})

	hl, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(hl) }()
	fmt.Printf("http://%s\n", hl.Addr())

	// Serve until standard input closes: the parent exited or is done.
	_, _ = io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	for _, h := range append(handlers, doomed.current()) {
		h.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
