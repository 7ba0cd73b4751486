// Package server runs the grpcws sidecar: the WebSocket listener with its
// bridge, the admin listener with metrics and probes, backends and their
// descriptors, configuration reloads and the graceful drain.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/connlimit"
	"github.com/grpcws/grpcws/internal/filestamp"
	"github.com/grpcws/grpcws/internal/metrics"
	"github.com/grpcws/grpcws/internal/peer"
	"github.com/grpcws/grpcws/internal/tlsfiles"
)

// Options configure a Server.
type Options struct {
	// Config is the configuration to start with. It must be valid.
	Config *config.Config
	// Load reads the configuration again, for Reload. Nil: Reload fails.
	Load func() (*config.Config, error)
	// Logger receives the logs. Nil: slog.Default().
	Logger *slog.Logger
	// Fallback serves requests on the WebSocket listener that are not
	// WebSocket upgrades, such as a page that uses the bridge. Nil: they
	// get 426 Upgrade Required.
	Fallback http.Handler
	// Validation makes the bridge parse binary messages before forwarding
	// them (bridge.WithValidation).
	Validation bool
	// TracerProvider, when tracing is enabled, replaces the OTLP exporter
	// of the configuration. For tests.
	TracerProvider trace.TracerProvider
}

// A Server is the sidecar. Make one with New, bind its listeners with
// Listen, and run it with Serve.
type Server struct {
	opts    Options
	log     *slog.Logger
	reg     *prometheus.Registry
	metrics *metrics.Metrics
	history *metrics.History // for the status page's rates
	started time.Time
	limiter *connlimit.Limiter // WebSockets and HTTP calls in progress
	conns   *connTracker       // connections without a request
	trusted atomic.Pointer[[]netip.Prefix]
	tracing *tracing // nil when off

	lis, adminLis net.Listener
	srv, adminSrv *http.Server

	front    atomic.Pointer[generation] // serves new connections
	draining atomic.Bool

	// retire is done when the drain's grace period ends: generations
	// replaced by a reload close their remaining streams then.
	retire       context.Context
	endRetire    context.CancelFunc
	rebuildMu    sync.Mutex // one rebuild at a time
	mu           sync.Mutex
	cfg          *config.Config
	backends     map[string]*backend // of cfg
	generations  map[*generation]struct{}
	retiring     sync.WaitGroup
	watchers     context.Context // cancelled on close: stops the backends' watchers
	stopWatchers context.CancelFunc
}

// A generation is a bridge Handler built from one configuration and one set
// of descriptors. New connections go to the newest; older ones keep their
// open streams until those end or the drain closes them.
type generation struct {
	handler  *bridge.Handler // every protocol, WebSocket and HTTP
	backends []*backend
	routes   []RouteInfo // what handler serves, for the status page
	problems []string    // why it is not ready, e.g. a route to a missing service
}

// New makes a Server. It does no I/O.
func New(opts Options) (*Server, error) {
	if opts.Config == nil {
		return nil, errors.New("server: no configuration")
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tr, err := newTracing(opts.Config.Tracing, opts.TracerProvider)
	if err != nil {
		return nil, err
	}
	l := opts.Config.Limits
	s := &Server{
		tracing:     tr,
		opts:        opts,
		log:         log,
		reg:         reg,
		metrics:     metrics.New(reg),
		history:     metrics.NewHistory(failureWindow),
		started:     time.Now(),
		limiter:     connlimit.New(l.MaxConnections, l.MaxConnectionsPerIP),
		backends:    map[string]*backend{},
		generations: map[*generation]struct{}{},
	}
	s.conns = newConnTracker(connlimit.New(l.MaxConnections, l.MaxConnectionsPerIP),
		l.HandshakeTimeout, log, s.metrics, func() []netip.Prefix { return *s.trusted.Load() })
	trusted := opts.Config.TrustedProxyPrefixes()
	s.trusted.Store(&trusted)
	s.retire, s.endRetire = context.WithCancel(context.Background())
	s.watchers, s.stopWatchers = context.WithCancel(context.Background())
	return s, nil
}

// Listen binds the WebSocket and admin listeners.
func (s *Server) Listen() error {
	cfg := s.opts.Config
	lis, err := net.Listen("tcp", cfg.Listen.Address)
	if err != nil {
		return fmt.Errorf("listen.address: %w", err)
	}
	if t := cfg.Listen.TLS; t != nil {
		tc, err := tlsfiles.Server(tlsfiles.ServerOptions{
			CertFile:     t.CertFile,
			KeyFile:      t.KeyFile,
			ClientCAFile: t.ClientCAFile,
			ClientAuth:   clientAuth(t.ClientAuth),
			MinVersion:   tlsVersion(t.MinVersion),
			Logger:       s.log,
		})
		if err != nil {
			lis.Close()
			return fmt.Errorf("listen.tls: %w", err)
		}
		lis = tlsListener(lis, tc)
	}
	adminLis, err := net.Listen("tcp", cfg.Admin.Address)
	if err != nil {
		lis.Close()
		return fmt.Errorf("admin.address: %w", err)
	}
	s.lis, s.adminLis = lis, adminLis
	return nil
}

// Addr returns the WebSocket listener's address, once Listen has returned.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// AdminAddr returns the admin listener's address, once Listen has returned.
func (s *Server) AdminAddr() net.Addr { return s.adminLis.Addr() }

// Serve serves until ctx is done, then drains: /readyz fails at once, new
// connections are refused, open streams get the grace period to finish and
// are then closed with 1001, and Serve returns when they are gone or the
// drain's timeout has passed.
func (s *Server) Serve(ctx context.Context) error {
	if s.lis == nil {
		return errors.New("server: Serve before Listen")
	}
	cfg := s.opts.Config
	if err := s.rebuild(cfg); err != nil {
		s.lis.Close()
		s.adminLis.Close()
		s.closeBackends()
		return err
	}

	s.awaitDescriptors(ctx)

	// The status page's rates count from here.
	s.history.Add(s.metrics.Snapshot())
	sampling, stopSampling := context.WithCancel(context.Background())
	var sampler sync.WaitGroup
	sampler.Go(func() { s.sample(sampling) })
	defer func() {
		stopSampling()
		sampler.Wait()
	}()

	// HTTP/2 serves gRPC clients, with prior knowledge when there is no
	// TLS and through ALPN when there is, and browsers' fetch over TLS;
	// WebSocket upgrades use HTTP/1.1.
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	l := cfg.Limits
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveFront),
		Protocols:         protocols,
		ReadHeaderTimeout: l.HandshakeTimeout, // the TLS and WebSocket handshakes too
		IdleTimeout:       2 * time.Minute,
		// HTTP/2 connections are pinged as WebSockets are, after a quiet
		// ping interval: that finds clients that vanished, and cuts a
		// header block that never ends (a ping cannot come in the middle
		// of one). A connection whose writes stall is closed.
		HTTP2: &http.HTTP2Config{
			SendPingTimeout:  l.PingInterval,
			PingTimeout:      l.PingTimeout,
			WriteByteTimeout: l.WriteTimeout,
		},
		ConnContext: s.conns.connContext,
		ConnState:   s.conns.connState,
		ErrorLog:    slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.adminSrv = &http.Server{
		Handler:           s.adminMux(cfg.Admin.Pprof),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 2)
	go func() { errc <- s.srv.Serve(s.lis) }()
	go func() { errc <- s.adminSrv.Serve(s.adminLis) }()
	s.log.Info("grpcws: listening", slog.String("addr", s.lis.Addr().String()),
		slog.Bool("tls", cfg.Listen.TLS != nil), slog.String("admin", s.adminLis.Addr().String()))

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
		s.log.Error("grpcws: listener failed", slog.Any("error", serveErr))
	}
	return errors.Join(serveErr, s.drain())
}

// awaitDescriptors waits, up to the longest connect timeout, for every
// backend's first attempt to load its descriptors, so that the first
// clients do not find their routes missing. The listener is bound already:
// connections wait in its backlog.
func (s *Server) awaitDescriptors(ctx context.Context) {
	s.mu.Lock()
	var wait time.Duration
	var tried []chan struct{}
	for _, b := range s.backends {
		wait = max(wait, cmp.Or(b.cfg.ConnectTimeout, 10*time.Second))
		tried = append(tried, b.tried)
	}
	s.mu.Unlock()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for _, c := range tried {
		select {
		case <-c:
		case <-timer.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// drain is the graceful stop. See Serve.
func (s *Server) drain() error {
	s.draining.Store(true)
	s.metrics.SetDraining(true)
	s.mu.Lock()
	d := s.cfg.Drain
	gens := make([]*generation, 0, len(s.generations))
	for g := range s.generations {
		gens = append(gens, g)
	}
	s.mu.Unlock()
	s.log.Info("grpcws: draining", slog.Int("open", s.limiter.Open()),
		slog.Duration("grace_period", d.GracePeriod), slog.Duration("timeout", d.Timeout))

	hard, cancelHard := context.WithTimeout(context.Background(), d.Timeout)
	defer cancelHard()
	grace, cancelGrace := context.WithTimeout(hard, d.GracePeriod)
	defer cancelGrace()
	go func() {
		<-grace.Done()
		s.endRetire() // generations retired by reloads close their streams too
	}()

	// The listener stays open through the drain, so that late upgrades are
	// refused with 1001 (and reconnect elsewhere) rather than with a reset.
	var wg sync.WaitGroup
	for _, g := range gens {
		wg.Go(func() { _ = g.handler.Shutdown(grace) })
	}
	drained := make(chan struct{})
	go func() {
		wg.Wait()
		s.retiring.Wait()
		_ = s.srv.Shutdown(hard) // plain HTTP requests, such as the page
		close(drained)
	}()
	var err error
	select {
	case <-drained:
		s.log.Info("grpcws: drained")
	case <-hard.Done():
		err = fmt.Errorf("drain: %d connections still open after %v", s.limiter.Open(), d.Timeout)
		s.log.Warn("grpcws: drain timed out", slog.Int("open", s.limiter.Open()))
		_ = s.srv.Close()
	}
	s.adminSrv.Close()
	s.closeBackends()
	if s.tracing != nil {
		if terr := s.tracing.shutdown(hard); terr != nil {
			s.log.Warn("grpcws: flushing traces", slog.Any("error", terr))
		}
	}
	return err
}

// serveFront sends every request to the newest generation's bridge, which
// serves WebSockets and gRPC-Web, Connect and gRPC calls, and sends other
// requests to servePlain.
func (s *Server) serveFront(w http.ResponseWriter, r *http.Request) {
	served(r)
	s.front.Load().handler.ServeHTTP(w, s.tracing.extract(r))
}

// servePlain serves a request that is neither a call nor an upgrade with
// the fallback, such as the demo page. It holds a place in the limits as a
// call does, and is bounded in time as one is: its body, which nothing
// here reads, must arrive within the read timeout, and its response within
// the write timeout.
func (s *Server) servePlain(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	l := s.cfg.Limits
	s.mu.Unlock()
	addr, _ := peer.ClientAddr(r, *s.trusted.Load())
	release, err := s.limiter.Acquire(addr)
	if r.ContentLength != 0 && r.ProtoMajor == 1 {
		w.Header().Set("Connection", "close") // net/http must not wait for the body first
	}
	if err != nil {
		s.metrics.Refused(bridge.RefusedOverLimit)
		http.Error(w, err.Error(), http.StatusTooManyRequests)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	if r.ContentLength != 0 {
		_ = rc.SetReadDeadline(time.Now().Add(l.ReadTimeout))
	}
	_ = rc.SetWriteDeadline(time.Now().Add(l.WriteTimeout))
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }() // the connection's next request
	s.opts.Fallback.ServeHTTP(w, r)
}

// Reload reads the configuration again and applies it to new connections:
// backends, routes, origins, metadata and limits. Open streams are not
// touched. Listener addresses and TLS settings of the listener need a
// restart (the certificate files are re-read on their own). On error the
// old configuration stays.
func (s *Server) Reload() error {
	if s.opts.Load == nil {
		return errors.New("server: no configuration file to reload")
	}
	cfg, err := s.opts.Load()
	if err == nil {
		err = cfg.Validate()
	}
	if err == nil {
		err = s.rebuild(cfg)
	}
	s.metrics.ConfigReloaded(err == nil)
	if err != nil {
		s.log.Error("grpcws: reload failed; keeping the running configuration", slog.Any("error", err))
		return err
	}
	old := s.opts.Config
	for _, c := range []struct {
		key      string
		old, new any
	}{
		{"listen", old.Listen, cfg.Listen},
		{"admin", old.Admin, cfg.Admin},
		{"tracing", old.Tracing, cfg.Tracing},
	} {
		if !reflect.DeepEqual(c.old, c.new) {
			s.log.Warn("grpcws: reload: a changed setting needs a restart to take effect", slog.String("key", c.key))
		}
	}
	s.log.Info("grpcws: configuration reloaded")
	return nil
}

// rebuild makes a generation from cfg and the backends' descriptors as
// loaded now, and sends new connections to it.
func (s *Server) rebuild(cfg *config.Config) error {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	if s.draining.Load() {
		return errors.New("server: draining")
	}

	// Backends: keep those whose configuration is unchanged.
	s.mu.Lock()
	backends := map[string]*backend{}
	var fresh []*backend
	for _, bc := range cfg.Backends {
		if b, ok := s.backends[bc.Name]; ok && reflect.DeepEqual(b.cfg, bc) {
			backends[bc.Name] = b
			continue
		}
		b, err := s.newBackend(bc)
		if err != nil {
			s.mu.Unlock()
			for _, b := range fresh {
				b.close()
			}
			return err
		}
		fresh = append(fresh, b)
		backends[bc.Name] = b
	}
	s.mu.Unlock()

	services, origin, problems := routeServices(cfg, backends)
	h, err := bridge.NewHandler(services, s.handlerOptions(cfg)...)
	if err != nil {
		for _, b := range fresh {
			b.close()
		}
		return err
	}
	g := &generation{handler: h, routes: catalogue(h.Routes(), services, origin), problems: problems}
	for _, b := range backends {
		g.backends = append(g.backends, b)
	}
	for _, p := range problems {
		level := slog.LevelWarn
		if strings.Contains(p, notLoadedYet) {
			level = slog.LevelInfo // the usual state while a backend starts
		}
		s.log.Log(context.Background(), level, "grpcws: route not served", slog.String("problem", p))
	}

	s.mu.Lock()
	for _, b := range g.backends {
		b.refs++
	}
	s.generations[g] = struct{}{}
	s.cfg, s.backends = cfg, backends
	l := cfg.Limits
	s.limiter.SetLimits(l.MaxConnections, l.MaxConnectionsPerIP)
	s.conns.limiter.SetLimits(l.MaxConnections, l.MaxConnectionsPerIP)
	trusted := cfg.TrustedProxyPrefixes()
	s.trusted.Store(&trusted)
	s.mu.Unlock()
	old := s.front.Swap(g)

	for _, b := range fresh {
		s.startBackend(b)
	}
	if old != nil {
		s.retiring.Add(1)
		go s.retireGeneration(old)
	}
	s.log.Info("grpcws: routes", slog.Int("methods", len(h.Routes())))
	for _, r := range h.Routes() {
		s.log.Debug("grpcws: route", slog.String("method", r.Method), slog.String("subprotocols", strings.Join(r.Names, " ")))
	}
	return nil
}

// retireGeneration lets a replaced generation's streams finish, then
// releases its backends.
func (s *Server) retireGeneration(g *generation) {
	defer s.retiring.Done()
	var wg sync.WaitGroup
	wg.Go(func() { _ = g.handler.Shutdown(s.retire) })
	wg.Wait()
	s.mu.Lock()
	delete(s.generations, g)
	var unused []*backend
	for _, b := range g.backends {
		b.refs--
		if b.refs == 0 {
			unused = append(unused, b)
		}
	}
	s.mu.Unlock()
	for _, b := range unused {
		b.close()
	}
}

func (s *Server) newBackend(bc config.Backend) (*backend, error) {
	log := s.log.With(slog.String("backend", bc.Name))
	var services []protoreflect.ServiceDescriptor
	var from origins
	var stamp filestamp.Stamp
	if !usesReflection(bc) {
		stamp = filestamp.Take(bc.Descriptors.Files) // before the read: a change during it is seen later
		var err error
		if services, from, err = loadFiles(bc); err != nil {
			return nil, err
		}
	}
	cc, err := dialBackend(bc, log, s.tracing.dialOptions()...)
	if err != nil {
		return nil, err
	}
	b := &backend{name: bc.Name, cfg: bc, cc: cc, log: log, done: make(chan struct{}), tried: make(chan struct{}), stop: func() {}, stamp: stamp}
	if services != nil {
		b.setServices(services, from)
		close(b.tried)
	}
	return b, nil
}

// startBackend starts reporting a backend's state, keeping it connected
// and, for reflection, loading its descriptors.
func (s *Server) startBackend(b *backend) {
	b.unwatch = s.metrics.WatchBackend(b.name, b.cc.GetState)
	ctx, cancel := context.WithCancel(s.watchers)
	b.stop = cancel
	go b.watch(ctx, s.descriptorsChanged, func(ok bool) { s.metrics.DescriptorsLoaded(b.name, ok) })
}

// descriptorsChanged rebuilds the routes after a backend's descriptors
// changed.
func (s *Server) descriptorsChanged() {
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	if err := s.rebuild(cfg); err != nil && !s.draining.Load() {
		s.log.Error("grpcws: rebuilding routes after a descriptor change", slog.Any("error", err))
	}
}

// closeBackends closes every backend, after the drain.
func (s *Server) closeBackends() {
	s.stopWatchers()
	s.mu.Lock()
	var all []*backend
	seen := map[*backend]bool{}
	for g := range s.generations {
		for _, b := range g.backends {
			if !seen[b] {
				seen[b] = true
				all = append(all, b)
			}
		}
	}
	s.generations = map[*generation]struct{}{}
	s.mu.Unlock()
	for _, b := range all {
		b.close()
	}
}

// handlerOptions is the one place where the configuration becomes the
// bridge's options, for every protocol.
func (s *Server) handlerOptions(cfg *config.Config) []bridge.Option {
	l := cfg.Limits
	opts := []bridge.Option{
		bridge.WithLogger(s.log),
		bridge.WithAccessLog(cfg.Log.AccessEnabled()),
		bridge.WithObserver(s.metrics),
		bridge.WithLimiter(s.limiter),
		bridge.WithHTTPProtocols(true),
		bridge.WithOriginPatterns(cfg.Origins...),
		bridge.WithMetadataHeaders(cfg.Metadata.Headers...),
		bridge.WithMetadataCookies(cfg.Metadata.Cookies...),
		bridge.WithTrustedProxies(cfg.TrustedProxyPrefixes()...),
		bridge.WithForwardClientAddress(cfg.Metadata.ForwardClientAddressEnabled()),
		bridge.WithMaxMessageSize(int(l.MaxMessageSize)),
		bridge.WithIdleTimeout(l.IdleTimeout),
		bridge.WithMaxStreamDuration(l.MaxStreamDuration),
		bridge.WithPing(l.PingInterval, l.PingTimeout),
		bridge.WithWriteTimeout(l.WriteTimeout),
		bridge.WithReadTimeout(l.ReadTimeout),
		bridge.WithMuxLimits(l.Mux.MaxStreams, l.Mux.MaxResets),
		bridge.WithMuxWindows(int(l.Mux.StreamWindow), int(l.Mux.ConnectionWindow)),
		bridge.WithValidation(s.opts.Validation),
	}
	if s.opts.Fallback != nil {
		opts = append(opts, bridge.WithFallback(http.HandlerFunc(s.servePlain)))
	}
	if len(cfg.Metadata.Allow) > 0 {
		opts = append(opts, bridge.WithMetadataAllowlist(cfg.Metadata.Allow...))
	}
	return opts
}

// routeServices turns the routes of cfg into the bridge's services, from
// the descriptors the backends have loaded, and tells for each service the
// backend that serves it and where its descriptor came from. Routes that
// cannot be served yet or at all are left out and described in problems.
func routeServices(cfg *config.Config, backends map[string]*backend) (services []bridge.Service, origin map[protoreflect.FullName]serviceOrigin, problems []string) {
	origin = map[protoreflect.FullName]serviceOrigin{}
	exposed := map[protoreflect.FullName]int{} // service → route index
	for i, r := range cfg.Routes {
		b, ok := backends[r.Backend]
		if !ok { // Validate rules this out
			problems = append(problems, fmt.Sprintf("routes[%d]: no backend %q", i, r.Backend))
			continue
		}
		loaded, from, loadErr := b.loaded()
		if loaded == nil {
			p := fmt.Sprintf("routes[%d]: backend %s: %s", i, r.Backend, notLoadedYet)
			if loadErr != nil {
				p += ": " + loadErr.Error()
			}
			problems = append(problems, p)
			continue
		}
		byName := map[protoreflect.FullName]protoreflect.ServiceDescriptor{}
		for _, d := range loaded {
			byName[d.FullName()] = d
		}
		picked := map[protoreflect.FullName]*bridge.Service{}
		var order []protoreflect.FullName
		pick := func(name protoreflect.FullName) *bridge.Service {
			if svc, ok := picked[name]; ok {
				return svc
			}
			d, ok := byName[name]
			if !ok {
				problems = append(problems, fmt.Sprintf("routes[%d]: backend %s has no service %s", i, r.Backend, name))
				return nil
			}
			maxMsg := int(r.MaxMessageSize)
			if maxMsg <= 0 {
				maxMsg = int(cfg.Limits.MaxMessageSize)
			}
			if n := int(b.cfg.MaxMessageSize); n > 0 && n < maxMsg {
				maxMsg = n
			}
			svc := &bridge.Service{Desc: d, Conn: b.cc, Aliases: map[string]string{}, Limits: bridge.Limits{
				MaxMessageSize:    maxMsg,
				IdleTimeout:       r.IdleTimeout,
				MaxStreamDuration: r.MaxStreamDuration,
			}}
			picked[name] = svc
			order = append(order, name)
			return svc
		}
		if r.All {
			for _, d := range loaded {
				if n := string(d.FullName()); !strings.HasPrefix(n, "grpc.reflection.") && !strings.HasPrefix(n, "grpc.health.") {
					pick(d.FullName())
				}
			}
		}
		for _, name := range r.Services {
			pick(protoreflect.FullName(name))
		}
		for _, m := range r.Methods {
			svcName, method, _ := strings.Cut(m, "/")
			if svc := pick(protoreflect.FullName(svcName)); svc != nil && !slices.Contains(svc.Methods, method) {
				if svc.Desc.Methods().ByName(protoreflect.Name(method)) == nil {
					problems = append(problems, fmt.Sprintf("routes[%d]: service %s has no method %s", i, svcName, method))
					continue
				}
				svc.Methods = append(svc.Methods, method)
			}
		}
		for m, alias := range r.Aliases {
			svcName, method, _ := strings.Cut(m, "/")
			svc, ok := picked[protoreflect.FullName(svcName)]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("routes[%d]: alias %q: the route does not expose %s", i, alias, m))
			case svc.Desc.Methods().ByName(protoreflect.Name(method)) == nil:
				problems = append(problems, fmt.Sprintf("routes[%d]: alias %q: service %s has no method %s", i, alias, svcName, method))
			default:
				svc.Aliases[method] = alias
			}
		}
		for _, name := range order {
			if j, ok := exposed[name]; ok {
				problems = append(problems, fmt.Sprintf("routes[%d]: service %s is already exposed by routes[%d]", i, name, j))
				continue
			}
			exposed[name] = i
			services = append(services, *picked[name])
			origin[name] = serviceOrigin{backend: r.Backend, descriptors: from[name]}
		}
	}
	return services, origin, problems
}

const notLoadedYet = "descriptors not loaded yet"

// ready reports whether the sidecar should get traffic, and if not, why.
func (s *Server) ready() []string {
	if s.draining.Load() {
		return []string{"draining"}
	}
	g := s.front.Load()
	if g == nil {
		return []string{"starting"}
	}
	out := slices.Clone(g.problems)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, bc := range s.cfg.Backends {
		if !bc.IsRequired() {
			continue
		}
		b := s.backends[bc.Name]
		if st := b.cc.GetState(); st != connectivity.Ready {
			out = append(out, fmt.Sprintf("backend %s: %s", bc.Name, st))
		}
	}
	return out
}

func (s *Server) adminMux(withPprof bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.serveStatus)
	mux.Handle("GET /metrics", metrics.Handler(s.reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if problems := s.ready(); len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, strings.Join(problems, "\n"))
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
