package main

import (
	"bufio"
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
	"syscall"
	"time"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/descset"
	"github.com/grpcws/grpcws/internal/procstat"
)

// env is the bridge and backend processes.
type env struct {
	ctx         context.Context
	self        string // this binary, for the backend
	dir         string
	bridge      *proc
	bridgeAddr  string
	adminAddr   string
	bridgeLog   string // the bridge's stderr
	backendAddr string

	mu      sync.Mutex
	backend *proc // nil while killed
}

// proc is a started process whose exit is reaped by a goroutine.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited and been reaped
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// startProc starts cmd and waits for its first line on stdout, which must
// start with prefix; it returns the rest of the line.
func startProc(cmd *exec.Cmd, prefix string) (*proc, string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, r)
		_ = cmd.Wait()
		close(p.exited)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case line := <-lines:
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix)
		if !ok {
			p.kill()
			return nil, "", fmt.Errorf("%s: unexpected first line %q", cmd.Path, line)
		}
		return p, rest, nil
	case <-t.C:
		p.kill()
		return nil, "", fmt.Errorf("%s: no address after 30s", cmd.Path)
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// stop asks the process to stop with SIGTERM, and kills it after timeout.
func (p *proc) stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.kill()
	}
}

func startEnv(ctx context.Context, bridgePath string) (*env, error) {
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

	set, err := descset.Marshal(echov1.File_examples_echo_v1_echo_proto)
	if err != nil {
		e.close()
		return nil, err
	}
	descriptors := filepath.Join(e.dir, "echo.binpb")
	if err := os.WriteFile(descriptors, set, 0o600); err != nil {
		e.close()
		return nil, err
	}
	e.bridgeLog = filepath.Join(e.dir, "bridge.log")
	logFile, err := os.Create(e.bridgeLog)
	if err != nil {
		e.close()
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.CommandContext(ctx, bridgePath, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--backend", e.backendAddr, "--descriptors", descriptors, "--expose", "*",
		"--max-connections", "0", "--max-connections-per-ip", "0", "--log-level", "warn", "--pprof")
	cmd.Stderr = logFile
	p, rest, err := startProc(cmd, "grpcws: listening on ")
	if err != nil {
		e.close()
		return nil, fmt.Errorf("bridge: %w", err)
	}
	e.bridge = p
	// rest is "ADDR (admin ADDR)"
	addr, admin, ok := strings.Cut(rest, " (admin ")
	if !ok {
		e.close()
		return nil, fmt.Errorf("bridge: no admin address in %q", rest)
	}
	e.bridgeAddr, e.adminAddr = addr, strings.TrimSuffix(admin, ")")
	return e, nil
}

// startBackend starts the backend on addr, retrying briefly while the
// address is still taken.
func (e *env) startBackend(addr string) error {
	var err error
	for range 50 {
		cmd := exec.CommandContext(e.ctx, e.self, "backend", "-listen", addr)
		cmd.Stderr = io.Discard // "address already in use" while retrying
		var p *proc
		var rest string
		if p, rest, err = startProc(cmd, "backend listening on "); err == nil {
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
		p.kill()
	}
}

func (e *env) close() {
	if e.bridge != nil {
		e.bridge.stop(40 * time.Second) // past the drain's default timeout
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
	pid    int
	admin  string
	client *http.Client
}

func newProbe(e *env) *probe {
	return &probe{
		pid:    e.bridge.pid(),
		admin:  "http://" + e.adminAddr,
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.admin+path, nil)
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
	metrics, err := p.get(ctx, "/metrics")
	if err != nil {
		return s, err
	}
	values := map[string]float64{}
	for line := range strings.Lines(metrics) {
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			values[name] = v
		}
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
	if s.fds, err = procstat.FDs(p.pid); err != nil {
		return s, err
	}
	if s.rss, err = procstat.RSS(p.pid); err != nil {
		return s, err
	}
	if s.cpu, err = procstat.CPUTime(p.pid); err != nil {
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
