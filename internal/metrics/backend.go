package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/connectivity"
)

// states are the connectivity states, each exported as a series of
// grpcws_backend_state so that a query never finds a state missing.
var states = []connectivity.State{
	connectivity.Idle,
	connectivity.Connecting,
	connectivity.Ready,
	connectivity.TransientFailure,
	connectivity.Shutdown,
}

// backendCollector reports the watched backends' states. The states are read
// when scraped rather than pushed on change, so a scrape never shows a state
// older than the connection's own.
type backendCollector struct {
	stateDesc, upDesc *prometheus.Desc

	mu      sync.Mutex
	watches map[string]*watch // by backend name
}

type watch struct {
	state func() connectivity.State
}

func newBackendCollector() *backendCollector {
	return &backendCollector{
		stateDesc: prometheus.NewDesc("grpcws_backend_state",
			"1 for the current connectivity state of the connection to the backend, 0 for the other states.",
			[]string{"backend", "state"}, nil),
		upDesc: prometheus.NewDesc("grpcws_backend_up",
			"1 if the connection to the backend is READY, else 0.",
			[]string{"backend"}, nil),
		watches: map[string]*watch{},
	}
}

func (c *backendCollector) watch(name string, state func() connectivity.State) func() {
	w := &watch{state: state}
	c.mu.Lock()
	c.watches[name] = w
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.watches[name] == w {
			delete(c.watches, name)
		}
	}
}

func (c *backendCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.stateDesc
	ch <- c.upDesc
}

func (c *backendCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	names := make([]string, 0, len(c.watches))
	funcs := make([]func() connectivity.State, 0, len(c.watches))
	for name, w := range c.watches {
		names = append(names, name)
		funcs = append(funcs, w.state)
	}
	c.mu.Unlock()

	// The state funcs are called without the lock, so that a slow one does
	// not hold up WatchBackend or unwatch.
	for i, name := range names {
		now := funcs[i]()
		for _, s := range states {
			ch <- prometheus.MustNewConstMetric(c.stateDesc, prometheus.GaugeValue, boolValue(now == s), name, s.String())
		}
		ch <- prometheus.MustNewConstMetric(c.upDesc, prometheus.GaugeValue, boolValue(now == connectivity.Ready), name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
