// Command grpcws is the gRPC-over-WebSocket bridge as a sidecar: it serves
// protocol v1 (docs/protocol.md) for every method of a gRPC backend.
//
//	grpcws --listen 127.0.0.1:8080 --backend 127.0.0.1:9090
//	grpcws --demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.As(err, new(usageError)):
		fmt.Fprintln(os.Stderr, "grpcws:", err)
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "grpcws:", err)
		os.Exit(1)
	}
}

// shutdownBudget bounds a graceful stop.
const shutdownBudget = 10 * time.Second

// run runs the bridge until ctx is done.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := cfg.logger(stderr)
	if err != nil {
		return err
	}

	backendAddr := cfg.backend
	if cfg.demo {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo backend: %w", err)
		}
		s := grpc.NewServer()
		demo.Register(s)
		served := make(chan struct{})
		go func() {
			defer close(served)
			_ = s.Serve(lis)
		}()
		defer func() {
			s.Stop()
			<-served
		}()
		backendAddr = lis.Addr().String()
		log.Info("grpcws: demo backend started", slog.String("addr", backendAddr))
	}

	var conns roundRobin
	for range cfg.connections {
		// Each ClientConn has its own HTTP/2 connection.
		cc, err := grpc.NewClient(backendAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("backend %q: %w", backendAddr, err)
		}
		defer cc.Close()
		conns.conns = append(conns.conns, cc)
	}
	var cc grpc.ClientConnInterface = conns.conns[0]
	if len(conns.conns) > 1 {
		cc = &conns
	}

	descs, err := cfg.services(ctx, cc)
	if err != nil {
		return err
	}
	services := make([]bridge.Service, len(descs))
	for i, d := range descs {
		services[i] = bridge.Service{Desc: d, Conn: cc}
	}
	h, err := bridge.NewHandler(services, cfg.options(log)...)
	if err != nil {
		return err
	}
	for _, r := range h.Routes() {
		log.Info("grpcws: route", slog.String("method", r.Method), slog.String("subprotocols", strings.Join(r.Names, " ")))
	}

	if cfg.pprofListen != "" {
		stopPprof, err := servePprof(cfg.pprofListen, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("/", h)
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second, // the WebSocket handshake too
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(stdout, "grpcws: listening on %s\n", lis.Addr())
	log.Info("grpcws: listening", slog.String("addr", lis.Addr().String()), slog.Int("routes", len(h.Routes())))

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}

	log.Info("grpcws: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBudget)
	defer cancel()
	err = errors.Join(srv.Shutdown(sctx), h.Shutdown(sctx))
	if serr := <-serveErr; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// services returns the descriptors to serve: from the descriptor set, or
// from the backend's server reflection.
func (c *config) services(ctx context.Context, cc grpc.ClientConnInterface) ([]protoreflect.ServiceDescriptor, error) {
	if c.descriptors != "" {
		return bridge.ReadDescriptorSet(c.descriptors)
	}
	ctx, cancel := context.WithTimeout(ctx, c.reflectTimeout)
	defer cancel()
	services, err := bridge.Reflect(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("%w (is the backend up, and does it serve reflection? else use --descriptors)", err)
	}
	return services, nil
}

// servePprof serves the runtime profiles on their own listener, never on
// the public one.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	log.Info("grpcws: pprof listening", slog.String("addr", lis.Addr().String()))
	return func() {
		_ = srv.Close()
		<-done
	}, nil
}

// roundRobin spreads RPCs over several connections to one backend.
type roundRobin struct {
	conns []*grpc.ClientConn
	next  atomic.Uint32
}

func (r *roundRobin) pick() *grpc.ClientConn {
	return r.conns[int(r.next.Add(1))%len(r.conns)]
}

func (r *roundRobin) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return r.pick().Invoke(ctx, method, args, reply, opts...)
}

func (r *roundRobin) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return r.pick().NewStream(ctx, desc, method, opts...)
}
