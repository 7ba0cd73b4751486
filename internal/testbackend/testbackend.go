// Package testbackend runs a real gRPC backend on 127.0.0.1 for tests, with
// an observer that records what every call saw: its metadata, its deadline,
// and how it ended. Tests use it to check the backend side of the bridge:
// that a deadline arrived, that a cancel reached the backend, that no stream
// was left open.
package testbackend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/grpcws/grpcws/internal/demobackend"
)

// A Call is what one backend handler saw.
type Call struct {
	Method      string      // "/package.Service/Method"
	MD          metadata.MD // the request metadata, a copy
	Deadline    time.Time   // the handler's deadline, if HasDeadline
	HasDeadline bool
	Err         error // what the handler returned
	CtxErr      error // the context's error as the handler returned
	Done        bool  // the handler has returned
}

// Backend is a gRPC server on 127.0.0.1 serving the demo services, server
// reflection and grpc-go's interop TestService, with an observer that
// records every call. Its methods are safe for concurrent use.
type Backend struct {
	Addr string
	// Conn is a plaintext client connection to Addr, closed when the test
	// ends.
	Conn *grpc.ClientConn

	server   *grpc.Server
	served   chan struct{} // closed when Serve has returned
	stopOnce sync.Once

	mu     sync.Mutex
	calls  []*Call
	active int
}

// Start starts a Backend with the given server options; it stops, and Conn
// closes, when the test ends.
func Start(t testing.TB, opts ...grpc.ServerOption) *Backend {
	t.Helper()
	b, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// New starts a Backend with the given server options, for programs that
// are not tests; Close stops it.
func New(opts ...grpc.ServerOption) (*Backend, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &Backend{Addr: lis.Addr().String(), served: make(chan struct{})}
	opts = append(opts, grpc.ChainUnaryInterceptor(b.unary), grpc.ChainStreamInterceptor(b.stream))
	b.server = grpc.NewServer(opts...)
	demobackend.Register(b.server)
	testgrpc.RegisterTestServiceServer(b.server, interop.NewTestServer())
	go func() {
		defer close(b.served)
		_ = b.server.Serve(lis)
	}()
	b.Conn, err = grpc.NewClient(b.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Stop()
		<-b.served
		return nil, err
	}
	return b, nil
}

// Close closes Conn and stops the server, and waits for it.
func (b *Backend) Close() {
	b.Conn.Close()
	b.Stop()
	<-b.served
}

// Stop stops the server at once, breaking open streams. It is idempotent.
func (b *Backend) Stop() {
	b.stopOnce.Do(b.server.Stop)
}

// Calls returns a snapshot of the calls so far, in the order they started.
func (b *Backend) Calls() []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Call, len(b.calls))
	for i, c := range b.calls {
		out[i] = *c
	}
	return out
}

// Active returns the number of handlers running.
func (b *Backend) Active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active
}

// WaitIdle waits until no handler runs, polling every 5 ms, and fails when
// ctx is done first.
func (b *Backend) WaitIdle(ctx context.Context) error {
	return poll(ctx, func() bool { return b.Active() == 0 }, func() error {
		return fmt.Errorf("testbackend: %d handlers still running", b.Active())
	})
}

// WaitCall waits for the first finished call to method and returns it,
// polling every 5 ms; it fails when ctx is done first.
func (b *Backend) WaitCall(ctx context.Context, method string) (Call, error) {
	var found Call
	err := poll(ctx, func() bool {
		for _, c := range b.Calls() {
			if c.Method == method && c.Done {
				found = c
				return true
			}
		}
		return false
	}, func() error { return fmt.Errorf("testbackend: no finished call to %s", method) })
	return found, err
}

func poll(ctx context.Context, done func() bool, fail func() error) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !done() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", fail(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

func (b *Backend) begin(ctx context.Context, method string) *Call {
	md, _ := metadata.FromIncomingContext(ctx)
	c := &Call{Method: method, MD: md.Copy()}
	c.Deadline, c.HasDeadline = ctx.Deadline()
	b.mu.Lock()
	b.calls = append(b.calls, c)
	b.active++
	b.mu.Unlock()
	return c
}

func (b *Backend) end(ctx context.Context, c *Call, err error) {
	ctxErr := ctx.Err() // first: gRPC cancels the context soon after the handler returns
	b.mu.Lock()
	c.Err, c.CtxErr, c.Done = err, ctxErr, true
	b.active--
	b.mu.Unlock()
}

func (b *Backend) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	c := b.begin(ctx, info.FullMethod)
	res, err := handler(ctx, req)
	b.end(ctx, c, err)
	return res, err
}

func (b *Backend) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	c := b.begin(ctx, info.FullMethod)
	err := handler(srv, ss)
	b.end(ctx, c, err)
	return err
}

// NopConn is a backend connection for tests that never reach a backend:
// every call fails.
type NopConn struct{}

// Invoke fails.
func (NopConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("testbackend: NopConn")
}

// NewStream fails.
func (NopConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("testbackend: NopConn")
}
