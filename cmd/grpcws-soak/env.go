package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/proc"
	"github.com/grpcws/grpcws/internal/procstat"
)

// env is the bridge and backend processes.
type env struct {
	ctx         context.Context
	self        string // this binary, for the backend
	dir         string
	bridge      *proc.Sidecar
	bridgeLog   string // the bridge's stderr
	backendAddr string

	mu      sync.Mutex
	backend *proc.Proc // nil while killed
}

// startEnv starts the backend and the bridge. muxStreams, when not 0, is
// the most streams one multiplexed socket will carry.
func startEnv(ctx context.Context, bridgePath string, muxStreams int) (*env, error) {
	e := &env{ctx: ctx}
	var err error
	if e.self, err = os.Executable(); err != nil {
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "grpcws-soak"); err != nil {
		return nil, err
	}
	if err := e.startBackend("127.0.0.1:0"); err != nil {
		e.close()
		return nil, fmt.Errorf("backend: %w", err)
	}

	e.bridgeLog = filepath.Join(e.dir, "bridge.log")
	logFile, err := os.Create(e.bridgeLog)
	if err != nil {
		e.close()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	args := []string{"--pprof"}
	if muxStreams > 0 {
		// A stream the client cancelled, or whose END it has read, may
		// still count at the bridge for a moment: room for twice as many.
		config := filepath.Join(e.dir, "soak.yaml")
		doc := fmt.Sprintf("limits:\n  mux:\n    max_streams: %d\n", max(100, 2*muxStreams))
		if err := os.WriteFile(config, []byte(doc), 0o600); err != nil {
			e.close()
			return nil, err
		}
		args = append(args, "--config", config)
	}
	e.bridge, err = proc.StartBridge(ctx, bridgePath, e.dir, e.backendAddr, echov1.File_examples_echo_v1_echo_proto, logFile, args...)
	if err != nil {
		e.close()
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return e, nil
}

// startBackend starts the backend on addr, retrying briefly while the
// address is still taken.
func (e *env) startBackend(addr string) error {
	var err error
	for range 50 {
		cmd := exec.CommandContext(e.ctx, e.self, "backend", "-listen", addr)
		cmd.Stderr = io.Discard // "address already in use" while retrying
		var p *proc.Proc
		var rest string
		if p, rest, err = proc.Start(cmd, "backend listening on "); err == nil {
			e.mu.Lock()
			e.backend, e.backendAddr = p, rest
			e.mu.Unlock()
			return nil
		}
		if e.ctx.Err() != nil {
			return e.ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// killBackend kills the backend with SIGKILL and waits for its exit.
func (e *env) killBackend() {
	e.mu.Lock()
	p := e.backend
	e.backend = nil
	e.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

func (e *env) close() {
	if e.bridge != nil {
		e.bridge.Stop(40 * time.Second) // past the drain's default timeout
	}
	e.killBackend()
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// logLines returns the number of lines the bridge has logged and the first
// few.
func (e *env) logLines(first int) (int, []string) {
	b, err := os.ReadFile(e.bridgeLog)
	if err != nil {
		return 0, nil
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 1 && lines[0] == "" {
		return 0, nil
	}
	return len(lines), lines[:min(first, len(lines))]
}

// probe reads the bridge's figures: from its admin listener and from
// /proc.
type probe struct {
	bridge *proc.Sidecar
	client *http.Client
}

func newProbe(e *env) *probe {
	return &probe{
		bridge: e.bridge,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
	}
}

// snapshot is the bridge's figures at one moment.
type snapshot struct {
	goroutines int
	fds        int
	rss        int64
	open       int // grpcws_connections_open: RPCs with an open backend stream
	cpu        time.Duration
	// From the Go runtime: heap and stacks in use, and memory the
	// runtime holds free but has not returned to the OS yet.
	heap, live, stacks, unreturned int64
}

func (p *probe) get(ctx context.Context, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.bridge.Admin+path, nil)
	if err != nil {
		return "", err
	}
	res, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return "", err
	}
	if res.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return string(b), nil
}

// snapshot reads every figure. Goroutines come from the goroutine profile
// when full is set, else from the go_goroutines metric (cheaper).
func (p *probe) snapshot(ctx context.Context, full bool) (snapshot, error) {
	var s snapshot
	values, err := p.bridge.Metrics(ctx, p.client)
	if err != nil {
		return s, err
	}
	open, ok := values["grpcws_connections_open"]
	if !ok {
		return s, errors.New("/metrics has no grpcws_connections_open")
	}
	s.open = int(open)
	s.goroutines = int(values["go_goroutines"])
	s.heap = int64(values["go_memstats_heap_inuse_bytes"])
	s.live = int64(values["go_memstats_heap_alloc_bytes"])
	s.stacks = int64(values["go_memstats_stack_inuse_bytes"])
	s.unreturned = int64(values["go_memstats_heap_idle_bytes"] - values["go_memstats_heap_released_bytes"])
	if full {
		if s.goroutines, err = p.goroutines(ctx); err != nil {
			return s, err
		}
	}
	if s.fds, err = procstat.FDs(p.bridge.Pid()); err != nil {
		return s, err
	}
	if s.rss, err = procstat.RSS(p.bridge.Pid()); err != nil {
		return s, err
	}
	if s.cpu, err = procstat.CPUTime(p.bridge.Pid()); err != nil {
		return s, err
	}
	return s, nil
}

// goroutines returns the total of the goroutine profile.
func (p *probe) goroutines(ctx context.Context) (int, error) {
	body, err := p.get(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(body, "\n")
	n, ok := strings.CutPrefix(first, "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile starts with %q", first)
	}
	return strconv.Atoi(n)
}

// gc makes the bridge collect garbage, through the heap profile's gc
// parameter.
func (p *probe) gc(ctx context.Context) error {
	_, err := p.get(ctx, "/debug/pprof/heap?gc=1")
	return err
}
