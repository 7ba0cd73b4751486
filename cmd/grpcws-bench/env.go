package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
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

	if e.bridge, err = proc.StartBridge(ctx, bridgePath, e.dir, e.backendAddr, testgrpc.File_grpc_testing_benchmark_service_proto, os.Stderr, extra...); err != nil {
		e.close()
		return nil, fmt.Errorf("bridge %s: %w", bridgePath, err)
	}
	if e.direct, err = grpc.NewClient(e.backendAddr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
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
