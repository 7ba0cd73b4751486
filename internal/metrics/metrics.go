// Package metrics exports the sidecar's Prometheus metrics: the bridge's
// handshakes, RPCs and messages (through bridge.Observer), the backends'
// connection states, configuration and descriptor reloads, and draining.
// docs/metrics.md lists every metric. Snapshot and History read the RPCs'
// counters back for the status page.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"

	"github.com/grpcws/grpcws/bridge"
)

// The values of the direction label.
const (
	clientToBackend = "client_to_backend"
	backendToClient = "backend_to_client"
)

// refusals are the bridge's refusal reasons, exported at zero from the start
// so that alerts on their rate see a series before the first refusal.
var refusals = []bridge.Refusal{
	bridge.RefusedUnknownRoute,
	bridge.RefusedOrigin,
	bridge.RefusedOverLimit,
	bridge.RefusedBadRequest,
	bridge.RefusedShutdown,
}

// durationBuckets span a unary call answered in milliseconds to a stream
// held open for an hour.
var durationBuckets = []float64{
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 60, 300, 900, 3600,
}

// Metrics holds the sidecar's collectors. It implements bridge.Observer.
//
// Its methods, and those of the StreamObservers it returns, are safe for
// concurrent use and never block on I/O. The per-message methods take no
// lock and do not allocate.
type Metrics struct {
	open        prometheus.Gauge
	streamsOpen *prometheus.GaugeVec // open by route and protocol
	handshakes  *prometheus.CounterVec
	accepted    prometheus.Counter // handshakes{outcome="accepted"}
	messages    *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	streams     *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	backends    *backendCollector
	reloadOK    prometheus.Counter
	reloadFail  prometheus.Counter
	lastReload  prometheus.Gauge
	descriptors *prometheus.CounterVec
	draining    prometheus.Gauge
	muxOpen     prometheus.Gauge
	muxStreams  prometheus.Histogram
	muxStalls   prometheus.Counter
}

var (
	_ bridge.Observer    = (*Metrics)(nil)
	_ bridge.MuxObserver = (*Metrics)(nil)
)

// muxStreamBuckets span a connection that carried one RPC to a page open
// for a day.
var muxStreamBuckets = []float64{1, 2, 5, 10, 25, 50, 100, 250, 1000, 10000}

// New makes the collectors and registers them with reg. It panics if
// registering fails, as when reg already holds collectors of the same names.
// It registers neither the Go nor the process collector: that is the
// caller's choice.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpcws_connections_open",
			Help: "RPCs open now.",
		}),
		streamsOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "grpcws_streams_open",
			Help: "RPCs open now, by route and protocol.",
		}, []string{"route", "protocol"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpcws_handshakes_total",
			Help: "WebSocket handshakes by outcome: accepted, or why the connection was refused.",
		}, []string{"outcome"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpcws_messages_total",
			Help: "Messages forwarded, by route, protocol and direction.",
		}, []string{"route", "protocol", "direction"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpcws_message_bytes_total",
			Help: "Bytes of the messages forwarded, as sized on the wire, by route, protocol and direction.",
		}, []string{"route", "protocol", "direction"}),
		streams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpcws_streams_total",
			Help: "RPCs ended, by route, protocol and gRPC status code.",
		}, []string{"route", "protocol", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "grpcws_stream_duration_seconds",
			Help:    "How long RPCs lasted, by route and protocol.",
			Buckets: durationBuckets,
		}, []string{"route", "protocol"}),
		backends: newBackendCollector(),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpcws_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully, in seconds since the Unix epoch.",
		}),
		descriptors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpcws_descriptor_loads_total",
			Help: "Descriptor loads by backend and result (success or failure).",
		}, []string{"backend", "result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpcws_draining",
			Help: "1 while the sidecar is draining connections before it stops, else 0.",
		}),
		muxOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grpcws_mux_connections_open",
			Help: "Multiplexed (grpcws.mux.v1) connections open now; their RPCs are in grpcws_streams_open{protocol=\"grpcws.mux.v1\"}.",
		}),
		muxStreams: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "grpcws_mux_connection_streams",
			Help:    "RPCs each multiplexed connection carried, observed when it closed.",
			Buckets: muxStreamBuckets,
		}),
		muxStalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grpcws_mux_flow_control_stalls_total",
			Help: "Times a message to a multiplexed client waited for the client to grant flow-control window.",
		}),
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grpcws_config_reloads_total",
		Help: "Configuration reloads by result (success or failure).",
	}, []string{"result"})
	m.reloadOK = reloads.WithLabelValues("success")
	m.reloadFail = reloads.WithLabelValues("failure")
	m.accepted = m.handshakes.WithLabelValues("accepted")
	for _, why := range refusals {
		m.handshakes.WithLabelValues(string(why))
	}
	reg.MustRegister(
		m.open, m.streamsOpen, m.handshakes, m.messages, m.bytes, m.streams, m.duration,
		m.backends, reloads, m.lastReload, m.descriptors, m.draining,
		m.muxOpen, m.muxStreams, m.muxStalls,
	)
	return m
}

// Refused counts a refused handshake.
func (m *Metrics) Refused(why bridge.Refusal) {
	m.handshakes.WithLabelValues(string(why)).Inc()
}

// Accepted counts an accepted handshake and an open RPC, and returns the
// RPC's StreamObserver. The label values of the route and its protocol
// (route.Protocol) are resolved here, once per RPC, so that counting a
// message is two atomic adds.
func (m *Metrics) Accepted(route bridge.Route) bridge.StreamObserver {
	m.accepted.Inc()
	m.open.Inc()
	r, p := route.Method, string(route.Protocol)
	s := &stream{
		m:           m,
		route:       r,
		protocol:    p,
		open:        m.streamsOpen.WithLabelValues(r, p),
		clientMsgs:  m.messages.WithLabelValues(r, p, clientToBackend),
		clientBytes: m.bytes.WithLabelValues(r, p, clientToBackend),
		serverMsgs:  m.messages.WithLabelValues(r, p, backendToClient),
		serverBytes: m.bytes.WithLabelValues(r, p, backendToClient),
		duration:    m.duration.WithLabelValues(r, p),
	}
	s.open.Inc()
	return s
}

// MuxOpened counts an open multiplexed connection, and returns its
// observer.
func (m *Metrics) MuxOpened() bridge.MuxConnObserver {
	m.muxOpen.Inc()
	return muxConn{m}
}

type muxConn struct{ m *Metrics }

func (c muxConn) Stalled() { c.m.muxStalls.Inc() }

func (c muxConn) Closed(streams int) {
	c.m.muxOpen.Dec()
	c.m.muxStreams.Observe(float64(streams))
}

// WatchBackend reports the connectivity state of a backend's connection, read at scrape time from state(); the backend is reported until the returned func is called.
//
// state is called from the scraping goroutine and must not block. Watching a
// name again replaces the earlier watch, whose unwatch then does nothing.
// unwatch may be called more than once.
func (m *Metrics) WatchBackend(name string, state func() connectivity.State) (unwatch func()) {
	return m.backends.watch(name, state)
}

// ConfigReloaded counts configuration reloads by result (ok=true "success" / "failure") and sets a last-success timestamp gauge on success.
func (m *Metrics) ConfigReloaded(ok bool) {
	if !ok {
		m.reloadFail.Inc()
		return
	}
	m.reloadOK.Inc()
	m.lastReload.SetToCurrentTime()
}

// DescriptorsLoaded counts descriptor loads per backend by result.
// The first call for a backend also exports the other result at zero.
func (m *Metrics) DescriptorsLoaded(backend string, ok bool) {
	success := m.descriptors.WithLabelValues(backend, "success")
	failure := m.descriptors.WithLabelValues(backend, "failure")
	if ok {
		success.Inc()
	} else {
		failure.Inc()
	}
}

// SetDraining sets a 0/1 gauge.
func (m *Metrics) SetDraining(draining bool) {
	if draining {
		m.draining.Set(1)
	} else {
		m.draining.Set(0)
	}
}

// Handler returns the /metrics handler for g, which is usually the registry
// given to New. A scrape that fails to gather answers 500.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// stream is the StreamObserver of one RPC. Its fields are set in Accepted
// and only read afterwards; the collectors themselves are atomic.
type stream struct {
	m                       *Metrics
	route, protocol         string
	open                    prometheus.Gauge
	clientMsgs, clientBytes prometheus.Counter
	serverMsgs, serverBytes prometheus.Counter
	duration                prometheus.Observer
}

func (s *stream) ClientMessage(size int) {
	s.clientMsgs.Inc()
	if size > 0 { // Add panics on a negative value
		s.clientBytes.Add(float64(size))
	}
}

func (s *stream) ServerMessage(size int) {
	s.serverMsgs.Inc()
	if size > 0 {
		s.serverBytes.Add(float64(size))
	}
}

func (s *stream) Ended(code codes.Code, duration time.Duration) {
	s.m.open.Dec()
	s.open.Dec()
	s.m.streams.WithLabelValues(s.route, s.protocol, code.String()).Inc()
	s.duration.Observe(duration.Seconds())
}
