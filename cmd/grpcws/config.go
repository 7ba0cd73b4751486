package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/grpcws/grpcws/internal/config"
)

// flags is the command line. Flags override the configuration file, or
// stand in for one in simple setups.
type flags struct {
	config         string
	listen         string
	adminListen    string
	backend        string
	expose         []string
	descriptors    []string
	demo           bool
	demoAddr       string // set once the demo backend runs
	origins        []string
	metadata       []string
	maxMessageSize config.ByteSize
	maxConns       int
	maxConnsPerIP  int
	validate       bool
	pprof          bool
	version        bool
	logFormat      string
	logLevel       string

	set map[string]bool // flags given on the command line
}

// usageError is a bad command line: exit code 2.
type usageError struct{ error }

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func parseFlags(args []string, stderr io.Writer) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet("grpcws", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage:
  grpcws --demo                          the demo backend and page on 127.0.0.1:8080
  grpcws --config grpcws.yaml [flags]    production: see docs/configuration.md
  grpcws --backend HOST:PORT --expose SERVICE [flags]
  grpcws check --config grpcws.yaml      validate a configuration file and exit
  grpcws routes --config grpcws.yaml     print the methods it serves: subprotocols, kinds, messages
                                         (also with --backend, --expose, --descriptors; --format json)
  grpcws --version                       print the version and exit

The admin listener serves a status page at /, /metrics, /healthz and /readyz.

Flags override the configuration file:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.config, "config", "", "configuration `file` (YAML); SIGHUP reloads it")
	fs.StringVar(&f.listen, "listen", "", "`address` to serve WebSocket clients on (default 127.0.0.1:8080 with --demo, else :8080)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "`address` for the status page, /metrics, /healthz and /readyz (default 127.0.0.1:9901)")
	fs.StringVar(&f.backend, "backend", "", "gRPC backend `target` (host:port, dns:///host:port, unix:///path), plaintext; a backend named \"default\"")
	fs.Var((*list)(&f.expose), "expose", "with --backend: a `service` to expose (repeatable), or '*' for every service the backend has")
	fs.Var((*list)(&f.descriptors), "descriptors", "with --backend: descriptor set `file` (buf build -o api.binpb), repeatable; default: the backend's server reflection")
	fs.BoolVar(&f.demo, "demo", false, "start the built-in demo backend (echo and chat) and serve the demo page")
	fs.Var((*list)(&f.origins), "origin", "allow browser `origin`s matching this pattern, e.g. *.example.com (repeatable)")
	fs.Var((*list)(&f.metadata), "metadata-header", "forward this request `header` to the backend as metadata (repeatable)")
	fs.Var(&f.maxMessageSize, "max-message-size", "largest message in either direction (`size`, e.g. 4MiB)")
	fs.IntVar(&f.maxConns, "max-connections", 0, "most connections open at once; 0 for no limit (default 10000)")
	fs.IntVar(&f.maxConnsPerIP, "max-connections-per-ip", 0, "most connections open at once from one client address; 0 for no limit (default 100)")
	fs.BoolVar(&f.validate, "validate", false, "parse every binary message from clients before forwarding it")
	fs.BoolVar(&f.pprof, "pprof", false, "serve /debug/pprof/ on the admin listener")
	fs.StringVar(&f.logFormat, "log-format", "", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "", "log level: debug, info, warn or error")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	switch {
	case f.version:
	case f.demo && f.backend != "":
		return nil, usageError{fmt.Errorf("--demo and --backend %q: choose one", f.backend)}
	case f.backend != "" && len(f.expose) == 0:
		return nil, usageError{fmt.Errorf("--backend %q: name the services to expose with --expose SERVICE, or --expose '*' for every service it has", f.backend)}
	case f.backend == "" && (len(f.expose) > 0 || len(f.descriptors) > 0):
		return nil, usageError{fmt.Errorf("--expose and --descriptors go with --backend")}
	case !f.demo && f.backend == "" && f.config == "":
		return nil, usageError{fmt.Errorf("nothing to serve: give --config FILE, --backend TARGET --expose SERVICE, or --demo")}
	}
	return f, nil
}

// load reads the configuration file, if any, and applies the flags to it.
// It is also how SIGHUP reloads: the flags apply again.
func (f *flags) load() (*config.Config, error) {
	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return nil, err
		}
	}
	if f.demo {
		cfg.Listen.Address = "127.0.0.1:8080"
		if f.demoAddr != "" {
			cfg.Backends = append(cfg.Backends, config.NewBackend("demo", f.demoAddr))
			cfg.Routes = append(cfg.Routes, config.Route{Backend: "demo", All: true})
		}
	}
	if f.backend != "" {
		b := config.NewBackend("default", f.backend)
		b.Descriptors.Files = f.descriptors
		cfg.Backends = append(cfg.Backends, b)
		r := config.Route{Backend: "default"}
		if len(f.expose) == 1 && f.expose[0] == "*" {
			r.All = true
		} else {
			r.Services = f.expose
		}
		cfg.Routes = append(cfg.Routes, r)
	}
	if f.set["listen"] {
		cfg.Listen.Address = f.listen
	}
	if f.set["admin-listen"] {
		cfg.Admin.Address = f.adminListen
	}
	if f.pprof {
		cfg.Admin.Pprof = true
	}
	cfg.Origins = append(cfg.Origins, f.origins...)
	cfg.Metadata.Headers = append(cfg.Metadata.Headers, f.metadata...)
	if f.set["max-message-size"] {
		cfg.Limits.MaxMessageSize = f.maxMessageSize
	}
	if f.set["max-connections"] {
		cfg.Limits.MaxConnections = f.maxConns
	}
	if f.set["max-connections-per-ip"] {
		cfg.Limits.MaxConnectionsPerIP = f.maxConnsPerIP
	}
	if f.set["log-format"] {
		cfg.Log.Format = f.logFormat
	}
	if f.set["log-level"] {
		cfg.Log.Level = f.logLevel
	}
	if err := cfg.Validate(); err != nil {
		if f.config == "" {
			return nil, usageError{err}
		}
		return nil, err
	}
	return cfg, nil
}
