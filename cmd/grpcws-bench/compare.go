package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
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
	backendCPU time.Duration
	clientCPU  time.Duration // the load generator's: this process
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

// warmup is the time every measurement runs before it counts.
const warmup = 200 * time.Millisecond

// measure runs ping-pong on every stream for a warm-up and then d, and
// counts the round trips that started and ended within the window.
func measure(ctx context.Context, e *env, ps []pinger, d time.Duration) (measurement, error) {
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
	pids := []int{e.bridge.Pid(), e.backend.Pid(), os.Getpid()}
	time.Sleep(time.Until(start))
	cpu0, err := cpuTimes(pids)
	if err != nil {
		return m, err
	}
	time.Sleep(time.Until(end))
	cpu1, err := cpuTimes(pids)
	if err != nil {
		return m, err
	}
	wg.Wait()
	m.roundTrips = len(m.latencies)
	m.elapsed = d
	m.bridgeCPU, m.backendCPU, m.clientCPU = cpu1[0]-cpu0[0], cpu1[1]-cpu0[1], cpu1[2]-cpu0[2]
	return m, firstEr
}

func cpuTimes(pids []int) ([]time.Duration, error) {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		var err error
		if out[i], err = procstat.CPUTime(pid); err != nil {
			return nil, err
		}
	}
	return out, nil
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
	backendRT []float64 // µs, the backend's CPU per round trip
	clientRT  []float64 // µs, the load generator's
	latencies []time.Duration
	counts    muxCounts // of the multiplexed sockets, over their lives
}

func (r *result) add(m measurement) {
	perRT := func(d time.Duration) float64 {
		return float64(d) / float64(max(m.roundTrips, 1)) / float64(time.Microsecond)
	}
	r.rates = append(r.rates, m.rate())
	r.cpuPerRT = append(r.cpuPerRT, float64(m.cpuPerRoundTrip())/float64(time.Microsecond))
	r.backendRT = append(r.backendRT, perRT(m.backendCPU))
	r.clientRT = append(r.clientRT, perRT(m.clientCPU))
	r.latencies = append(r.latencies, m.latencies...)
}

// A mode is one way of reaching the backend: open opens n ping-pong
// streams of size bytes, and done closes them (and returns the counts of
// a multiplexed socket).
type mode struct {
	name string
	open func(ctx context.Context, e *env, n, size int) (ps []pinger, done func() muxCounts, err error)
}

// separately opens each stream with open, as direct gRPC and protocol v1
// do (v1: a WebSocket per stream).
func separately(open openFunc) func(context.Context, *env, int, int) ([]pinger, func() muxCounts, error) {
	return func(ctx context.Context, e *env, n, size int) ([]pinger, func() muxCounts, error) {
		ps, err := openAll(ctx, e, open, n, size)
		if err != nil {
			return nil, nil, err
		}
		return ps, func() muxCounts { closeAll(ps); return muxCounts{} }, nil
	}
}

var (
	modeDirect = mode{"direct", separately(openDirect)}
	modeV1     = mode{"bridged", separately(openBridged)}
	modeMux    = mode{"mux", openMuxAll} // every stream on one socket
)

// compare runs ping-pong in each of modes, alternating within each round,
// and prints the tables and the targets of the modes measured. modes
// starts with modeDirect, against which the others are compared.
func compare(ctx context.Context, e *env, o options, modes []mode, w io.Writer) error {
	configs := []config{{1, 64}, {16, 64}, {128, 64}, {1, 4096}, {16, 4096}, {128, 4096}}
	res := make(map[string][]result, len(modes))
	names := make([]string, len(modes))
	for i, m := range modes {
		res[m.name] = make([]result, len(configs))
		names[i] = m.name
	}
	fmt.Fprintf(w, "ping-pong on grpc.testing.BenchmarkService/StreamingCall, %d rounds of %v, %s alternating\n",
		o.rounds, o.duration, strings.Join(names, ", "))
	for round := range o.rounds {
		for i, c := range configs {
			for _, m := range modes {
				ps, done, err := m.open(ctx, e, c.streams, c.size)
				if err != nil {
					return fmt.Errorf("%s: open %d streams: %w", m.name, c.streams, err)
				}
				file := ""
				if o.profile != "" && m.name != modeDirect.name && c == (config{128, 64}) {
					file = filepath.Join(o.profile, fmt.Sprintf("%s-128x64B-r%d.pprof", m.name, round+1))
				}
				profiled := e.profile(ctx, warmup, o.duration, file)
				meas, err := measure(ctx, e, ps, o.duration)
				res[m.name][i].counts.add(done())
				if perr := profiled(); err == nil {
					err = perr
				}
				if err != nil {
					return fmt.Errorf("%s: %d streams of %d B: %w", m.name, c.streams, c.size, err)
				}
				res[m.name][i].add(meas)
			}
		}
		fmt.Fprintf(w, "  round %d of %d done\n", round+1, o.rounds)
	}
	for _, r := range res {
		for i := range r {
			slices.Sort(r[i].latencies)
		}
	}
	idx := func(streams, size int) int { return slices.Index(configs, config{streams, size}) }
	direct, bridged, mux := res[modeDirect.name], res[modeV1.name], res[modeMux.name]

	if bridged != nil {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "streams\tsize\tdirect rt/s\tbridged rt/s\tratio\tdirect p50\tbridged p50\tp50 ×\tdirect p99\tbridged p99\tbridge CPU/rt\t")
		for i, c := range configs {
			d, b := direct[i], bridged[i]
			dp50, bp50 := percentile(d.latencies, 0.5), percentile(b.latencies, 0.5)
			fmt.Fprintf(tw, "%d\t%d B\t%.0f\t%.0f\t%.2f\t%v\t%v\t%.2f\t%v\t%v\t%.1f µs\t\n",
				c.streams, c.size, median(d.rates), median(b.rates), median(b.rates)/median(d.rates),
				round(dp50), round(bp50), float64(bp50)/float64(dp50),
				round(percentile(d.latencies, 0.99)), round(percentile(b.latencies, 0.99)), median(b.cpuPerRT))
		}
		tw.Flush()
	}
	if mux != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "multiplexed (grpcws.mux.v1): every stream of a configuration on one socket")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "streams\tsize\tdirect rt/s\tv1 rt/s\tmux rt/s\tmux ÷ direct\tv1 ÷ direct\tdirect p50\tv1 p50\tmux p50\tdirect p99\tv1 p99\tmux p99\tv1 CPU/rt\tmux CPU/rt\tframes/msg in\tout\t")
		for i, c := range configs {
			d, x := direct[i], mux[i]
			v1rate, v1ratio, v1p50, v1p99, v1cpu := "-", "-", "-", "-", "-"
			if bridged != nil {
				b := bridged[i]
				v1rate = fmt.Sprintf("%.0f", median(b.rates))
				v1ratio = fmt.Sprintf("%.2f", median(b.rates)/median(d.rates))
				v1p50 = round(percentile(b.latencies, 0.5)).String()
				v1p99 = round(percentile(b.latencies, 0.99)).String()
				v1cpu = fmt.Sprintf("%.1f µs", median(b.cpuPerRT))
			}
			fmt.Fprintf(tw, "%d\t%d B\t%.0f\t%s\t%.0f\t%.2f\t%s\t%v\t%s\t%v\t%v\t%s\t%v\t%s\t%.1f µs\t%.1f\t%.1f\t\n",
				c.streams, c.size, median(d.rates), v1rate, median(x.rates), median(x.rates)/median(d.rates), v1ratio,
				round(percentile(d.latencies, 0.5)), v1p50, round(percentile(x.latencies, 0.5)),
				round(percentile(d.latencies, 0.99)), v1p99, round(percentile(x.latencies, 0.99)),
				v1cpu, median(x.cpuPerRT),
				float64(x.counts.inFrames)/float64(max(1, x.counts.inMessages)), float64(x.counts.outFrames)/float64(max(1, x.counts.outMessages)))
		}
		tw.Flush()
	}

	// Where the CPU goes: on two shared cores, throughput is about the
	// cores divided by the CPU all three processes spend per round trip.
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU per round trip by process, 128 streams (medians of the rounds)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tsize\tload generator\tbridge\tbackend\ttotal\t")
	for _, m := range modes {
		for _, size := range []int{64, 4096} {
			r := res[m.name][idx(128, size)]
			bridge := median(r.cpuPerRT) // about 0 for direct: idle
			fmt.Fprintf(tw, "%s\t%d B\t%.1f µs\t%.1f µs\t%.1f µs\t%.1f µs\t\n", m.name, size,
				median(r.clientRT), bridge, median(r.backendRT), median(r.clientRT)+bridge+median(r.backendRT))
		}
	}
	tw.Flush()

	// The targets, from the same run.
	fmt.Fprintln(w)
	printTargetHeader(w)
	if bridged != nil {
		cpu := func(size int) float64 {
			worst := 0.0
			for i, c := range configs {
				if c.size == size && c.streams >= 16 {
					worst = max(worst, median(bridged[i].cpuPerRT))
				}
			}
			return worst
		}
		ratio128 := median(bridged[idx(128, 64)].rates) / median(direct[idx(128, 64)].rates)
		one := idx(1, 64)
		p50 := float64(percentile(bridged[one].latencies, 0.5)) / float64(percentile(direct[one].latencies, 0.5))
		check(w, "bridge CPU per round trip, 64 B, 16+ streams", cpu(64), "µs", 30, true)
		check(w, "bridge CPU per round trip, 4 KiB, 16+ streams", cpu(4096), "µs", 70, true)
		check(w, "round trips per second, bridged ÷ direct, 64 B, 128", ratio128, "", 0.5, false)
		check(w, "p50 latency, bridged ÷ direct, 64 B, 1 stream", p50, "×", 1.5, true)
	}
	if mux != nil {
		i := idx(128, 64)
		check(w, "bridge CPU per round trip, mux, 64 B, 128 streams, 1 socket", median(mux[i].cpuPerRT), "µs", 12, true)
		check(w, "round trips per second, mux ÷ direct, 64 B, 128 streams", median(mux[i].rates)/median(direct[i].rates), "", 0.6, false)
	}
	fmt.Fprintln(w)
	return nil
}

func printTargetHeader(w io.Writer) {
	fmt.Fprintf(w, "%-64s %10s   %-9s %v\n", "target", "measured", "target", "met")
}

// check prints one target line: below says the figure must be at most
// target, else at least.
func check(w io.Writer, name string, v float64, unit string, target float64, below bool) {
	met, cmp := v <= target, "≤"
	if !below {
		met, cmp = v >= target, "≥"
	}
	fmt.Fprintf(w, "%-64s %7.2f%-3s %s %-7.3g %v\n", name, v, unit, cmp, target, met)
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Millisecond:
		return d.Round(10 * time.Microsecond)
	default:
		return d.Round(time.Microsecond)
	}
}
