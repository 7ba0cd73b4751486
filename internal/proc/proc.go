// Package proc starts and stops the programs that the benchmark, the soak
// and the tests of the real binary run side by side: the sidecar and its
// backends, each announcing its address in its first line on stdout.
package proc

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/grpcws/grpcws/internal/descset"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// A Proc is a started process whose exit is reaped by a goroutine of its
// own. Its methods are safe for concurrent use.
type Proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when it has exited and been reaped
}

// Start starts cmd and waits, up to 30 s, for its first line on stdout,
// which must start with prefix; it returns the rest of the line. The rest
// of stdout is discarded; cmd.Stderr is the caller's to set.
func Start(cmd *exec.Cmd, prefix string) (*Proc, string, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	p := &Proc{cmd: cmd, exited: make(chan struct{})}
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
			p.Kill()
			return nil, "", fmt.Errorf("%s: unexpected first line %q", cmd.Path, line)
		}
		return p, rest, nil
	case <-t.C:
		p.Kill()
		return nil, "", fmt.Errorf("%s: no first line after 30s", cmd.Path)
	}
}

// A Sidecar is the grpcws binary, started by StartSidecar.
type Sidecar struct {
	*Proc
	Addr  string // the listener's host:port
	Admin string // the admin listener's host:port
}

// StartSidecar starts the grpcws binary at path with args, on loopback
// ports of its choosing, and waits for its listening line.
func StartSidecar(ctx context.Context, path string, stderr io.Writer, args ...string) (*Sidecar, error) {
	cmd := exec.CommandContext(ctx, path, append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, args...)...)
	cmd.Stderr = stderr
	p, rest, err := Start(cmd, "grpcws: listening on ")
	if err != nil {
		return nil, err
	}
	// rest is "ADDR (admin ADDR)"
	addr, admin, ok := strings.Cut(rest, " (admin ")
	if !ok {
		p.Kill()
		return nil, fmt.Errorf("%s: no admin address in %q", path, rest)
	}
	return &Sidecar{Proc: p, Addr: addr, Admin: strings.TrimSuffix(admin, ")")}, nil
}

// StartBridge starts the grpcws binary at path in front of the backend at
// backendAddr, as the benchmark and the soak measure it: every service of
// file exposed, from a descriptor set written into dir, no connection
// limits, warnings only in the log; extra flags last.
func StartBridge(ctx context.Context, path, dir, backendAddr string, file protoreflect.FileDescriptor, stderr io.Writer, extra ...string) (*Sidecar, error) {
	set, err := descset.Marshal(file)
	if err != nil {
		return nil, err
	}
	descriptors := filepath.Join(dir, "services.binpb")
	if err := os.WriteFile(descriptors, set, 0o600); err != nil {
		return nil, err
	}
	args := append([]string{"--backend", backendAddr, "--descriptors", descriptors, "--expose", "*",
		"--max-connections", "0", "--max-connections-per-ip", "0", "--log-level", "warn"}, extra...)
	return StartSidecar(ctx, path, stderr, args...)
}

// Metrics reads the sidecar's metrics without labels, and those with, by
// their whole name as /metrics prints it.
func (s *Sidecar) Metrics(ctx context.Context, client *http.Client) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	res, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", res.Status)
	}
	values := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			values[name] = v
		}
	}
	return values, sc.Err()
}

// Pid returns the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL and waits for the exit.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Stop asks the process to stop with SIGTERM, and kills it after timeout.
func (p *Proc) Stop(timeout time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.Kill()
	}
}

// Main is the main function of a program that runs its own backend as a
// child process (the benchmark, the soak): "name backend ARGS" runs
// backend, anything else run. Both get a context that SIGINT and SIGTERM
// cancel. An error other than flag.ErrHelp is printed and exits with 1.
func Main(name string, run, backend func(ctx context.Context, args []string, stdout io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		err = backend(ctx, os.Args[2:], os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout)
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		stop()
		os.Exit(1)
	}
}
