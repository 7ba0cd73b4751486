package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/benchmark"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// How well the streams of one multiplexed socket are kept apart: a large
// message on one stream must not hold back the small ones of another
// (headOfLine), and a stream whose reader stalls must not slow the others
// (stalledReader). Both alternate a run with the disturbance and one
// without, on a fresh socket each, within every round.

// bigMessage is the payload of the large messages: 4 MiB less 256 bytes,
// so that with their protobuf envelope they fit the 4 MiB message limit of
// gRPC and of the bridge.
const bigMessage = 4<<20 - 256

// holResult is what headOfLine measured.
type holResult struct {
	alone, loaded []time.Duration // 64 B round trips, sorted
	bigRoundTrips int             // 4 MiB round trips during the loaded runs
	bigTime       time.Duration   // the loaded runs' windows, together
}

// headOfLine measures 64 B ping-pong on a stream alone on its socket, and
// while another stream of the same socket does ping-pong with 4 MiB
// messages each way.
// When profile is not nil, it profiles the bridge during each loaded run.
func headOfLine(ctx context.Context, addr string, rounds int, d time.Duration, profile func(round int) func() error) (holResult, error) {
	var r holResult
	small, err := proto.Marshal(request(64))
	if err != nil {
		return r, err
	}
	big, err := proto.Marshal(request(bigMessage))
	if err != nil {
		return r, err
	}
	for round := range rounds {
		for _, loaded := range []bool{false, true} {
			profiled := func() error { return nil }
			if loaded && profile != nil {
				profiled = profile(round)
			}
			lat, n, err := holRun(ctx, addr, small, big, loaded, d)
			if perr := profiled(); err == nil {
				err = perr
			}
			if err != nil {
				return r, err
			}
			if loaded {
				r.loaded = append(r.loaded, lat...)
				r.bigRoundTrips += n
				r.bigTime += d
			} else {
				r.alone = append(r.alone, lat...)
			}
		}
	}
	slices.Sort(r.alone)
	slices.Sort(r.loaded)
	return r, nil
}

// holRun is one run of headOfLine on a socket of its own.
func holRun(ctx context.Context, addr string, small, big []byte, loaded bool, d time.Duration) ([]time.Duration, int, error) {
	m, err := dialMux(ctx, addr)
	if err != nil {
		return nil, 0, err
	}
	defer m.close()
	start := time.Now().Add(warmup)
	end := start.Add(d)
	ctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
	defer cancel()

	var (
		bigRTs  int
		bigErr  error
		bigDone = make(chan struct{})
	)
	if !loaded {
		close(bigDone)
	} else {
		b, err := m.open(route, nil)
		if err != nil {
			return nil, 0, err
		}
		defer b.close()
		go func() {
			defer close(bigDone)
			for time.Now().Before(end) {
				if _, bigErr = b.roundTrip(ctx, big); bigErr != nil {
					return
				}
				bigRTs++
			}
		}()
	}
	s, err := m.open(route, nil)
	if err != nil {
		return nil, 0, err
	}
	defer s.close()
	var lat []time.Duration
	for {
		t0 := time.Now()
		if !t0.Before(end) {
			break
		}
		if _, err := s.roundTrip(ctx, small); err != nil {
			return nil, 0, fmt.Errorf("64 B stream: %w", err)
		}
		if t1 := time.Now(); !t0.Before(start) && len(lat) < maxSamples {
			lat = append(lat, t1.Sub(t0))
		}
	}
	<-bigDone
	if bigErr != nil {
		return nil, 0, fmt.Errorf("4 MiB stream: %w", bigErr)
	}
	return lat, bigRTs, nil
}

// stallResult is what stalledReader measured: the throughput of a stream
// that the client reads, in bytes per second, per run.
type stallResult struct {
	alone, stalled []float64
	filled         []int64 // what the stalled stream took before it stopped, per run
}

// stalledReader measures the throughput of a server stream the client reads
// as fast as it can (4 KiB messages), alone on its socket and with a
// second stream on the same socket that the client never reads, once that
// stream's window is full.
func stalledReader(ctx context.Context, addr string, rounds int, d time.Duration) (stallResult, error) {
	var r stallResult
	for range rounds {
		for _, stall := range []bool{false, true} {
			rate, filled, err := stallRun(ctx, addr, stall, d)
			if err != nil {
				return r, err
			}
			if stall {
				r.stalled = append(r.stalled, rate)
				r.filled = append(r.filled, filled)
			} else {
				r.alone = append(r.alone, rate)
			}
		}
	}
	return r, nil
}

// openFlood opens a stream on which the backend sends messages of size
// bytes without pause until it is cancelled (grpc-go's unconstrained
// streaming mode of StreamingCall).
func openFlood(m *muxSocket, size int) (*muxStream, error) {
	req := request(0)
	req.ResponseSize = int32(size)
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	s, err := m.open(route, metadata.Pairs(benchmark.UnconstrainedStreamingHeader, "1"))
	if err != nil {
		return nil, err
	}
	if err := s.send(b); err != nil {
		return nil, err
	}
	return s, nil
}

// stallRun is one run of stalledReader on a socket of its own.
func stallRun(ctx context.Context, addr string, stall bool, d time.Duration) (rate float64, filled int64, err error) {
	m, err := dialMux(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	defer m.close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second+d)
	defer cancel()
	if stall {
		st, err := openFlood(m, 64<<10)
		if err != nil {
			return 0, 0, err
		}
		// Cancelled, never half-closed: the backend's unconstrained mode
		// takes only a cancel as the end.
		defer st.cancel()
		// Wait until the stream's window is full and it stands still.
		window := int64(m.ours.StreamWindow)
		for deadline := time.Now().Add(5 * time.Second); st.receivedBytes() < window; {
			if time.Now().After(deadline) {
				return 0, 0, fmt.Errorf("stalled stream: %d bytes after 5s; want its window, %d", st.receivedBytes(), window)
			}
			time.Sleep(10 * time.Millisecond)
		}
		defer func() {
			if filled = st.receivedBytes(); filled > window && err == nil {
				err = fmt.Errorf("stalled stream: %d bytes arrived, over its window of %d", filled, window)
			}
		}()
	}
	f, err := openFlood(m, 4096)
	if err != nil {
		return 0, 0, err
	}
	defer f.cancel()
	var (
		got     atomic.Int64
		readErr error
		done    = make(chan struct{})
	)
	start := time.Now().Add(warmup)
	end := start.Add(d)
	go func() {
		defer close(done)
		for time.Now().Before(end) {
			n, err := f.recv(ctx)
			if err != nil {
				readErr = err
				return
			}
			got.Add(int64(n))
		}
	}()
	time.Sleep(time.Until(start))
	n0 := got.Load()
	time.Sleep(time.Until(end))
	n1 := got.Load()
	<-done
	if readErr != nil {
		return 0, 0, fmt.Errorf("flood stream: %w", readErr)
	}
	return float64(n1-n0) / d.Seconds(), 0, nil
}

// isolation runs both measurements and prints them with their targets.
func isolation(ctx context.Context, e *env, o options, w io.Writer) error {
	fmt.Fprintf(w, "isolation on one multiplexed socket, %d rounds of %v, with and without the disturbance alternating\n", o.rounds, o.duration)
	var profile func(int) func() error
	if o.profile != "" {
		profile = func(round int) func() error {
			return e.profile(ctx, warmup, o.duration, filepath.Join(o.profile, fmt.Sprintf("hol-4MiB-r%d.pprof", round+1)))
		}
	}
	hol, err := headOfLine(ctx, e.bridge.Addr, o.rounds, o.duration, profile)
	if err != nil {
		return fmt.Errorf("head of line: %w", err)
	}
	fmt.Fprintf(w, "  64 B ping-pong alone:                  p50 %v, p99 %v, max %v (%d round trips)\n",
		round(percentile(hol.alone, 0.5)), round(percentile(hol.alone, 0.99)), round(percentile(hol.alone, 1)), len(hol.alone))
	fmt.Fprintf(w, "  64 B ping-pong beside 4 MiB ping-pong: p50 %v, p99 %v, max %v (%d round trips); the 4 MiB stream: %.1f round trips/s, %.0f MiB/s each way\n",
		round(percentile(hol.loaded, 0.5)), round(percentile(hol.loaded, 0.99)), round(percentile(hol.loaded, 1)), len(hol.loaded),
		float64(hol.bigRoundTrips)/hol.bigTime.Seconds(), float64(hol.bigRoundTrips)*bigMessage/hol.bigTime.Seconds()/(1<<20))
	st, err := stalledReader(ctx, e.bridge.Addr, o.rounds, o.duration)
	if err != nil {
		return fmt.Errorf("stalled reader: %w", err)
	}
	mibs := func(v []float64) string {
		s := make([]string, len(v))
		for i, x := range v {
			s[i] = fmt.Sprintf("%.0f", x/(1<<20))
		}
		return fmt.Sprint(s)
	}
	fmt.Fprintf(w, "  server stream of 4 KiB messages, read: alone %s MiB/s, beside a stalled stream %s MiB/s (the stalled one took %v bytes, its window)\n",
		mibs(st.alone), mibs(st.stalled), st.filled)
	fmt.Fprintln(w)
	printTargetHeader(w)
	check(w, "64 B p99 beside a 4 MiB stream on the same socket", float64(percentile(hol.loaded, 0.99))/float64(time.Millisecond), "ms", 5, true)
	check(w, "throughput beside a stalled stream ÷ alone", median(st.stalled)/median(st.alone), "", 0.9, false)
	fmt.Fprintln(w)
	return nil
}
