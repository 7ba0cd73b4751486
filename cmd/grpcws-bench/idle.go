package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpcws/grpcws/internal/procstat"
)

// idle opens n bridged streams, each after one round trip left idle, and
// reports the bridge's resident memory per stream.
func idle(ctx context.Context, e *env, n int, w io.Writer) error {
	pid := e.bridge.Pid()
	settle := func() { time.Sleep(2 * time.Second) }
	settle()
	before, err := procstat.RSS(pid)
	if err != nil {
		return err
	}
	t0 := time.Now()
	ps, err := openAll(ctx, e, openBridged, n, 64)
	if err != nil {
		return fmt.Errorf("idle: %w", err)
	}
	opened := time.Since(t0)
	settle()
	after, err := procstat.RSS(pid)
	closeAll(ps)
	if err != nil {
		return err
	}
	per := float64(after-before) / float64(n) / 1024
	fmt.Fprintf(w, "idle: %d streams opened in %v; bridge RSS %.1f MiB → %.1f MiB: %.1f KiB per idle stream (target ≤ 24 KiB: %v)\n\n",
		n, opened.Round(time.Millisecond), float64(before)/(1<<20), float64(after)/(1<<20), per, per <= 24)
	return nil
}

// scale holds n bridged streams for d, sending one message on each every
// few seconds, and reports failures, latency and memory.
func scale(ctx context.Context, e *env, n int, d time.Duration, w io.Writer) error {
	const every = 5 * time.Second
	t0 := time.Now()
	ps, err := openAll(ctx, e, openBridged, n, 64)
	if err != nil {
		return fmt.Errorf("scale: open: %w", err)
	}
	defer closeAll(ps)
	fmt.Fprintf(w, "scale: %d streams open after %v; each sends one message every %v for %v\n", n, time.Since(t0).Round(time.Millisecond), every, d)

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		ok, fail atomic.Int64
	)
	end := time.Now().Add(d)
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now().Add(time.Duration(rand.Int64N(int64(every)))) // spread the load
			for {
				if !next.Before(end) {
					return
				}
				time.Sleep(time.Until(next))
				next = next.Add(every)
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t := time.Now()
				err := p.roundTrip(rctx)
				cancel()
				if err != nil {
					fail.Add(1)
					return // the stream is gone
				}
				ok.Add(1)
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	mem, err := procstat.RSS(e.bridge.Pid())
	if err != nil {
		return err
	}
	slices.Sort(lat)
	fmt.Fprintf(w, "scale: %d round trips, %d failures; p50 %v, p99 %v; bridge RSS %.1f MiB (%.1f KiB per stream)\n\n",
		ok.Load(), fail.Load(), round(percentile(lat, 0.5)), round(percentile(lat, 0.99)),
		float64(mem)/(1<<20), float64(mem)/float64(n)/1024)
	if fail.Load() > 0 {
		return fmt.Errorf("scale: %d streams failed", fail.Load())
	}
	return nil
}

// idleMux opens n multiplexed streams spread over sockets sockets, each
// after one round trip left idle, and reports the bridge's resident memory
// per stream, as idle does for protocol v1. It measures a bridge started
// for it, so that no memory freed by what ran before is reused.
//
// With profile, a directory, it also counts the bridge's goroutines per
// stream and writes a goroutine and a heap profile of the bridge holding
// the streams.
func idleMux(ctx context.Context, e *env, n, sockets int, profile string, w io.Writer) error {
	if err := e.restartBridge(ctx); err != nil {
		return err
	}
	pid := e.bridge.Pid()
	settle := func() { time.Sleep(2 * time.Second) }
	settle()
	before, err := procstat.RSS(pid)
	if err != nil {
		return err
	}
	var (
		g0 int
		m0 map[string]float64
	)
	if profile != "" {
		if g0, err = e.goroutines(ctx, ""); err != nil {
			return err
		}
		if m0, err = e.bridge.Metrics(ctx, http.DefaultClient); err != nil {
			return err
		}
	}
	t0 := time.Now()
	ms := make([]*muxSocket, 0, sockets)
	defer func() {
		for _, m := range ms {
			m.close()
		}
	}()
	for range sockets {
		m, err := dialMux(ctx, e.bridge.Addr)
		if err != nil {
			return fmt.Errorf("idle mux: %w", err)
		}
		ms = append(ms, m)
	}
	var next atomic.Int64
	ps, err := openAll(ctx, e, func(ctx context.Context, e *env, size int) (pinger, error) {
		return openOnMux(ms[next.Add(1)%int64(sockets)])(ctx, e, size)
	}, n, 64)
	if err != nil {
		return fmt.Errorf("idle mux: %w", err)
	}
	opened := time.Since(t0)
	settle()
	after, err := procstat.RSS(pid)
	if err == nil && profile != "" {
		var g1 int
		var m1 map[string]float64
		if m1, err = e.bridge.Metrics(ctx, http.DefaultClient); err != nil {
			return err
		}
		per := func(name string) float64 { return (m1[name] - m0[name]) / float64(n) / 1024 }
		if g1, err = e.goroutines(ctx, filepath.Join(profile, "idle-mux-goroutines.txt")); err == nil {
			fmt.Fprintf(w, "idle mux: bridge goroutines %d → %d: %.2f per idle stream; per idle stream %.1f KiB of goroutine stacks, %.1f KiB of heap in use (%.1f KiB live)\n",
				g0, g1, float64(g1-g0)/float64(n), per("go_memstats_stack_inuse_bytes"), per("go_memstats_heap_inuse_bytes"), per("go_memstats_heap_alloc_bytes"))
			var heap []byte
			if heap, err = e.debug(ctx, "heap?gc=1"); err == nil {
				err = os.WriteFile(filepath.Join(profile, "idle-mux-heap.pprof"), heap, 0o644)
			}
		}
	}
	closeAll(ps)
	if err != nil {
		return err
	}
	per := float64(after-before) / float64(n) / 1024
	fmt.Fprintf(w, "idle mux: %d streams over %d sockets opened in %v; bridge RSS %.1f MiB → %.1f MiB: %.1f KiB per idle stream (target ≤ 8 KiB: %v)\n\n",
		n, sockets, opened.Round(time.Millisecond), float64(before)/(1<<20), float64(after)/(1<<20), per, per <= 8)
	return nil
}
