package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/grpcws/grpcws/bridge"
)

// config is the sidecar's configuration, from flags.
type config struct {
	listen         string
	backend        string
	descriptors    string
	demo           bool
	origins        []string
	metadata       []string
	maxMessageSize int
	validate       bool
	logFormat      string
	logLevel       string
	reflectTimeout time.Duration
	pprofListen    string
	connections    int
}

// usageError is a bad command line: exit code 2.
type usageError struct{ error }

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("grpcws", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "`address` to serve WebSocket clients on")
	fs.StringVar(&c.backend, "backend", "", "gRPC backend `host:port` (plaintext)")
	fs.StringVar(&c.descriptors, "descriptors", "", "descriptor set `file` (buf build -o api.binpb); default: the backend's server reflection")
	fs.BoolVar(&c.demo, "demo", false, "start the built-in demo backend (echo and chat) and serve it")
	fs.Var((*list)(&c.origins), "origin", "allow browser `origin`s matching this pattern, e.g. *.example.com (repeatable)")
	fs.Var((*list)(&c.metadata), "metadata-header", "forward this request `header` to the backend as metadata (repeatable)")
	fs.IntVar(&c.maxMessageSize, "max-message-size", bridge.DefaultMaxMessageSize, "largest message in either direction, in `bytes`")
	fs.BoolVar(&c.validate, "validate", false, "parse every binary message from clients before forwarding it")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.IntVar(&c.connections, "backend-connections", 1, "HTTP/2 `connections` to the backend; streams are spread over them round-robin")
	fs.StringVar(&c.pprofListen, "pprof-listen", "", "serve net/http/pprof on this `address` (off by default; keep it on 127.0.0.1)")
	fs.DurationVar(&c.reflectTimeout, "reflect-timeout", 10*time.Second, "how long to wait for the backend's server reflection at startup")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	if err := c.validateFlags(); err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

func (c *config) validateFlags() error {
	switch {
	case c.demo && c.backend != "":
		return fmt.Errorf("--demo and --backend %q: choose one", c.backend)
	case c.demo && c.descriptors != "":
		return fmt.Errorf("--demo and --descriptors %q: the demo backend serves reflection", c.descriptors)
	case !c.demo && c.backend == "":
		return fmt.Errorf("--backend is required (or --demo)")
	case c.maxMessageSize <= 0:
		return fmt.Errorf("--max-message-size %d: must be positive", c.maxMessageSize)
	case c.connections < 1 || c.connections > 64:
		return fmt.Errorf("--backend-connections %d: want 1 to 64", c.connections)
	case c.reflectTimeout <= 0:
		return fmt.Errorf("--reflect-timeout %v: must be positive", c.reflectTimeout)
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return fmt.Errorf("--listen %q: %v", c.listen, err)
	}
	if c.pprofListen != "" {
		if _, _, err := net.SplitHostPort(c.pprofListen); err != nil {
			return fmt.Errorf("--pprof-listen %q: %v", c.pprofListen, err)
		}
	}
	if c.backend != "" && !strings.Contains(c.backend, "://") {
		if _, _, err := net.SplitHostPort(c.backend); err != nil {
			return fmt.Errorf("--backend %q: %v", c.backend, err)
		}
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	return nil
}

func (c *config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// options turns the configuration into bridge options.
func (c *config) options(log *slog.Logger) []bridge.Option {
	return []bridge.Option{
		bridge.WithLogger(log),
		bridge.WithOriginPatterns(c.origins...),
		bridge.WithMetadataHeaders(c.metadata...),
		bridge.WithMaxMessageSize(c.maxMessageSize),
		bridge.WithValidation(c.validate),
	}
}
