// Command grpcws-bench measures what the bridge costs on top of the gRPC
// calls it carries. It starts grpc-go's benchmark service and the grpcws
// binary as separate processes on 127.0.0.1, drives both directly (gRPC) and
// through the bridge (raw protocol v1, one WebSocket per stream, binary
// frames, no compression, as a browser would), alternating the two in the
// same run, and prints ratios, latencies and the bridge's own CPU time per
// round trip. Every loop is bounded in time and count.
//
//	grpcws-bench -bridge bin/grpcws            # the short run, under 2 minutes
//	grpcws-bench -bridge bin/grpcws -full      # longer rounds, idle 10,000, scale 15,000
//	grpcws-bench backend -listen 127.0.0.1:0   # the backend alone (used by the above)
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
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
	bridge    string
	full      bool
	rounds    int
	duration  time.Duration
	idle      int
	scale     int
	scaleTime time.Duration
	only      string
	extra     string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("grpcws-bench", flag.ContinueOnError)
	fs.StringVar(&o.bridge, "bridge", "bin/grpcws", "path of the grpcws `binary` to measure")
	fs.BoolVar(&o.full, "full", false, "the full run: more and longer rounds, idle 10,000 and scale 15,000 streams")
	fs.IntVar(&o.rounds, "rounds", 0, "rounds of every comparison (default 3, full 5)")
	fs.DurationVar(&o.duration, "duration", 0, "length of one measurement (default 1.5s, full 3s)")
	fs.IntVar(&o.idle, "idle", 0, "idle streams to open for the memory figure (default 2000, full 10000)")
	fs.IntVar(&o.scale, "scale", 0, "streams to hold in the scale mode (default off, full 15000)")
	fs.DurationVar(&o.scaleTime, "scale-time", 60*time.Second, "how long the scale mode runs")
	fs.StringVar(&o.extra, "bridge-flags", "", "extra `flags` for the bridge, space-separated (e.g. --pprof --admin-listen 127.0.0.1:6060)")
	fs.StringVar(&o.only, "only", "", "run only this part: compare, idle or scale")
	if err := fs.Parse(args); err != nil {
		return err
	}
	defaults := func(v *int, short, full int) {
		if *v == 0 {
			*v = map[bool]int{false: short, true: full}[o.full]
		}
	}
	defaults(&o.rounds, 3, 5)
	defaults(&o.idle, 2000, 10000)
	defaults(&o.scale, 0, 15000)
	if o.duration == 0 {
		o.duration = map[bool]time.Duration{false: 1500 * time.Millisecond, true: 3 * time.Second}[o.full]
	}

	env, err := startEnv(ctx, o.bridge, strings.Fields(o.extra))
	if err != nil {
		return err
	}
	defer env.close()
	fmt.Fprintf(stdout, "grpcws-bench: backend %s (pid %d), bridge %s (pid %d), %d CPUs\n\n",
		env.backendAddr, env.backend.Pid(), env.bridge.Addr, env.bridge.Pid(), numCPU())

	if o.only == "" || o.only == "compare" {
		if err := compare(ctx, env, o, stdout); err != nil {
			return err
		}
	}
	if o.only == "" || o.only == "idle" {
		if err := idle(ctx, env, o.idle, stdout); err != nil {
			return err
		}
	}
	if (o.only == "" && o.scale > 0) || o.only == "scale" {
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
