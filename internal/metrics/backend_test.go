package metrics_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/connectivity"

	"github.com/grpcws/grpcws/internal/metrics"
)

const backendHeader = `
# HELP grpcws_backend_state 1 for the current connectivity state of the connection to the backend, 0 for the other states.
# TYPE grpcws_backend_state gauge
`

const upHeader = `
# HELP grpcws_backend_up 1 if the connection to the backend is READY, else 0.
# TYPE grpcws_backend_up gauge
`

// backendState is a connection state that the test sets.
type backendState struct{ v atomic.Int32 }

func (s *backendState) set(st connectivity.State) { s.v.Store(int32(st)) }
func (s *backendState) get() connectivity.State   { return connectivity.State(s.v.Load()) }

func TestBackendStateChangesBetweenScrapes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	var echo, chat backendState
	echo.set(connectivity.Connecting)
	chat.set(connectivity.Ready)
	defer m.WatchBackend("echo", echo.get)()
	defer m.WatchBackend("chat", chat.get)()

	scrapes := []struct {
		name string
		echo connectivity.State
		want string
	}{
		{
			name: "connecting",
			echo: connectivity.Connecting,
			want: backendHeader + `grpcws_backend_state{backend="chat",state="CONNECTING"} 0
grpcws_backend_state{backend="chat",state="IDLE"} 0
grpcws_backend_state{backend="chat",state="READY"} 1
grpcws_backend_state{backend="chat",state="SHUTDOWN"} 0
grpcws_backend_state{backend="chat",state="TRANSIENT_FAILURE"} 0
grpcws_backend_state{backend="echo",state="CONNECTING"} 1
grpcws_backend_state{backend="echo",state="IDLE"} 0
grpcws_backend_state{backend="echo",state="READY"} 0
grpcws_backend_state{backend="echo",state="SHUTDOWN"} 0
grpcws_backend_state{backend="echo",state="TRANSIENT_FAILURE"} 0
` + upHeader + `grpcws_backend_up{backend="chat"} 1
grpcws_backend_up{backend="echo"} 0
`,
		},
		{
			name: "ready",
			echo: connectivity.Ready,
			want: backendHeader + `grpcws_backend_state{backend="chat",state="CONNECTING"} 0
grpcws_backend_state{backend="chat",state="IDLE"} 0
grpcws_backend_state{backend="chat",state="READY"} 1
grpcws_backend_state{backend="chat",state="SHUTDOWN"} 0
grpcws_backend_state{backend="chat",state="TRANSIENT_FAILURE"} 0
grpcws_backend_state{backend="echo",state="CONNECTING"} 0
grpcws_backend_state{backend="echo",state="IDLE"} 0
grpcws_backend_state{backend="echo",state="READY"} 1
grpcws_backend_state{backend="echo",state="SHUTDOWN"} 0
grpcws_backend_state{backend="echo",state="TRANSIENT_FAILURE"} 0
` + upHeader + `grpcws_backend_up{backend="chat"} 1
grpcws_backend_up{backend="echo"} 1
`,
		},
		{
			name: "transient failure",
			echo: connectivity.TransientFailure,
			want: backendHeader + `grpcws_backend_state{backend="chat",state="CONNECTING"} 0
grpcws_backend_state{backend="chat",state="IDLE"} 0
grpcws_backend_state{backend="chat",state="READY"} 1
grpcws_backend_state{backend="chat",state="SHUTDOWN"} 0
grpcws_backend_state{backend="chat",state="TRANSIENT_FAILURE"} 0
grpcws_backend_state{backend="echo",state="CONNECTING"} 0
grpcws_backend_state{backend="echo",state="IDLE"} 0
grpcws_backend_state{backend="echo",state="READY"} 0
grpcws_backend_state{backend="echo",state="SHUTDOWN"} 0
grpcws_backend_state{backend="echo",state="TRANSIENT_FAILURE"} 1
` + upHeader + `grpcws_backend_up{backend="chat"} 1
grpcws_backend_up{backend="echo"} 0
`,
		},
	}
	// In order: each scrape sees the state set just before it.
	for _, sc := range scrapes {
		echo.set(sc.echo)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(sc.want), "grpcws_backend_state", "grpcws_backend_up"); err != nil {
			t.Errorf("%s: %v", sc.name, err)
		}
	}
}

func TestUnwatchRemovesSeries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	ready := func() connectivity.State { return connectivity.Ready }
	unwatchEcho := m.WatchBackend("echo", ready)
	unwatchChat := m.WatchBackend("chat", ready)

	if got := count(t, reg); got != 12 {
		t.Fatalf("series while watching two backends: got %d; want 12", got)
	}
	unwatchEcho()
	const want = backendHeader + `grpcws_backend_state{backend="chat",state="CONNECTING"} 0
grpcws_backend_state{backend="chat",state="IDLE"} 0
grpcws_backend_state{backend="chat",state="READY"} 1
grpcws_backend_state{backend="chat",state="SHUTDOWN"} 0
grpcws_backend_state{backend="chat",state="TRANSIENT_FAILURE"} 0
` + upHeader + `grpcws_backend_up{backend="chat"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_backend_state", "grpcws_backend_up"); err != nil {
		t.Error(err)
	}
	unwatchEcho() // again: nothing happens
	unwatchChat()
	if got := count(t, reg); got != 0 {
		t.Errorf("series after unwatching both: got %d; want 0", got)
	}
}

func TestWatchAgainReplaces(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	unwatchOld := m.WatchBackend("echo", func() connectivity.State { return connectivity.Shutdown })
	unwatchNew := m.WatchBackend("echo", func() connectivity.State { return connectivity.Idle })

	// One backend, not two: a registry would refuse duplicate series.
	if got := count(t, reg); got != 6 {
		t.Fatalf("series: got %d; want 6", got)
	}
	unwatchOld() // the old watch was replaced: the new one stays
	const want = backendHeader + `grpcws_backend_state{backend="echo",state="CONNECTING"} 0
grpcws_backend_state{backend="echo",state="IDLE"} 1
grpcws_backend_state{backend="echo",state="READY"} 0
grpcws_backend_state{backend="echo",state="SHUTDOWN"} 0
grpcws_backend_state{backend="echo",state="TRANSIENT_FAILURE"} 0
` + upHeader + `grpcws_backend_up{backend="echo"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_backend_state", "grpcws_backend_up"); err != nil {
		t.Error(err)
	}
	unwatchNew()
	if got := count(t, reg); got != 0 {
		t.Errorf("series after unwatching: got %d; want 0", got)
	}
}

func TestWatchWhileScraping(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	var wg sync.WaitGroup
	for _, name := range []string{"a", "b", "c", "d"} {
		wg.Go(func() {
			for range 100 {
				m.WatchBackend(name, func() connectivity.State { return connectivity.Ready })()
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Wait()
	if got := count(t, reg); got != 0 {
		t.Errorf("series after every unwatch: got %d; want 0", got)
	}
}

func count(t *testing.T, reg prometheus.Gatherer) int {
	t.Helper()
	n, err := testutil.GatherAndCount(reg, "grpcws_backend_state", "grpcws_backend_up")
	if err != nil {
		t.Fatal(err)
	}
	return n
}
