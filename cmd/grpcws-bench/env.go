package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/grpcws/grpcws/internal/proc"
)

// env is the backend and bridge processes, and a direct connection to the
// backend.
type env struct {
	backend     *proc.Proc
	backendAddr string
	bridge      *proc.Sidecar
	direct      *grpc.ClientConn
	dir         string
	bridgePath  string
	bridgeArgs  []string
}

func startEnv(ctx context.Context, bridgePath string, extra []string) (*env, error) {
	e := &env{}
	var err error
	if e.dir, err = os.MkdirTemp("", "grpcws-bench"); err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	backend := exec.CommandContext(ctx, self, "backend")
	backend.Stderr = os.Stderr
	if e.backend, e.backendAddr, err = proc.Start(backend, "backend listening on "); err != nil {
		e.close()
		return nil, fmt.Errorf("backend: %w", err)
	}

	// One socket carries every stream of a configuration: up to 128 in
	// compare, and the default limit is 100 streams per socket.
	config := filepath.Join(e.dir, "bench.yaml")
	if err := os.WriteFile(config, []byte("limits:\n  mux:\n    max_streams: 1000\n"), 0o600); err != nil {
		e.close()
		return nil, err
	}
	e.bridgePath, e.bridgeArgs = bridgePath, append([]string{"--config", config}, extra...)
	if err := e.startBridge(ctx); err != nil {
		e.close()
		return nil, err
	}
	if e.direct, err = grpc.NewClient(e.backendAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *env) startBridge(ctx context.Context) error {
	var err error
	e.bridge, err = proc.StartBridge(ctx, e.bridgePath, e.dir, e.backendAddr, testgrpc.File_grpc_testing_benchmark_service_proto, os.Stderr, e.bridgeArgs...)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", e.bridgePath, err)
	}
	return nil
}

// restartBridge stops the bridge and starts a new one, on a new address.
func (e *env) restartBridge(ctx context.Context) error {
	e.bridge.Stop(15 * time.Second)
	e.bridge = nil
	return e.startBridge(ctx)
}

func (e *env) close() {
	if e.direct != nil {
		e.direct.Close()
	}
	if e.bridge != nil {
		e.bridge.Stop(15 * time.Second)
	}
	if e.backend != nil {
		e.backend.Stop(15 * time.Second)
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func numCPU() int { return runtime.NumCPU() }

// profile fetches a CPU profile of the bridge, which runs with --pprof, over
// the d that starts after wait, into file; the function it returns waits
// for the fetch and returns its error. It does nothing when file is "". A
// profile is whole seconds long: d is rounded down, to at least 1 s.
func (e *env) profile(ctx context.Context, wait, d time.Duration, file string) (waitDone func() error) {
	if file == "" {
		return func() error { return nil }
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(wait)
		ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
		defer cancel()
		b, err := e.debug(ctx, fmt.Sprintf("profile?seconds=%d", max(1, int(d/time.Second))))
		if err == nil {
			err = os.WriteFile(file, b, 0o644)
		}
		done <- err
	}()
	return func() error { return <-done }
}

// debug gets /debug/pprof/ + what from the bridge, which runs with --pprof.
func (e *env) debug(ctx context.Context, what string) ([]byte, error) {
	url := "http://" + e.bridge.Admin + "/debug/pprof/" + what
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s (the bridge needs --pprof)", url, res.Status)
	}
	return io.ReadAll(res.Body)
}

// goroutines returns the bridge's number of goroutines, from its pprof
// goroutine profile, which it writes to file unless file is "".
func (e *env) goroutines(ctx context.Context, file string) (int, error) {
	b, err := e.debug(ctx, "goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(string(b), "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	if file != "" {
		err = os.WriteFile(file, b, 0o644)
	}
	return n, err
}
