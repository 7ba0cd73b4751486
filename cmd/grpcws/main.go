// Command grpcws is the gRPC-over-WebSocket bridge as a sidecar: it serves
// protocol v1 (docs/protocol.md) for the methods of gRPC backends.
//
//	grpcws --demo
//	grpcws --config grpcws.yaml
//	grpcws --backend 127.0.0.1:9090 --expose pkg.v1.Service
//	grpcws check --config grpcws.yaml
//	grpcws routes --config grpcws.yaml
//
// The configuration file is described in docs/configuration.md. SIGHUP
// reloads it; SIGTERM and SIGINT drain and stop.
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
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"

	"github.com/grpcws/grpcws/internal/demobackend"
	"github.com/grpcws/grpcws/internal/server"
	"github.com/grpcws/grpcws/internal/version"
	"github.com/grpcws/grpcws/web/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err := run(ctx, os.Args[1:], hup, os.Stdout, os.Stderr)
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

// run runs the command in args until ctx is done. Each value on reload
// reloads the configuration file.
func run(ctx context.Context, args []string, reload <-chan os.Signal, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return check(args[1:], stdout, stderr)
		case "routes":
			return routesCommand(ctx, args[1:], stdout, stderr)
		}
	}
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.version {
		fmt.Fprintln(stdout, "grpcws", version.Get())
		return nil
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	log := newLogger(stderr, cfg.Log.Format, cfg.Log.Level)

	var fallback http.Handler
	if f.demo {
		addr, stopDemo, err := startDemo()
		if err != nil {
			return err
		}
		defer stopDemo()
		log.Info("grpcws: demo backend started", slog.String("addr", addr))
		f.demoAddr = addr
		if cfg, err = f.load(); err != nil {
			return err
		}
		fallback = demo.Handler()
	}

	srv, err := server.New(server.Options{
		Config:     cfg,
		Load:       f.load,
		Logger:     log,
		Fallback:   fallback,
		Validation: f.validate,
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "grpcws: listening on %s (admin %s)\n", srv.Addr(), srv.AdminAddr())
	if f.demo {
		fmt.Fprintf(stdout, "grpcws: demo page at http://%s/\n", srv.Addr())
	}

	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-reload:
				log.Info("grpcws: SIGHUP: reloading the configuration")
				_ = srv.Reload() // logs its outcome
			case <-done:
				return
			}
		}
	}()
	return srv.Serve(ctx)
}

// check validates a configuration file without starting: grpcws check
// --config FILE.
func check(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("grpcws check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration `file` to check")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if *path == "" || fs.NArg() > 0 {
		return usageError{errors.New("usage: grpcws check --config FILE")}
	}
	f := &flags{config: *path}
	if _, err := f.load(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return nil
}

// startDemo runs the demo backend (echo and chat, with health and
// reflection) on a loopback port.
func startDemo() (addr string, stop func(), err error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("demo backend: %w", err)
	}
	s := grpc.NewServer()
	demobackend.Register(s)
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = s.Serve(lis)
	}()
	return lis.Addr().String(), func() {
		s.Stop()
		<-served
	}, nil
}

func newLogger(w io.Writer, format, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the configuration
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
