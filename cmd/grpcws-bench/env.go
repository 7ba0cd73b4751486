package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/grpcws/grpcws/internal/descset"
)

// env is the backend and bridge processes, and a direct connection to the
// backend.
type env struct {
	backend, bridge         *exec.Cmd
	backendAddr, bridgeAddr string
	direct                  *grpc.ClientConn
	dir                     string
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
	e.backend = exec.CommandContext(ctx, self, "backend")
	if e.backendAddr, err = startProcess(e.backend, "backend listening on "); err != nil {
		e.close()
		return nil, fmt.Errorf("backend: %w", err)
	}

	set, err := descset.Marshal(testgrpc.File_grpc_testing_benchmark_service_proto)
	if err != nil {
		e.close()
		return nil, err
	}
	descriptors := filepath.Join(e.dir, "benchmark.binpb")
	if err := os.WriteFile(descriptors, set, 0o600); err != nil {
		e.close()
		return nil, err
	}
	args := append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--backend", e.backendAddr, "--descriptors", descriptors, "--expose", "*", "--log-level", "warn",
		"--max-connections", "0", "--max-connections-per-ip", "0"}, extra...)
	e.bridge = exec.CommandContext(ctx, bridgePath, args...)
	if e.bridgeAddr, err = startProcess(e.bridge, "grpcws: listening on "); err != nil {
		e.close()
		return nil, fmt.Errorf("bridge %s: %w", bridgePath, err)
	}
	if e.direct, err = grpc.NewClient(e.backendAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// startProcess starts cmd and waits for the line that names its address.
func startProcess(cmd *exec.Cmd, prefix string) (string, error) {
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		lines <- line
		io.Copy(io.Discard, r)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case line := <-lines:
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			return "", fmt.Errorf("unexpected first line %q", line)
		}
		addr, _, _ = strings.Cut(addr, " ") // the bridge goes on with its admin address
		return addr, nil
	case <-t.C:
		return "", fmt.Errorf("no address after 30s")
	}
}

func (e *env) close() {
	if e.direct != nil {
		e.direct.Close()
	}
	for _, c := range []*exec.Cmd{e.bridge, e.backend} {
		if c != nil && c.Process != nil {
			_ = c.Process.Signal(os.Interrupt)
			done := make(chan struct{})
			go func() { _ = c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = c.Process.Kill()
				<-done
			}
		}
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

func numCPU() int { return runtime.NumCPU() }
