package server

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/filestamp"
	"github.com/grpcws/grpcws/internal/tlsfiles"
)

// A backend is one configured backend: its connection and the services
// its descriptors describe. Generations that route to it hold references;
// the last one to let go closes it.
type backend struct {
	name string
	cfg  config.Backend
	cc   *grpc.ClientConn
	log  *slog.Logger

	refs    int // generations using it; guarded by Server.mu
	stop    context.CancelFunc
	done    chan struct{} // closed when watch returns
	tried   chan struct{} // closed after the first load, whatever its outcome
	unwatch func()

	// stamp is the descriptor files as last read or tried. newBackend sets
	// it; then it is watch's alone.
	stamp filestamp.Stamp

	mu       sync.Mutex
	services []protoreflect.ServiceDescriptor // nil until loaded
	origins  origins                          // where each service's descriptor came from
	sum      [32]byte                         // of the loaded descriptors, to notice changes
	loadErr  error                            // of the last load; nil after a success
	readAt   time.Time                        // when the last successful load ended
	triedAt  time.Time                        // when the last load ended, whatever its outcome
}

// origins maps services to where their descriptors came from: the
// descriptor set file that holds them, or reflectionOrigin.
type origins map[protoreflect.FullName]string

// reflectionOrigin is the origin of descriptors read by server reflection.
const reflectionOrigin = "server reflection"

// fileCheckInterval is how often a backend's descriptor files are checked
// for changes.
var fileCheckInterval = time.Second

// reconnectBackoff is how fast a backend connection retries: a backend that
// comes back is found within a few seconds.
var reconnectBackoff = backoff.Config{
	BaseDelay:  250 * time.Millisecond,
	Multiplier: 1.6,
	Jitter:     0.2,
	MaxDelay:   5 * time.Second,
}

// dialBackend makes the connection to a backend. It does no I/O: gRPC
// connects in the background.
func dialBackend(b config.Backend, log *slog.Logger, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if b.TLS != nil {
		tc, err := tlsfiles.Client(tlsfiles.ClientOptions{
			CAFile:             b.TLS.CAFile,
			CertFile:           b.TLS.CertFile,
			KeyFile:            b.TLS.KeyFile,
			ServerName:         b.TLS.ServerName,
			InsecureSkipVerify: b.TLS.InsecureSkipVerify,
			Logger:             log,
		})
		if err != nil {
			return nil, fmt.Errorf("backend %s: %w", b.Name, err)
		}
		creds = credentials.NewTLS(tc)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: reconnectBackoff, MinConnectTimeout: 5 * time.Second}),
		// Stay connected while idle, so that /readyz tells the truth and
		// the first stream after a quiet spell pays no connect.
		grpc.WithIdleTimeout(0),
	}
	if b.LoadBalancing != "" && b.LoadBalancing != "pick_first" {
		opts = append(opts, grpc.WithDefaultServiceConfig(fmt.Sprintf(`{"loadBalancingConfig":[{%q:{}}]}`, b.LoadBalancing)))
	}
	if b.Keepalive.Time > 0 {
		opts = append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                b.Keepalive.Time,
			Timeout:             b.Keepalive.Timeout,
			PermitWithoutStream: b.Keepalive.PermitWithoutStream,
		}))
	}
	if n := int(b.MaxMessageSize); n > 0 {
		opts = append(opts, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(n), grpc.MaxCallSendMsgSize(n)))
	}
	cc, err := grpc.NewClient(b.Target, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("backend %s: target %q: %w", b.Name, b.Target, err)
	}
	cc.Connect()
	return cc, nil
}

// usesReflection reports whether the backend's descriptors come from its
// server reflection.
func usesReflection(b config.Backend) bool {
	return len(b.Descriptors.Files) == 0
}

// loadFiles reads the backend's descriptor-set files. A service in more
// than one file comes from the first.
func loadFiles(b config.Backend) ([]protoreflect.ServiceDescriptor, origins, error) {
	var out []protoreflect.ServiceDescriptor
	from := origins{}
	for _, f := range b.Descriptors.Files {
		services, err := bridge.ReadDescriptorSet(f)
		if err != nil {
			return nil, nil, fmt.Errorf("backend %s: %w", b.Name, err)
		}
		for _, s := range services {
			if _, ok := from[s.FullName()]; !ok {
				from[s.FullName()] = f
				out = append(out, s)
			}
		}
	}
	return out, from, nil
}

// reflected returns the origins of services read by server reflection.
func reflected(services []protoreflect.ServiceDescriptor) origins {
	from := make(origins, len(services))
	for _, s := range services {
		from[s.FullName()] = reflectionOrigin
	}
	return from
}

// loaded returns the backend's services, nil until they are loaded, and
// where each came from.
func (b *backend) loaded() ([]protoreflect.ServiceDescriptor, origins, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.services, b.origins, b.loadErr
}

// setServices stores newly loaded services and reports whether they, or
// where they came from, differ from the ones before.
func (b *backend) setServices(services []protoreflect.ServiceDescriptor, from origins) bool {
	sum := fingerprint(services)
	b.mu.Lock()
	defer b.mu.Unlock()
	changed := b.services == nil || sum != b.sum || !maps.Equal(from, b.origins)
	b.services, b.origins, b.sum, b.loadErr = services, from, sum, nil
	b.readAt = time.Now()
	b.triedAt = b.readAt
	return changed
}

func (b *backend) setLoadErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.loadErr = err
	b.triedAt = time.Now()
}

// sources describes where the backend's descriptors come from, for the
// status page.
type sources struct {
	names   []string  // the descriptor set files, or reflectionOrigin
	readAt  time.Time // zero until the first successful load
	triedAt time.Time
	err     error // of the last load
}

func (b *backend) sources() sources {
	names := []string{reflectionOrigin}
	if !usesReflection(b.cfg) {
		names = b.cfg.Descriptors.Files
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return sources{names: names, readAt: b.readAt, triedAt: b.triedAt, err: b.loadErr}
}

// fingerprint hashes the files that define services.
func fingerprint(services []protoreflect.ServiceDescriptor) [32]byte {
	var paths []string
	files := map[string]protoreflect.FileDescriptor{}
	for _, s := range services {
		f := s.ParentFile()
		if _, ok := files[f.Path()]; !ok {
			files[f.Path()] = f
			paths = append(paths, f.Path())
		}
	}
	slices.Sort(paths)
	h := sha256.New()
	for _, p := range paths {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(protodesc.ToFileDescriptorProto(files[p]))
		h.Write(b)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// watch keeps the backend connected and, for reflection, its services
// current: it loads them until it succeeds, then again whenever the
// connection becomes ready after it was not, and on the refresh interval.
// changed is called after a load that changed them. watch returns when ctx
// is done.
func (b *backend) watch(ctx context.Context, changed func(), observe func(ok bool)) {
	defer close(b.done)
	states := make(chan connectivity.State, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.keepConnected(ctx, states) })
	if !usesReflection(b.cfg) {
		observe(true) // newBackend loaded them
		b.watchFiles(ctx, changed, observe)
		return
	}

	load := func() bool {
		tctx, cancel := context.WithTimeout(ctx, cmp.Or(b.cfg.ConnectTimeout, 10*time.Second))
		defer cancel()
		services, err := bridge.Reflect(tctx, b.cc)
		if ctx.Err() != nil {
			return false
		}
		observe(err == nil)
		if err != nil {
			b.setLoadErr(err)
			b.log.Warn("grpcws: backend reflection failed; retrying", slog.Any("error", err))
			return false
		}
		if b.setServices(services, reflected(services)) {
			b.log.Info("grpcws: backend descriptors loaded", slog.Int("services", len(services)))
			changed()
		}
		return true
	}

	// Until the first load succeeds, retry with backoff.
	ok := load()
	close(b.tried)
	delay := time.Second
	for !ok {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
		ok = load()
	}

	var tick <-chan time.Time
	if d := b.cfg.Descriptors.RefreshInterval; d > 0 {
		t := time.NewTicker(d)
		defer t.Stop()
		tick = t.C
	}
	wasReady := b.cc.GetState() == connectivity.Ready
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			load()
		case st := <-states:
			ready := st == connectivity.Ready
			if ready && !wasReady {
				load() // the backend reconnected: it may have been redeployed
			}
			wasReady = ready
		}
	}
}

// watchFiles reads the backend's descriptor files again whenever they
// change, checking every fileCheckInterval, until ctx is done. Files that
// do not load leave the services as they were; they are tried again at
// their next change.
func (b *backend) watchFiles(ctx context.Context, changed func(), observe func(ok bool)) {
	files := b.cfg.Descriptors.Files
	t := time.NewTicker(fileCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stamp := filestamp.Take(files)
		var names []string
		for _, i := range stamp.Changed(b.stamp) {
			names = append(names, files[i])
		}
		if len(names) == 0 {
			continue
		}
		b.stamp = stamp
		services, from, err := loadFiles(b.cfg)
		observe(err == nil)
		if err != nil {
			b.setLoadErr(err)
			b.log.Error("grpcws: descriptor files changed but do not load; keeping the previous routes",
				slog.Any("files", names), slog.Any("error", err))
			continue
		}
		if !b.setServices(services, from) {
			b.log.Debug("grpcws: descriptor files changed, their services did not", slog.Any("files", names))
			continue
		}
		b.log.Info("grpcws: descriptor files reloaded", slog.Any("files", names), slog.Int("services", len(services)))
		changed()
	}
}

// keepConnected reconnects the backend's connection whenever it falls idle
// (gRPC waits for the next RPC otherwise), so that it is ready for the next
// stream and /readyz tells the truth. It reports each state on states,
// dropping a state the reader has not taken yet for the newer one.
func (b *backend) keepConnected(ctx context.Context, states chan connectivity.State) {
	st := b.cc.GetState()
	for {
		if st == connectivity.Idle {
			b.cc.Connect()
		}
		if !b.cc.WaitForStateChange(ctx, st) {
			return
		}
		st = b.cc.GetState()
		select {
		case <-states: // replace an old state the reader missed
		default:
		}
		states <- st
	}
}

// close stops the watcher and closes the connection.
func (b *backend) close() {
	b.stop()
	<-b.done
	if b.unwatch != nil {
		b.unwatch()
	}
	if err := b.cc.Close(); err != nil && !errors.Is(err, context.Canceled) {
		b.log.Debug("grpcws: closing backend connection", slog.Any("error", err))
	}
}
