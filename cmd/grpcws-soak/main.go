// Command grpcws-soak runs the grpcws bridge under churn and faults for a
// set time, then checks that nothing was lost and nothing leaked.
//
// It starts a backend (itself, in backend mode, serving the demo
// EchoService) and the grpcws binary as processes on 127.0.0.1, and keeps
// -streams RPCs of all four kinds open through the bridge, each a raw
// WebSocket speaking protocol v1 from one of several 127.0.0.x source
// addresses, with sequence-numbered messages. Each RPC lives for a random
// time and is replaced when it ends. While this goes on it kills the backend
// with SIGKILL at random intervals and starts it again on the same address,
// and drops some clients before their RPC ends: a TCP reset, a TCP close
// without a WebSocket close, or a clean WebSocket close.
//
// With -mux-sockets N the RPCs are streams of grpcws.mux.v1 instead, spread
// over N long-lived sockets (mux.go); the client then drops RPCs by
// cancelling them, and drops a whole socket every -mux-drop-every.
//
// At the end it checks, and exits 1 if a check fails:
//   - no message lost, duplicated or reordered on an RPC that ended OK, and
//     none duplicated or reordered on any other;
//   - every RPC that failed got a status (an end frame, or a close code that
//     carries one), consistent with its close code (multiplexed: an END
//     frame);
//   - no RPC outlived its time limit;
//   - after a settle period, the bridge's goroutines and file descriptors
//     are back to their baseline (within a small tolerance), it has no RPC
//     open, and its RSS is near its baseline. The rule for "near" is
//     printed with the figures.
//
// Every loop is bounded in count and time, and everything listens and
// connects on loopback only.
//
//	grpcws-soak -bridge bin/grpcws -streams 500 -duration 1m    # make soak-short
//	grpcws-soak -bridge bin/grpcws -streams 10000 -duration 10m # make soak
//	grpcws-soak -bridge bin/grpcws -streams 2000 -mux-sockets 40 # multiplexed
//	grpcws-soak backend -listen 127.0.0.1:0                      # the backend alone (used by the above)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/grpcws/grpcws/internal/proc"
)

func main() { proc.Main("grpcws-soak", run, runBackend) }

// errChecksFailed is run's error when the soak ran to its end but a check
// failed; the report says which.
var errChecksFailed = errors.New("checks failed")

type options struct {
	bridge    string
	streams   int
	duration  time.Duration
	killEvery time.Duration
	seed      uint64
	sources   int
	drop      float64
	maxLife   time.Duration
	settle    time.Duration
	profile   string

	muxSockets   int           // 0: protocol v1, a socket per RPC
	muxDropEvery time.Duration // between socket drops
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("grpcws-soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.bridge, "bridge", "bin/grpcws", "path of the grpcws `binary` to soak")
	fs.IntVar(&o.streams, "streams", 500, "RPCs to keep open at once")
	fs.DurationVar(&o.duration, "duration", time.Minute, "how long to start new RPCs")
	fs.DurationVar(&o.killEvery, "kill-every", 20*time.Second, "mean time between backend kills (each 0.5 to 1.5 times this); 0: never")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed; 0: from the clock (the report prints it)")
	fs.IntVar(&o.sources, "sources", 0, "source addresses 127.0.0.2, 127.0.0.3, ... to connect from (default: one per 2,000 streams, at least 2)")
	fs.Float64Var(&o.drop, "drop", 0.1, "fraction of RPCs the client drops before their end")
	fs.DurationVar(&o.maxLife, "max-life", 0, "longest planned life of one RPC (default: a quarter of -duration, at most 60s)")
	fs.DurationVar(&o.settle, "settle", 5*time.Minute, "how long the bridge gets to return to its baseline after the load (the Go runtime returns free memory to the OS gradually)")
	fs.StringVar(&o.profile, "cpuprofile", "", "write the soak's own CPU profile to `file`")
	fs.IntVar(&o.muxSockets, "mux-sockets", 0, "speak grpcws.mux.v1: spread the RPCs over this many sockets (0: protocol v1, a socket per RPC)")
	fs.DurationVar(&o.muxDropEvery, "mux-drop-every", 10*time.Second, "with -mux-sockets: mean time between drops of a whole socket by the client (each 0.5 to 1.5 times this); 0: never")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.streams < 1 || o.streams > 18000:
		return o, fmt.Errorf("-streams %d: want 1 to 18000 (each is a file descriptor here and in the bridge)", o.streams)
	case o.duration <= 0 || o.duration > 24*time.Hour:
		return o, fmt.Errorf("-duration %v: want more than 0 and at most 24h", o.duration)
	case o.killEvery < 0:
		return o, fmt.Errorf("-kill-every %v is negative", o.killEvery)
	case o.drop < 0 || o.drop > 1:
		return o, fmt.Errorf("-drop %v: want 0 to 1", o.drop)
	case o.sources < 0 || o.sources > 250:
		return o, fmt.Errorf("-sources %d: want 1 to 250", o.sources)
	case o.maxLife < 0:
		return o, fmt.Errorf("-max-life %v is negative", o.maxLife)
	case o.muxSockets < 0 || o.muxSockets > o.streams:
		return o, fmt.Errorf("-mux-sockets %d: want 0 to -streams (%d)", o.muxSockets, o.streams)
	case o.muxDropEvery < 0:
		return o, fmt.Errorf("-mux-drop-every %v is negative", o.muxDropEvery)
	}
	if o.sources == 0 {
		o.sources = max(2, (o.streams+1999)/2000)
	}
	if o.maxLife == 0 {
		o.maxLife = min(60*time.Second, o.duration/4)
	}
	o.maxLife = max(o.maxLife, minLife+time.Second)
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseOptions(args, os.Stderr)
	if err != nil {
		return err
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	perSocket := 0
	if o.muxSockets > 0 {
		perSocket = (o.streams + o.muxSockets - 1) / o.muxSockets
	}
	e, err := startEnv(ctx, o.bridge, perSocket)
	if err != nil {
		return err
	}
	defer e.close()
	kills := "no backend kills"
	if o.killEvery > 0 {
		kills = fmt.Sprintf("backend killed about every %v", o.killEvery)
	}
	fmt.Fprintf(stdout, "grpcws-soak: %d streams for %v (each living up to %v), %s, %.0f%% of clients dropped, seed %d, %d source addresses\n",
		o.streams, o.duration, o.maxLife, kills, 100*o.drop, o.seed, o.sources)
	if o.muxSockets > 0 {
		drops := "no socket drops"
		if o.muxDropEvery > 0 {
			drops = fmt.Sprintf("a socket dropped about every %v", o.muxDropEvery)
		}
		fmt.Fprintf(stdout, "grpcws.mux.v1: %d sockets, up to %d streams each; dropped RPCs are cancelled; %s\n", o.muxSockets, perSocket, drops)
	}
	fmt.Fprintf(stdout, "bridge %s (pid %d, admin %s), backend %s\n\n", e.bridge.Addr, e.bridge.Pid(), e.bridge.Admin, e.backendAddr)

	s, err := newSoak(ctx, e, o, stdout)
	if err != nil {
		return err
	}
	if err := s.run(ctx); err != nil {
		return err
	}
	if !s.report(stdout) {
		return errChecksFailed
	}
	return nil
}
