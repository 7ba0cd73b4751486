package bridge

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/descset"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// A Service is a gRPC service the bridge exposes, and the connection to the
// backend that serves it. The Handler does not own Conn: it never closes it.
type Service struct {
	// Desc describes the service: its methods and their messages, which the
	// bridge needs for routes and for JSON. Required. See ReadDescriptorSet
	// and Reflect for descriptors that are not compiled in.
	Desc protoreflect.ServiceDescriptor
	// Conn is the connection to the backend that serves the service,
	// usually a *grpc.ClientConn, shared by every RPC. Required.
	Conn grpc.ClientConnInterface

	// Methods, when not empty, limits the service to the methods with these
	// short names ("Watch"); the others are not served. Empty serves every
	// method.
	Methods []string
	// Aliases gives methods, by short name, one more subprotocol name each,
	// besides their default name and the grpcws.v1.subprotocol option.
	Aliases map[string]string
	// Limits override the Handler's options for this service's methods.
	Limits Limits
}

// Limits are per-service overrides of the Handler's options. A field of
// zero or less keeps the Handler's value.
type Limits struct {
	// MaxMessageSize overrides WithMaxMessageSize.
	MaxMessageSize int
	// IdleTimeout overrides WithIdleTimeout.
	IdleTimeout time.Duration
	// MaxStreamDuration overrides WithMaxStreamDuration.
	MaxStreamDuration time.Duration
}

// A Route is one method the bridge serves.
type Route struct {
	// Method is the gRPC method name, "/package.Service/Method".
	Method string
	// Names are the subprotocols that select the method: the default name
	// first, then the name from the grpcws.v1.subprotocol option, if any.
	// Each also selects the JSON encoding with the suffix "+json".
	Names []string
	// ClientStreams and ServerStreams tell the RPC kind.
	ClientStreams, ServerStreams bool
	// Protocol is the protocol of one RPC on the route: it is set in the
	// Route that Observer.Accepted receives, and empty in Handler.Routes.
	Protocol Protocol
}

// route is a Route with what a session needs to serve it.
type route struct {
	Route
	desc   *grpc.StreamDesc
	conn   grpc.ClientConnInterface
	input  protoreflect.MessageType
	output protoreflect.MessageType

	maxMsg  int           // bytes, each way
	idle    time.Duration // zero: none
	maxLife time.Duration // zero: none
}

// routeTable maps subprotocol names, and method names, to routes. It is
// built once and then only read.
type routeTable struct {
	byName   map[string]*route
	byMethod map[string]*route // "/package.Service/Method"
	routes   []Route
	services []routedService
	types    *dynamicpb.Types // for JSON: resolves Any and extensions
}

// A routedService is a service with at least one route, for the HTTP
// gateway.
type routedService struct {
	desc   protoreflect.ServiceDescriptor
	maxMsg int
}

func newRouteTable(services []Service, cfg *config) (*routeTable, error) {
	t := &routeTable{byName: map[string]*route{}, byMethod: map[string]*route{}}
	var files []protoreflect.FileDescriptor
	seen := map[protoreflect.FullName]bool{}
	for i, s := range services {
		if s.Desc == nil {
			return nil, fmt.Errorf("bridge: services[%d] has no descriptor", i)
		}
		if s.Conn == nil {
			return nil, fmt.Errorf("bridge: service %s has no connection", s.Desc.FullName())
		}
		if seen[s.Desc.FullName()] {
			return nil, fmt.Errorf("bridge: service %s registered twice", s.Desc.FullName())
		}
		seen[s.Desc.FullName()] = true
		files = append(files, s.Desc.ParentFile())
		t.services = append(t.services, routedService{desc: s.Desc, maxMsg: positiveOr(s.Limits.MaxMessageSize, cfg.maxMessageSize)})
		methods := s.Desc.Methods()
		for _, name := range s.Methods {
			if methods.ByName(protoreflect.Name(name)) == nil {
				return nil, fmt.Errorf("bridge: service %s has no method %q", s.Desc.FullName(), name)
			}
		}
		for name := range s.Aliases {
			if methods.ByName(protoreflect.Name(name)) == nil {
				return nil, fmt.Errorf("bridge: alias for %s.%s: no such method", s.Desc.FullName(), name)
			}
		}
		for j := range methods.Len() {
			m := methods.Get(j)
			if len(s.Methods) > 0 && !slices.Contains(s.Methods, string(m.Name())) {
				continue
			}
			r := &route{
				Route: Route{
					Method:        "/" + string(s.Desc.FullName()) + "/" + string(m.Name()),
					Names:         []string{string(s.Desc.FullName()) + "." + string(m.Name())},
					ClientStreams: m.IsStreamingClient(),
					ServerStreams: m.IsStreamingServer(),
				},
				conn:    s.Conn,
				input:   dynamicpb.NewMessageType(m.Input()),
				output:  dynamicpb.NewMessageType(m.Output()),
				maxMsg:  positiveOr(s.Limits.MaxMessageSize, cfg.maxMessageSize),
				idle:    positiveOr(s.Limits.IdleTimeout, cfg.idleTimeout),
				maxLife: positiveOr(s.Limits.MaxStreamDuration, cfg.maxStreamDuration),
			}
			r.desc = &grpc.StreamDesc{
				StreamName:    string(m.Name()),
				ClientStreams: r.ClientStreams,
				ServerStreams: r.ServerStreams,
			}
			alias, err := subprotocolOption(m)
			if err != nil {
				return nil, err
			}
			for _, a := range []string{alias, s.Aliases[string(m.Name())]} {
				if a != "" && !slices.Contains(r.Names, a) {
					r.Names = append(r.Names, a)
				}
			}
			for _, name := range r.Names {
				if err := v1wire.CheckRouteName(name); err != nil {
					return nil, fmt.Errorf("bridge: method %s: %w", r.Method, err)
				}
				if name == GRPCWebsockets || name == Multiplexed {
					return nil, fmt.Errorf("bridge: method %s: subprotocol %q is reserved", r.Method, name)
				}
				if other, ok := t.byName[name]; ok {
					return nil, fmt.Errorf("bridge: subprotocol %q names both %s and %s", name, other.Method, r.Method)
				}
				t.byName[name] = r
			}
			t.byMethod[r.Method] = r
			t.routes = append(t.routes, r.Route)
		}
	}
	sort.Slice(t.routes, func(i, j int) bool { return t.routes[i].Method < t.routes[j].Method })
	types, err := descset.Types(files...)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	t.types = types
	return t, nil
}

// lookup returns the route an offered subprotocol selects, and whether it
// selects the JSON encoding.
func (t *routeTable) lookup(offered string) (r *route, json bool) {
	if r, ok := t.byName[offered]; ok {
		return r, false
	}
	if name, ok := strings.CutSuffix(offered, v1wire.JSONSuffix); ok {
		if r, ok := t.byName[name]; ok {
			return r, true
		}
	}
	return nil, false
}

// lookupMethod returns the route of the method a URL path names: the path
// itself, "/package.Service/Method", or its last two segments, so that a
// bridge mounted below a prefix ("/api/package.Service/Method") finds it too.
func (t *routeTable) lookupMethod(urlPath string) *route {
	if r, ok := t.byMethod[urlPath]; ok {
		return r
	}
	i := strings.LastIndexByte(urlPath, '/')
	if i <= 0 {
		return nil
	}
	j := strings.LastIndexByte(urlPath[:i], '/')
	if j < 0 || j == i-1 {
		return nil
	}
	return t.byMethod[urlPath[j:]]
}

// optionTypes resolves the grpcws.v1.subprotocol extension when method
// options are decoded again (see subprotocolOption).
var optionTypes = func() *protoregistry.Types {
	t := new(protoregistry.Types)
	if err := t.RegisterExtension(grpcwsv1.E_Subprotocol); err != nil {
		panic(err)
	}
	return t
}()

// subprotocolOption reads the grpcws.v1.subprotocol option of m. Options of
// descriptors built at run time (descriptor sets, reflection) may hold the
// extension as unknown fields, or as a dynamic extension that GetExtension
// does not match, so the options are encoded and decoded again with a
// resolver that knows the extension.
func subprotocolOption(m protoreflect.MethodDescriptor) (string, error) {
	opts := m.Options()
	if opts == nil {
		return "", nil
	}
	b, err := proto.Marshal(opts)
	if err != nil {
		return "", fmt.Errorf("bridge: method %s: options: %w", m.FullName(), err)
	}
	var mo descriptorpb.MethodOptions
	if err := (proto.UnmarshalOptions{Resolver: optionTypes}).Unmarshal(b, &mo); err != nil {
		return "", fmt.Errorf("bridge: method %s: options: %w", m.FullName(), err)
	}
	return proto.GetExtension(&mo, grpcwsv1.E_Subprotocol).(string), nil
}

// positiveOr returns v if it is positive, else def.
func positiveOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}
