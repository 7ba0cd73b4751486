// Command grpcws-bench measures what the bridge costs on top of the gRPC
// calls it carries. It starts grpc-go's benchmark service and the grpcws
// binary as separate processes on 127.0.0.1, drives both directly (gRPC) and
// through the bridge, alternating the modes in the same run, and prints
// ratios, latencies and the bridge's own CPU time per round trip. Through
// the bridge it speaks raw protocol v1 (one WebSocket per stream, binary
// frames, no compression, as a browser would) and grpcws.mux.v1 (every
// stream of a configuration on one WebSocket, mux.go). Every loop is
// bounded in time and count.
//
//	grpcws-bench -bridge bin/grpcws            # the short run, about 2 minutes
//	grpcws-bench -bridge bin/grpcws -full      # longer rounds, idle 10,000, scale 15,000
//	grpcws-bench -bridge bin/grpcws -only mux  # the multiplexed parts alone
//	grpcws-bench backend -listen 127.0.0.1:0   # the backend alone (used by the above)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/grpcws/grpcws/internal/proc"

	"google.golang.org/grpc/benchmark"
)

func main() { proc.Main("grpcws-bench", run, runBackend) }

// runBackend serves grpc-go's benchmark service until ctx is done.
func runBackend(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("backend", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	stopServer := benchmark.StartServer(benchmark.ServerInfo{Type: "protobuf", Listener: lis})
	defer stopServer()
	fmt.Fprintf(stdout, "backend listening on %s\n", lis.Addr())
	<-ctx.Done()
	return nil
}

type options struct {
	bridge         string
	full           bool
	rounds         int
	duration       time.Duration
	idle           int
	muxIdle        int
	muxIdleSockets int
	scale          int
	scaleTime      time.Duration
	only           map[string]bool // the parts to run; empty: all
	extra          string
	profile        string // a directory for CPU profiles of the bridge
}

// parts are the values of -only.
var parts = []string{"compare", "idle", "scale", "mux", "isolation"}

// runs reports whether the run includes part: -only names it, or one of
// also, or is empty.
func (o options) runs(part string, also ...string) bool {
	if len(o.only) == 0 || o.only[part] {
		return true
	}
	for _, p := range also {
		if o.only[p] {
			return true
		}
	}
	return false
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("grpcws-bench", flag.ContinueOnError)
	fs.StringVar(&o.bridge, "bridge", "bin/grpcws", "path of the grpcws `binary` to measure")
	fs.BoolVar(&o.full, "full", false, "the full run: more and longer rounds, idle 10,000 and scale 15,000 streams")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds of every comparison (default 3, full 5)")
	fs.DurationVar(&o.duration, "duration", 0, "length of one measurement (default 1.5s, full 3s)")
	fs.IntVar(&o.idle, "idle", 0, "idle streams to open for the memory figure (default 2000, full 10000)")
	fs.IntVar(&o.muxIdle, "mux-idle", 0, "idle multiplexed streams to open for the memory figure (default 2000, full 10000)")
	fs.IntVar(&o.muxIdleSockets, "mux-idle-sockets", 0, "sockets to spread the idle multiplexed streams over (default 20, full 100)")
	fs.IntVar(&o.scale, "scale", 0, "streams to hold in the scale mode (default off, full 15000)")
	fs.DurationVar(&o.scaleTime, "scale-time", 60*time.Second, "how long the scale mode runs")
	fs.StringVar(&o.profile, "profile", "", "write CPU profiles of the bridge into `dir`: during each bridged measurement of 128 streams of 64 B and each 4 MiB isolation run (of whole seconds: use a -duration of at least 1s), and a heap profile holding the idle multiplexed streams; the bridge gets --pprof")
	fs.StringVar(&o.extra, "bridge-flags", "", "extra `flags` for the bridge, space-separated (e.g. --pprof --admin-listen 127.0.0.1:6060)")
	only := fs.String("only", "", "run only these `parts`, comma-separated: "+strings.Join(parts, ", ")+
		" (mux: the multiplexed ping-pong beside direct gRPC, isolation and idle memory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *only != "" {
		o.only = map[string]bool{}
		for p := range strings.SplitSeq(*only, ",") {
			if !slices.Contains(parts, p) {
				return fmt.Errorf("-only %q: want some of %s", p, strings.Join(parts, ", "))
			}
			o.only[p] = true
		}
	}
	defaults := func(v *int, short, full int) {
		if *v == 0 {
			*v = map[bool]int{false: short, true: full}[o.full]
		}
	}
	defaults(&o.rounds, 3, 5)
	defaults(&o.idle, 2000, 10000)
	defaults(&o.muxIdle, 2000, 10000)
	defaults(&o.muxIdleSockets, 20, 100)
	defaults(&o.scale, 0, 15000)
	if o.duration == 0 {
		o.duration = map[bool]time.Duration{false: 1500 * time.Millisecond, true: 3 * time.Second}[o.full]
	}

	extra := strings.Fields(o.extra)
	if o.profile != "" {
		if err := os.MkdirAll(o.profile, 0o755); err != nil {
			return err
		}
		extra = append(extra, "--pprof")
	}
	env, err := startEnv(ctx, o.bridge, extra)
	if err != nil {
		return err
	}
	defer env.close()
	fmt.Fprintf(stdout, "grpcws-bench: backend %s (pid %d), bridge %s (pid %d), %d CPUs\n\n",
		env.backendAddr, env.backend.Pid(), env.bridge.Addr, env.bridge.Pid(), numCPU())

	switch {
	case o.runs("compare"):
		err = compare(ctx, env, o, []mode{modeDirect, modeV1, modeMux}, stdout)
	case o.runs("mux"):
		err = compare(ctx, env, o, []mode{modeDirect, modeMux}, stdout)
	}
	if err != nil {
		return err
	}
	if o.runs("idle") {
		if err := idle(ctx, env, o.idle, stdout); err != nil {
			return err
		}
	}
	// After the v1 idle figure, as its large messages grow the bridge's
	// heap, which the idle streams would reuse.
	if o.runs("isolation", "mux") {
		if err := isolation(ctx, env, o, stdout); err != nil {
			return err
		}
	}
	if o.runs("idle", "mux") {
		if err := idleMux(ctx, env, o.muxIdle, o.muxIdleSockets, o.profile, stdout); err != nil {
			return err
		}
	}
	if (len(o.only) == 0 && o.scale > 0) || o.only["scale"] {
		n := o.scale
		if n == 0 {
			n = 15000
		}
		if err := scale(ctx, env, n, o.scaleTime, stdout); err != nil {
			return err
		}
	}
	return nil
}
