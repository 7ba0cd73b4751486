package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/grpcws/grpcws/internal/server"
)

// routesCommand prints the route table that a configuration gives: grpcws
// routes --config FILE, or with --backend, --expose and --descriptors. It
// reads the descriptors as the sidecar does and serves nothing.
func routesCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := &flags{}
	fs := flag.NewFlagSet("grpcws routes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage:
  grpcws routes --config grpcws.yaml [--format text|json]
  grpcws routes --backend HOST:PORT --expose SERVICE [--descriptors FILE] [--format text|json]

Prints every method the sidecar would serve: its subprotocols, its kind,
its messages, its backend, and where its descriptor came from. It reads the
descriptors as the sidecar does (server reflection or descriptor sets) and
serves nothing.

`)
		fs.PrintDefaults()
	}
	fs.StringVar(&f.config, "config", "", "configuration `file` (YAML)")
	fs.StringVar(&f.backend, "backend", "", "gRPC backend `target`, plaintext; a backend named \"default\"")
	fs.Var((*list)(&f.expose), "expose", "with --backend: a `service` to expose (repeatable), or '*' for every service")
	fs.Var((*list)(&f.descriptors), "descriptors", "with --backend: descriptor set `file` (repeatable); default: server reflection")
	format := fs.String("format", "text", "output `format`: text, or json for tools")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	switch {
	case fs.NArg() > 0:
		return usageError{fmt.Errorf("routes: unexpected argument %q", fs.Arg(0))}
	case *format != "text" && *format != "json":
		return usageError{fmt.Errorf("routes: --format %q: text or json", *format)}
	case f.backend != "" && len(f.expose) == 0:
		return usageError{fmt.Errorf("routes: --backend %q: name the services with --expose SERVICE, or --expose '*'", f.backend)}
	case f.backend == "" && (len(f.expose) > 0 || len(f.descriptors) > 0):
		return usageError{errors.New("routes: --expose and --descriptors go with --backend")}
	case f.backend == "" && f.config == "":
		return usageError{errors.New("usage: grpcws routes --config FILE, or --backend TARGET --expose SERVICE")}
	}
	f.set = map[string]bool{}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	routes, problems, err := server.Routes(ctx, cfg)
	if err != nil {
		return err
	}
	if *format == "json" {
		err = writeRoutesJSON(stdout, routes, problems)
	} else {
		err = writeRoutes(stdout, routes)
	}
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("routes not served:\n%s", strings.Join(problems, "\n"))
	}
	return nil
}

// writeRoutesJSON writes the routes and problems as one JSON object.
func writeRoutesJSON(w io.Writer, routes []server.RouteInfo, problems []string) error {
	out := struct {
		Routes   []server.RouteInfo `json:"routes"`
		Problems []string           `json:"problems"`
	}{routes, problems}
	if out.Routes == nil {
		out.Routes = []server.RouteInfo{}
	}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// writeRoutes writes the routes for people, service by service.
func writeRoutes(w io.Writer, routes []server.RouteInfo) error {
	var b strings.Builder
	services := 0
	last := ""
	for _, r := range routes {
		svc, method, _ := strings.Cut(strings.TrimPrefix(r.Method, "/"), "/")
		if svc != last {
			if last != "" {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "%s: backend %s, descriptors from %s\n", svc, r.Backend, r.Descriptors)
			last = svc
			services++
		}
		fmt.Fprintf(&b, "\n  %s (%s)\n", method, r.Kind)
		for _, f := range [][2]string{
			{"subprotocols", strings.Join(r.Subprotocols, ", ")},
			{"JSON", strings.Join(r.JSONSubprotocols, ", ")},
			{"request", r.Request},
			{"response", r.Response},
			{"HTTP path", r.Method},
		} {
			fmt.Fprintf(&b, "    %-13s %s\n", f[0], f[1])
		}
	}
	if len(routes) > 0 {
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "%s, %s\n", plural(services, "service"), plural(len(routes), "method"))
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
