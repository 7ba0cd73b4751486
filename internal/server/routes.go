package server

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// A RouteInfo describes one method the sidecar serves: what a client needs
// to call it, and where it comes from. `grpcws routes` prints them and the
// status page shows them.
type RouteInfo struct {
	// Method is the gRPC method, "/package.Service/Method": the URL path
	// of gRPC-Web, Connect and gRPC calls, and of grpc-websockets.
	Method string `json:"method"`
	// Kind is "unary", "server-streaming", "client-streaming" or "bidi".
	Kind string `json:"kind"`
	// Subprotocols select the method in protocol v1: the default name
	// first, then its aliases (the grpcws.v1.subprotocol option, then the
	// route's alias).
	Subprotocols []string `json:"subprotocols"`
	// JSONSubprotocols are the same names with "+json": the JSON encoding.
	JSONSubprotocols []string `json:"json_subprotocols"`
	// Request and Response are the full names of the message types.
	Request  string `json:"request"`
	Response string `json:"response"`
	// Backend is the name of the backend that serves the method.
	Backend string `json:"backend"`
	// Descriptors is where the method's descriptor came from: a
	// descriptor set file, or "server reflection".
	Descriptors string `json:"descriptors"`
}

// The RPC kinds, as RouteInfo.Kind names them.
const (
	KindUnary           = "unary"
	KindServerStreaming = "server-streaming"
	KindClientStreaming = "client-streaming"
	KindBidi            = "bidi"
)

func kind(clientStreams, serverStreams bool) string {
	switch {
	case clientStreams && serverStreams:
		return KindBidi
	case clientStreams:
		return KindClientStreaming
	case serverStreams:
		return KindServerStreaming
	}
	return KindUnary
}

// serviceOrigin is the backend that serves a service, by name, and where
// the service's descriptor came from.
type serviceOrigin struct {
	backend     string
	descriptors string
}

// catalogue describes routes, the routes of a Handler made from services,
// in their order.
func catalogue(routes []bridge.Route, services []bridge.Service, origin map[protoreflect.FullName]serviceOrigin) []RouteInfo {
	descs := make(map[protoreflect.FullName]protoreflect.ServiceDescriptor, len(services))
	for _, s := range services {
		descs[s.Desc.FullName()] = s.Desc
	}
	out := make([]RouteInfo, 0, len(routes))
	for _, r := range routes {
		svc, method, _ := strings.Cut(strings.TrimPrefix(r.Method, "/"), "/")
		info := RouteInfo{
			Method:       r.Method,
			Kind:         kind(r.ClientStreams, r.ServerStreams),
			Subprotocols: r.Names,
		}
		for _, n := range r.Names {
			info.JSONSubprotocols = append(info.JSONSubprotocols, n+v1wire.JSONSuffix)
		}
		if d := descs[protoreflect.FullName(svc)]; d != nil {
			if m := d.Methods().ByName(protoreflect.Name(method)); m != nil {
				info.Request, info.Response = string(m.Input().FullName()), string(m.Output().FullName())
			}
		}
		o := origin[protoreflect.FullName(svc)]
		info.Backend, info.Descriptors = o.backend, o.descriptors
		out = append(out, info)
	}
	return out
}

// Routes reads the descriptors of cfg's backends once, as the sidecar does
// when it starts (by server reflection, each backend within its
// connect_timeout, or from descriptor set files), and returns the routes
// the sidecar would serve, and the problems of the routes it would leave
// out, such as a service that a backend does not have. It serves nothing.
// The error names the backend whose descriptors could not be read, and
// why.
func Routes(ctx context.Context, cfg *config.Config) ([]RouteInfo, []string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	backends := map[string]*backend{}
	for _, bc := range cfg.Backends {
		b := &backend{name: bc.Name, cfg: bc}
		var err error
		if usesReflection(bc) {
			err = b.reflectOnce(ctx)
		} else {
			err = b.readFilesOnce()
		}
		if b.cc != nil {
			defer b.cc.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		backends[bc.Name] = b
	}
	services, origin, problems := routeServices(cfg, backends)
	h, err := bridge.NewHandler(services, bridge.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil, nil, err
	}
	return catalogue(h.Routes(), services, origin), problems, nil
}

// reflectOnce connects to the backend and reads its services by server
// reflection, once.
func (b *backend) reflectOnce(ctx context.Context) error {
	cc, err := dialBackend(b.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	b.cc = cc
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(b.cfg.ConnectTimeout, 10*time.Second))
	defer cancel()
	services, err := bridge.Reflect(ctx, cc)
	if err != nil {
		return fmt.Errorf("backend %s (%s): %w", b.name, b.cfg.Target, err)
	}
	b.setServices(services, reflected(services))
	return nil
}

// readFilesOnce reads the backend's descriptor set files, once. The
// backend gets a connection that never connects: routes need one.
func (b *backend) readFilesOnce() error {
	services, from, err := loadFiles(b.cfg)
	if err != nil {
		return err
	}
	// No RPC is made on it: it stays idle, and does no I/O.
	cc, err := grpc.NewClient(b.cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("backend %s: target %q: %w", b.name, b.cfg.Target, err)
	}
	b.cc = cc
	b.setServices(services, from)
	return nil
}
