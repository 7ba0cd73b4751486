package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpcws/grpcws/internal/v1wire"

	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
	"github.com/grpcws/grpcws/internal/testbackend"
)

// The fault tests: a backend killed mid-stream, a backend that stalls, and
// a drain with sequence-numbered messages in flight. docs/reliability.md
// states what they show.

// faultBackend is a gRPC backend on 127.0.0.1 that a test can kill the way a
// crash does, every connection reset at once, and start again on the same
// address. It serves the demo EchoService with reflection or, when stall is
// set, answers every method with a handler that reads nothing and sends
// nothing until its RPC ends.
type faultBackend struct {
	t     *testing.T
	addr  string
	stall bool

	active atomic.Int64 // handlers running

	mu    sync.Mutex
	srv   *grpc.Server
	conns []net.Conn // accepted, reset by kill
	done  chan struct{}
	calls []*stalledCall
}

// A stalledCall is what one stalled handler saw.
type stalledCall struct {
	method      string
	deadline    time.Time
	hasDeadline bool
	ctxErr      error // when the handler returned; nil while it runs
}

func startFaultBackend(t *testing.T, stall bool) *faultBackend {
	b := &faultBackend{t: t, addr: "127.0.0.1:0", stall: stall}
	b.start()
	t.Cleanup(b.kill)
	return b
}

func (b *faultBackend) start() {
	b.t.Helper()
	var lis net.Listener
	var err error
	for range 50 { // the port may linger briefly after a kill
		if lis, err = net.Listen("tcp", b.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	count := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.active.Add(1)
		defer b.active.Add(-1)
		return h(ctx, req)
	}
	countStream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		b.active.Add(1)
		defer b.active.Add(-1)
		return h(srv, ss)
	}
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(count), grpc.ChainStreamInterceptor(countStream)}
	if b.stall {
		opts = append(opts, grpc.UnknownServiceHandler(b.stalled))
	}
	s := grpc.NewServer(opts...)
	if !b.stall {
		echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{})
		reflection.Register(s)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(trackingListener{lis, b})
	}()
	b.mu.Lock()
	b.srv, b.done = s, done
	b.mu.Unlock()
}

// kill resets every connection, as the kernel does for a process that was
// killed with unread data in its sockets, and stops the server.
func (b *faultBackend) kill() {
	b.mu.Lock()
	s, done, conns := b.srv, b.done, b.conns
	b.srv, b.conns = nil, nil
	b.mu.Unlock()
	if s == nil {
		return
	}
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = c.Close()
	}
	s.Stop()
	<-done
}

// stalled is the handler of every method of a stalling backend: it records
// the call and waits for the RPC to end, reading and sending nothing.
func (b *faultBackend) stalled(_ any, ss grpc.ServerStream) error {
	ctx := ss.Context()
	method, _ := grpc.MethodFromServerStream(ss)
	c := &stalledCall{method: method}
	c.deadline, c.hasDeadline = ctx.Deadline()
	b.mu.Lock()
	b.calls = append(b.calls, c)
	b.mu.Unlock()
	<-ctx.Done()
	b.mu.Lock()
	c.ctxErr = ctx.Err()
	b.mu.Unlock()
	return status.FromContextError(ctx.Err()).Err()
}

// stalledCalls returns a copy of the stalled calls so far.
func (b *faultBackend) stalledCalls() []stalledCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]stalledCall, len(b.calls))
	for i, c := range b.calls {
		out[i] = *c
	}
	return out
}

// trackingListener records the connections it accepts, for kill.
type trackingListener struct {
	net.Listener
	b *faultBackend
}

func (l trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.b.mu.Lock()
		l.b.conns = append(l.b.conns, c)
		l.b.mu.Unlock()
	}
	return c, err
}

// outcome is how an RPC ended, as its client saw it.
type outcome struct {
	msgs   [][]byte
	end    *grpcwsv1.Status // from the end frame; nil when none came
	close  websocket.StatusCode
	reason string
	at     time.Time // when the connection closed
}

func (o outcome) String() string {
	end := "no end frame"
	if o.end != nil {
		end = fmt.Sprintf("end %d %q", o.end.GetCode(), o.end.GetMessage())
	}
	return fmt.Sprintf("%s, close %d %q, %d messages", end, o.close, o.reason, len(o.msgs))
}

// readOutcome reads c until it closes. It may run in its own goroutine: it
// does not touch the test.
func readOutcome(ctx context.Context, c *websocket.Conn) outcome {
	var o outcome
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			o.at = time.Now()
			o.close = websocket.CloseStatus(err)
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				o.reason = ce.Reason
			}
			return o
		}
		if typ == websocket.MessageBinary {
			o.msgs = append(o.msgs, b)
			continue
		}
		if sc, err := v1wire.ParseServerControl(b); err == nil {
			if end := sc.GetEnd(); end != nil {
				o.end = end.GetStatus()
				if o.end == nil {
					o.end = &grpcwsv1.Status{}
				}
			}
		}
	}
}

// openRPCs returns the bridge's grpcws_connections_open.
func (r *running) openRPCs(t *testing.T) string {
	t.Helper()
	_, body := r.get(t, "/metrics")
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(line, "grpcws_connections_open "); ok {
			return strings.TrimSpace(v)
		}
	}
	return "absent"
}

// TestBackendKilled kills the backend under 20 open streams, five of each
// kind: each ends within a second of the kill with UNAVAILABLE in an end
// frame and close 4014. While the backend is down new RPCs are refused the
// same way, with a message that says why; once it is back, new RPCs work
// with no restart of the bridge.
func TestBackendKilled(t *testing.T) {
	t.Parallel()
	b := startFaultBackend(t, false)
	r := serve(t, Options{Config: testConfig(b.addr)})
	r.waitReady(t)
	ctx := testContext(t)

	const perKind = 5
	type open struct {
		route string
		c     *websocket.Conn
	}
	var streams []open
	for range perKind {
		c := dialer{}.mustDial(t, ctx, r.url, echoRoute)
		v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "held", Delay: durationpb.New(time.Minute)})
		streams = append(streams, open{echoRoute, c})

		c = dialer{}.mustDial(t, ctx, r.url, tickerRoute)
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Interval: durationpb.New(20 * time.Millisecond)})
		v1test.Next(t, ctx, c)
		streams = append(streams, open{tickerRoute, c})

		c = dialer{}.mustDial(t, ctx, r.url, uploadRoute)
		v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte("partial")})
		streams = append(streams, open{uploadRoute, c})

		c = dialer{}.mustDial(t, ctx, r.url, bidiRoute)
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "1"})
		v1test.Next(t, ctx, c)
		streams = append(streams, open{bidiRoute, c})
	}
	waitFor(t, "every stream open at the backend", func() bool { return b.active.Load() == 4*perKind })

	outcomes := make([]outcome, len(streams))
	var wg sync.WaitGroup
	for i, s := range streams {
		wg.Go(func() { outcomes[i] = readOutcome(ctx, s.c) })
	}
	killed := time.Now()
	b.kill()
	wg.Wait()
	var slowest time.Duration
	for i, o := range outcomes {
		took := o.at.Sub(killed)
		slowest = max(slowest, took)
		if o.end == nil || o.end.GetCode() != 14 || o.end.GetMessage() == "" || o.close != 4014 {
			t.Errorf("%s #%d after the kill: %v; want an end frame with UNAVAILABLE and a message, close 4014", streams[i].route, i/4, o)
		}
		if took > time.Second {
			t.Errorf("%s #%d ended %v after the kill; want within 1s", streams[i].route, i/4, took)
		}
	}
	t.Logf("%d streams ended at most %v after the kill", len(streams), slowest)

	// While the backend is down: refused at once, with the reason.
	for _, route := range []string{echoRoute, bidiRoute} {
		began := time.Now()
		c := dialer{}.mustDial(t, ctx, r.url, route)
		if route == echoRoute {
			v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "down"})
		}
		o := readOutcome(ctx, c)
		if o.end == nil || o.end.GetCode() != 14 || o.close != 4014 || !strings.Contains(o.end.GetMessage(), "connect") {
			t.Errorf("%s while the backend is down: %v; want UNAVAILABLE naming the connection failure, close 4014", route, o)
		}
		if took := o.at.Sub(began); took > 2*time.Second {
			t.Errorf("%s while the backend is down: refused after %v; want promptly", route, took)
		}
		t.Logf("%s while the backend is down: %v", route, o)
	}

	// The backend returns on the same address: new streams work.
	b.start()
	waitFor(t, "echo after the backend returned", func() bool {
		return callEcho(t, ctx, dialer{}, r.url) == websocket.StatusNormalClosure
	})
	c := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
	for i := 1; i <= 3; i++ {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: strconv.Itoa(i)})
		var res echov1.BidiResponse
		if err := proto.Unmarshal(v1test.Next(t, ctx, c), &res); err != nil || res.GetIndex() != int64(i) {
			t.Fatalf("bidi after the restart: response %v (%v); want index %d", &res, err, i)
		}
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`)); err != nil {
		t.Fatal(err)
	}
	if o := readOutcome(ctx, c); o.end.GetCode() != 0 || o.close != websocket.StatusNormalClosure {
		t.Errorf("bidi after the restart: %v; want OK, close 1000", o)
	}
	waitFor(t, "no RPC open", func() bool { return r.openRPCs(t) == "0" })
}

// TestStalledBackendDeadline sends each kind of RPC with a grpc-timeout to a
// backend that never answers: the deadline still fires, with
// DEADLINE_EXCEEDED and close 4004, and the backend saw it and was
// cancelled.
func TestStalledBackendDeadline(t *testing.T) {
	t.Parallel()
	b := startFaultBackend(t, true)
	cfg := testConfig(b.addr)
	cfg.Backends[0].Descriptors.Files = []string{testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)}
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	const timeout = 300 * time.Millisecond
	tests := []struct {
		name  string
		route string
		msg   proto.Message
	}{
		{"unary", echoRoute, &echov1.EchoRequest{Message: "x"}},
		{"server streaming", tickerRoute, &echov1.TickerRequest{Count: 3}},
		{"client streaming", uploadRoute, &echov1.UploadRequest{Chunk: []byte("x")}},
		{"bidi", bidiRoute, &echov1.BidiRequest{Message: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			c := dialer{}.mustDial(t, ctx, r.url+"?grpc-timeout=300m", tt.route)
			v1test.Send(t, ctx, c, tt.msg)
			o := readOutcome(ctx, c)
			took := o.at.Sub(began)
			if o.end == nil || o.end.GetCode() != 4 || o.close != 4004 {
				t.Errorf("got %v; want DEADLINE_EXCEEDED, close 4004", o)
			}
			if took < timeout || took > timeout+time.Second {
				t.Errorf("ended after %v; want soon after the %v deadline", took, timeout)
			}
			method := "/examples.echo.v1.EchoService/" + tt.route[strings.LastIndex(tt.route, ".")+1:]
			waitFor(t, "the backend handler's end", func() bool {
				for _, call := range b.stalledCalls() {
					if call.method == method && call.ctxErr != nil {
						if !call.hasDeadline || time.Until(call.deadline) > timeout {
							t.Errorf("backend saw deadline %v (set %v); want one within %v", call.deadline, call.hasDeadline, timeout)
						}
						return true
					}
				}
				return false
			})
		})
	}
}

// heapInUse returns the heap in use after a collection, in bytes.
func heapInUse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

// TestBackpressureMemory pushes as fast as it can where the other side
// takes nothing: a client that tries to upload 200 MiB into a backend that
// never reads, and a backend that streams as fast as it can to a client that
// never reads. Backpressure holds the bridge's heap flat: the senders are
// blocked, not buffered for. The bridge, the backend and the client share
// this process, so the heap measured is all of theirs. Not parallel: other
// tests would move the heap.
func TestBackpressureMemory(t *testing.T) {
	const (
		budget    = 3 * time.Second
		maxGrowth = 20 << 20
	)
	// sample returns the largest heap growth over base seen while running
	// is open, sampling every 100 ms.
	sample := func(base int64, running <-chan struct{}) int64 {
		var peak int64
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, heapInUse()-base)
			select {
			case <-running:
				return max(peak, heapInUse()-base)
			case <-tick.C:
			}
		}
	}

	t.Run("client into stalled backend", func(t *testing.T) {
		b := startFaultBackend(t, true)
		cfg := testConfig(b.addr)
		cfg.Backends[0].Descriptors.Files = []string{testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)}
		r := serve(t, Options{Config: cfg})
		r.waitReady(t)
		ctx := testContext(t)

		const total = 200 << 20
		chunk, err := proto.Marshal(&echov1.UploadRequest{Chunk: make([]byte, 64<<10)})
		if err != nil {
			t.Fatal(err)
		}
		// The RPC's deadline is the push's time budget: the writes are
		// blocked when it fires, and it must fire all the same.
		began := time.Now()
		c := dialer{}.mustDial(t, ctx, r.url+"?grpc-timeout="+strconv.Itoa(int(budget/time.Millisecond))+"m", uploadRoute)
		ended := make(chan outcome, 1)
		go func() { ended <- readOutcome(ctx, c) }() // and answers the pings
		base := heapInUse()
		var pushed atomic.Int64
		running := make(chan struct{})
		go func() {
			defer close(running)
			for pushed.Load() < total {
				if err := c.Write(ctx, websocket.MessageBinary, chunk); err != nil {
					return // the RPC ended
				}
				pushed.Add(int64(len(chunk)))
			}
		}()
		growth := sample(base, running)
		o := <-ended
		t.Logf("pushed %.1f MiB of %d MiB before the %v deadline; heap grew at most %.1f MiB", float64(pushed.Load())/(1<<20), total>>20, budget, float64(growth)/(1<<20))
		if pushed.Load() >= total {
			t.Errorf("the client pushed all %d MiB into a backend that reads nothing: no backpressure", total>>20)
		}
		if growth > maxGrowth {
			t.Errorf("heap grew %.1f MiB; want under %d MiB", float64(growth)/(1<<20), maxGrowth>>20)
		}
		if took := o.at.Sub(began); o.end == nil || o.end.GetCode() != 4 || o.close != 4004 || took < budget || took > budget+time.Second {
			t.Errorf("got %v after %v; want DEADLINE_EXCEEDED, close 4004, soon after %v", o, took, budget)
		}
		waitFor(t, "the stalled handler cancelled", func() bool {
			calls := b.stalledCalls()
			return len(calls) == 1 && calls[0].ctxErr != nil && calls[0].hasDeadline
		})
		waitFor(t, "no RPC open", func() bool { return r.openRPCs(t) == "0" })
	})

	t.Run("backend into client that does not read", func(t *testing.T) {
		b := startFaultBackend(t, false)
		r := serve(t, Options{Config: testConfig(b.addr)})
		r.waitReady(t)
		ctx := testContext(t)

		c := dialer{}.mustDial(t, ctx, r.url, tickerRoute)
		c.SetReadLimit(1 << 20)
		base := heapInUse()
		// 32 KiB a message, as fast as the backend can send.
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Message: strings.Repeat("x", 32<<10)})
		running := make(chan struct{})
		time.AfterFunc(budget, func() { close(running) })
		growth := sample(base, running)
		t.Logf("heap grew at most %.1f MiB in %v of a backend streaming to a client that does not read", float64(growth)/(1<<20), budget)
		if growth > maxGrowth {
			t.Errorf("heap grew %.1f MiB; want under %d MiB", float64(growth)/(1<<20), maxGrowth>>20)
		}
		c.CloseNow()
		waitFor(t, "the backend handler cancelled", func() bool { return b.active.Load() == 0 })
		waitFor(t, "no RPC open", func() bool { return r.openRPCs(t) == "0" })
	})
}

// TestDrainSequenced drains the bridge under bidi streams that send
// sequence-numbered messages without pause. Streams that half-close when the
// drain begins finish inside the grace period with every message answered,
// in order. The others are cut with UNAVAILABLE and 1001 after it; what they
// received is an unbroken prefix of what they sent, so no message the bridge
// took was dropped without the client learning of it. A bridge started again
// on the same address serves the clients that reconnect.
func TestDrainSequenced(t *testing.T) {
	t.Parallel()
	b := startBackend(t, false, nil)
	cfg := testConfig(b.addr)
	cfg.Drain.GracePeriod = 300 * time.Millisecond
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	const perGroup = 5
	type result struct {
		finishing bool
		sent      int
		o         outcome
	}
	draining := make(chan struct{})
	results := make([]result, 2*perGroup)
	var wg sync.WaitGroup
	for i := range results {
		finishing := i < perGroup
		c := dialer{}.mustDial(t, ctx, r.url, bidiRoute)
		var sent atomic.Int64
		wg.Go(func() {
			var writer sync.WaitGroup
			writer.Go(func() {
				for seq := 1; seq <= 100_000; seq++ {
					select {
					case <-draining:
						if finishing {
							_ = c.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`))
							return
						}
					default:
					}
					b, _ := proto.Marshal(&echov1.BidiRequest{Message: strconv.Itoa(seq)})
					if c.Write(ctx, websocket.MessageBinary, b) != nil {
						return
					}
					sent.Store(int64(seq))
					time.Sleep(2 * time.Millisecond)
				}
			})
			o := readOutcome(ctx, c)
			writer.Wait()
			results[i] = result{finishing: finishing, sent: int(sent.Load()), o: o}
		})
	}
	time.Sleep(200 * time.Millisecond)
	addr := r.Addr().String()
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	waitFor(t, "draining", func() bool { return r.draining.Load() })
	close(draining)
	wg.Wait()
	if err := <-stopped; err != nil {
		t.Errorf("Serve = %v", err)
	}

	for i, res := range results {
		o := res.o
		// Whatever came back is an unbroken prefix, 1, 2, 3, ..., of what
		// was sent, answered by the backend in the same order.
		for j, m := range o.msgs {
			var bidi echov1.BidiResponse
			if err := proto.Unmarshal(m, &bidi); err != nil || bidi.GetMessage() != strconv.Itoa(j+1) || bidi.GetIndex() != int64(j+1) {
				t.Errorf("stream %d: response %d is %v (%v); want message %d with index %d", i, j+1, &bidi, err, j+1, j+1)
				break
			}
		}
		if len(o.msgs) > res.sent {
			t.Errorf("stream %d: %d responses to %d messages", i, len(o.msgs), res.sent)
		}
		switch {
		case res.finishing:
			if o.end.GetCode() != 0 || o.end == nil || o.close != websocket.StatusNormalClosure || len(o.msgs) != res.sent {
				t.Errorf("stream %d, half-closed as the drain began: %v after sending %d; want OK, 1000, every message answered", i, o, res.sent)
			}
		default:
			if o.end == nil || o.end.GetCode() != 14 || o.close != websocket.StatusGoingAway || o.end.GetMessage() != "grpcws: bridge shutting down" {
				t.Errorf("stream %d, still sending: %v; want UNAVAILABLE \"grpcws: bridge shutting down\", close 1001", i, o)
			}
			if len(o.msgs) == 0 {
				t.Errorf("stream %d: no response before the drain", i)
			}
		}
	}

	// The bridge restarts on the same address: clients reconnect.
	cfg2 := testConfig(b.addr)
	cfg2.Listen.Address = addr
	r2 := serve(t, Options{Config: cfg2})
	r2.waitReady(t)
	c := dialer{}.mustDial(t, ctx, r2.url, bidiRoute)
	v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "1"})
	v1test.Next(t, ctx, c)
	if err := c.Write(ctx, websocket.MessageText, []byte(`#{"endSend":{}}`)); err != nil {
		t.Fatal(err)
	}
	if o := readOutcome(ctx, c); o.end.GetCode() != 0 || o.close != websocket.StatusNormalClosure {
		t.Errorf("after the restart: %v; want OK, 1000", o)
	}
}

// TestStalledBackendBlockedClient pushes into a backend that reads nothing
// until the bridge is blocked sending to it, from a client that answers
// pings. The client must not be closed for the bridge's pings, and when it
// leaves, the backend stream must be cancelled by the next ping, which can
// no longer be written: while upstream is blocked in SendMsg nothing reads
// the client's socket, so a missing pong says nothing, but a failed write
// does.
func TestStalledBackendBlockedClient(t *testing.T) {
	t.Parallel()
	b := startFaultBackend(t, true)
	cfg := testConfig(b.addr)
	cfg.Backends[0].Descriptors.Files = []string{testbackend.WriteDescriptorSet(t, echov1.File_examples_echo_v1_echo_proto)}
	cfg.Limits.PingInterval, cfg.Limits.PingTimeout = time.Second, time.Second
	r := serve(t, Options{Config: cfg})
	r.waitReady(t)
	ctx := testContext(t)

	c := dialer{}.mustDial(t, ctx, r.url, uploadRoute)
	ended := make(chan outcome, 1)
	go func() { ended <- readOutcome(ctx, c) }() // answers the pings
	chunk, err := proto.Marshal(&echov1.UploadRequest{Chunk: make([]byte, 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 1000 { // 64 MiB: far more than the flow-control windows
			if c.Write(ctx, websocket.MessageBinary, chunk) != nil {
				return
			}
		}
	}()
	select {
	case o := <-ended:
		t.Fatalf("a client answering pings was closed: %v", o)
	case <-time.After(4 * time.Second): // past a ping interval and timeout
	}
	left := time.Now()
	c.CloseNow()
	<-ended
	waitFor(t, "the stalled handler cancelled", func() bool {
		calls := b.stalledCalls()
		return len(calls) == 1 && calls[0].ctxErr != nil
	})
	if took := time.Since(left); took > 2*time.Second {
		t.Errorf("the backend stream was cancelled %v after the client left; want within a ping interval and timeout (2s)", took)
	}
}
