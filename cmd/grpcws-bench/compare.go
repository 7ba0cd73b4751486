package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/internal/procstat"
	"github.com/grpcws/grpcws/internal/v1wire"
)

const route = "grpc.testing.BenchmarkService.StreamingCall"

// A pinger does one ping-pong round trip on an open stream.
type pinger interface {
	roundTrip(ctx context.Context) error
	close()
}

func request(size int) *testgrpc.SimpleRequest {
	return &testgrpc.SimpleRequest{
		ResponseType: testgrpc.PayloadType_COMPRESSABLE,
		ResponseSize: int32(size),
		Payload:      &testgrpc.Payload{Body: make([]byte, size)},
	}
}

// directStream is a gRPC stream straight to the backend.
type directStream struct {
	cancel context.CancelFunc
	stream testgrpc.BenchmarkService_StreamingCallClient
	req    *testgrpc.SimpleRequest
	res    testgrpc.SimpleResponse
}

func openDirect(ctx context.Context, e *env, size int) (pinger, error) {
	ctx, cancel := context.WithCancel(ctx)
	s, err := testgrpc.NewBenchmarkServiceClient(e.direct).StreamingCall(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	return &directStream{cancel: cancel, stream: s, req: request(size)}, nil
}

func (d *directStream) roundTrip(context.Context) error {
	if err := d.stream.Send(d.req); err != nil {
		return err
	}
	return d.stream.RecvMsg(&d.res)
}

func (d *directStream) close() {
	_ = d.stream.CloseSend()
	d.cancel()
}

// bridgedStream is one WebSocket to the bridge, speaking protocol v1 in
// the binary encoding.
type bridgedStream struct {
	conn *websocket.Conn
	req  []byte
}

func openBridged(ctx context.Context, e *env, size int) (pinger, error) {
	conn, _, err := websocket.Dial(ctx, "ws://"+e.bridge.Addr+"/", &websocket.DialOptions{
		Subprotocols:    []string{route},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	req, err := proto.Marshal(request(size))
	if err != nil {
		conn.CloseNow()
		return nil, err
	}
	return &bridgedStream{conn: conn, req: req}, nil
}

func (b *bridgedStream) roundTrip(ctx context.Context) error {
	if err := b.conn.Write(ctx, websocket.MessageBinary, b.req); err != nil {
		return err
	}
	for {
		typ, _, err := b.conn.Read(ctx)
		if err != nil {
			return err
		}
		if typ == websocket.MessageBinary {
			return nil
		}
		// the headers frame, before the first response
	}
}

func (b *bridgedStream) close() {
	_ = b.conn.Write(context.Background(), websocket.MessageText, v1wire.EndSend)
	b.conn.CloseNow()
}

type openFunc func(context.Context, *env, int) (pinger, error)

// openAll opens n streams, at most 64 at a time.
func openAll(ctx context.Context, e *env, open openFunc, n, size int) ([]pinger, error) {
	out := make([]pinger, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	sem := make(chan struct{}, 64)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p, err := open(ctx, e, size)
			if err == nil {
				// One round trip, so the backend stream is open.
				err = p.roundTrip(ctx)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			out[i] = p
		}()
	}
	wg.Wait()
	if first != nil {
		closeAll(out)
		return nil, first
	}
	return out, nil
}

func closeAll(ps []pinger) {
	for _, p := range ps {
		if p != nil {
			p.close()
		}
	}
}

// measurement is one run of one mode on one configuration.
type measurement struct {
	roundTrips int
	elapsed    time.Duration
	bridgeCPU  time.Duration
	latencies  []time.Duration
}

func (m measurement) rate() float64 { return float64(m.roundTrips) / m.elapsed.Seconds() }

func (m measurement) cpuPerRoundTrip() time.Duration {
	if m.roundTrips == 0 {
		return 0
	}
	return m.bridgeCPU / time.Duration(m.roundTrips)
}

// maxSamples bounds the latencies one stream keeps.
const maxSamples = 1 << 20

// measure runs ping-pong on every stream for a warm-up and then d, and
// counts the round trips that started and ended within the window.
func measure(ctx context.Context, e *env, ps []pinger, d time.Duration) (measurement, error) {
	const warmup = 200 * time.Millisecond
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		m       measurement
		firstEr error
	)
	start := time.Now().Add(warmup)
	end := start.Add(d)
	ctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := p.roundTrip(ctx); err != nil {
					mu.Lock()
					if firstEr == nil {
						firstEr = err
					}
					mu.Unlock()
					return
				}
				if t1 := time.Now(); !t0.Before(start) && !t1.After(end) && len(lat) < maxSamples {
					lat = append(lat, t1.Sub(t0))
				}
			}
			mu.Lock()
			m.latencies = append(m.latencies, lat...)
			mu.Unlock()
		}()
	}
	time.Sleep(time.Until(start))
	cpu0, err := procstat.CPUTime(e.bridge.Pid())
	if err != nil {
		return m, err
	}
	time.Sleep(time.Until(end))
	cpu1, err := procstat.CPUTime(e.bridge.Pid())
	if err != nil {
		return m, err
	}
	wg.Wait()
	m.roundTrips = len(m.latencies)
	m.elapsed = d
	m.bridgeCPU = cpu1 - cpu0
	return m, firstEr
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}

type config struct{ streams, size int }

// result holds every round of one configuration in one mode.
type result struct {
	rates     []float64
	cpuPerRT  []float64 // µs, bridge CPU per round trip (bridged only)
	latencies []time.Duration
}

func (r *result) add(m measurement) {
	r.rates = append(r.rates, m.rate())
	r.cpuPerRT = append(r.cpuPerRT, float64(m.cpuPerRoundTrip())/float64(time.Microsecond))
	r.latencies = append(r.latencies, m.latencies...)
}

func compare(ctx context.Context, e *env, o options, w io.Writer) error {
	configs := []config{{1, 64}, {16, 64}, {128, 64}, {1, 4096}, {16, 4096}, {128, 4096}}
	direct := make([]result, len(configs))
	bridged := make([]result, len(configs))
	fmt.Fprintf(w, "ping-pong on grpc.testing.BenchmarkService/StreamingCall, %d rounds of %v, direct and bridged alternating\n", o.rounds, o.duration)
	for round := range o.rounds {
		for i, c := range configs {
			for _, mode := range []struct {
				open openFunc
				res  *result
			}{{openDirect, &direct[i]}, {openBridged, &bridged[i]}} {
				ps, err := openAll(ctx, e, mode.open, c.streams, c.size)
				if err != nil {
					return fmt.Errorf("open %d streams: %w", c.streams, err)
				}
				m, err := measure(ctx, e, ps, o.duration)
				closeAll(ps)
				if err != nil {
					return fmt.Errorf("%d streams of %d B: %w", c.streams, c.size, err)
				}
				mode.res.add(m)
			}
		}
		fmt.Fprintf(w, "  round %d of %d done\n", round+1, o.rounds)
	}

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "streams\tsize\tdirect rt/s\tbridged rt/s\tratio\tdirect p50\tbridged p50\tp50 ×\tdirect p99\tbridged p99\tbridge CPU/rt\t")
	for i, c := range configs {
		d, b := direct[i], bridged[i]
		slices.Sort(d.latencies)
		slices.Sort(b.latencies)
		dp50, bp50 := percentile(d.latencies, 0.5), percentile(b.latencies, 0.5)
		fmt.Fprintf(tw, "%d\t%d B\t%.0f\t%.0f\t%.2f\t%v\t%v\t%.2f\t%v\t%v\t%.1f µs\t\n",
			c.streams, c.size, median(d.rates), median(b.rates), median(b.rates)/median(d.rates),
			round(dp50), round(bp50), float64(bp50)/float64(dp50),
			round(percentile(d.latencies, 0.99)), round(percentile(b.latencies, 0.99)), median(b.cpuPerRT))
	}
	tw.Flush()

	// The targets, from the same run.
	cpu := func(size int) float64 {
		worst := 0.0
		for i, c := range configs {
			if c.size == size && c.streams >= 16 {
				worst = max(worst, median(bridged[i].cpuPerRT))
			}
		}
		return worst
	}
	idx := func(streams, size int) int { return slices.Index(configs, config{streams, size}) }
	ratio128 := median(bridged[idx(128, 64)].rates) / median(direct[idx(128, 64)].rates)
	one := idx(1, 64)
	p50 := float64(percentile(bridged[one].latencies, 0.5)) / float64(percentile(direct[one].latencies, 0.5))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "target                                                measured   target     met")
	check := func(name string, v float64, unit string, target float64, below bool) {
		met := v <= target
		if !below {
			met = v >= target
		}
		cmp := "≤"
		if !below {
			cmp = "≥"
		}
		fmt.Fprintf(w, "%-53s %7.2f%-3s %s %-7.2g %v\n", name, v, unit, cmp, target, met)
	}
	check("bridge CPU per round trip, 64 B, 16+ streams", cpu(64), "µs", 30, true)
	check("bridge CPU per round trip, 4 KiB, 16+ streams", cpu(4096), "µs", 70, true)
	check("round trips per second, bridged ÷ direct, 64 B, 128", ratio128, "", 0.5, false)
	check("p50 latency, bridged ÷ direct, 64 B, 1 stream", p50, "×", 1.5, true)
	fmt.Fprintln(w)
	return nil
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
