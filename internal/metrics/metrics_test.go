package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/metrics"
)

var echoRoute = bridge.Route{
	Method:        "/echo.v1.Echo/Chat",
	Names:         []string{"echo.v1.Echo.Chat"},
	ClientStreams: true,
	ServerStreams: true,
	Protocol:      bridge.ProtocolV1,
}

func TestNewExportsZeroes(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	metrics.New(reg)

	const want = `
# HELP grpcws_connections_open RPCs open now.
# TYPE grpcws_connections_open gauge
grpcws_connections_open 0
# HELP grpcws_handshakes_total WebSocket handshakes by outcome: accepted, or why the connection was refused.
# TYPE grpcws_handshakes_total counter
grpcws_handshakes_total{outcome="accepted"} 0
grpcws_handshakes_total{outcome="bad_request"} 0
grpcws_handshakes_total{outcome="origin_refused"} 0
grpcws_handshakes_total{outcome="over_limit"} 0
grpcws_handshakes_total{outcome="shutting_down"} 0
grpcws_handshakes_total{outcome="unknown_route"} 0
# HELP grpcws_config_reloads_total Configuration reloads by result (success or failure).
# TYPE grpcws_config_reloads_total counter
grpcws_config_reloads_total{result="failure"} 0
grpcws_config_reloads_total{result="success"} 0
# HELP grpcws_config_last_reload_success_timestamp_seconds When the configuration was last loaded successfully, in seconds since the Unix epoch.
# TYPE grpcws_config_last_reload_success_timestamp_seconds gauge
grpcws_config_last_reload_success_timestamp_seconds 0
# HELP grpcws_draining 1 while the sidecar is draining connections before it stops, else 0.
# TYPE grpcws_draining gauge
grpcws_draining 0
# HELP grpcws_mux_connection_streams RPCs each multiplexed connection carried, observed when it closed.
# TYPE grpcws_mux_connection_streams histogram
grpcws_mux_connection_streams_bucket{le="1"} 0
grpcws_mux_connection_streams_bucket{le="2"} 0
grpcws_mux_connection_streams_bucket{le="5"} 0
grpcws_mux_connection_streams_bucket{le="10"} 0
grpcws_mux_connection_streams_bucket{le="25"} 0
grpcws_mux_connection_streams_bucket{le="50"} 0
grpcws_mux_connection_streams_bucket{le="100"} 0
grpcws_mux_connection_streams_bucket{le="250"} 0
grpcws_mux_connection_streams_bucket{le="1000"} 0
grpcws_mux_connection_streams_bucket{le="10000"} 0
grpcws_mux_connection_streams_bucket{le="+Inf"} 0
grpcws_mux_connection_streams_sum 0
grpcws_mux_connection_streams_count 0
# HELP grpcws_mux_connections_open Multiplexed (grpcws.mux.v1) connections open now; their RPCs are in grpcws_streams_open{protocol="grpcws.mux.v1"}.
# TYPE grpcws_mux_connections_open gauge
grpcws_mux_connections_open 0
# HELP grpcws_mux_flow_control_stalls_total Times a message to a multiplexed client waited for the client to grant flow-control window.
# TYPE grpcws_mux_flow_control_stalls_total counter
grpcws_mux_flow_control_stalls_total 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The families with per-route or per-backend labels have no series
	// until something happens.
	for _, name := range []string{
		"grpcws_streams_open", "grpcws_messages_total", "grpcws_message_bytes_total", "grpcws_streams_total",
		"grpcws_stream_duration_seconds", "grpcws_backend_state", "grpcws_backend_up",
		"grpcws_descriptor_loads_total",
	} {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: got %d series; want 0", name, n)
		}
	}
}

func TestStream(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)

	s := m.Accepted(echoRoute)
	other := m.Accepted(bridge.Route{Method: "/echo.v1.Echo/Unary", Protocol: bridge.ProtocolConnect})
	if got := sumOf(t, reg, "grpcws_connections_open"); got != 2 {
		t.Errorf("grpcws_connections_open while open: got %v; want 2", got)
	}
	const openWant = `
# HELP grpcws_streams_open RPCs open now, by route and protocol.
# TYPE grpcws_streams_open gauge
grpcws_streams_open{protocol="connect",route="/echo.v1.Echo/Unary"} %d
grpcws_streams_open{protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} %d
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(openWant, 1, 1)), "grpcws_streams_open"); err != nil {
		t.Errorf("while open: %v", err)
	}
	for _, size := range []int{10, 20, 30} {
		s.ClientMessage(size)
	}
	s.ServerMessage(5)
	s.ServerMessage(7)
	s.ServerMessage(0) // an empty message counts, adds no bytes
	s.Ended(codes.NotFound, 1500*time.Millisecond)
	other.ClientMessage(100)
	other.ServerMessage(200)
	other.Ended(codes.OK, 3*time.Millisecond)

	const want = `
# HELP grpcws_connections_open RPCs open now.
# TYPE grpcws_connections_open gauge
grpcws_connections_open 0
# HELP grpcws_handshakes_total WebSocket handshakes by outcome: accepted, or why the connection was refused.
# TYPE grpcws_handshakes_total counter
grpcws_handshakes_total{outcome="accepted"} 2
grpcws_handshakes_total{outcome="bad_request"} 0
grpcws_handshakes_total{outcome="origin_refused"} 0
grpcws_handshakes_total{outcome="over_limit"} 0
grpcws_handshakes_total{outcome="shutting_down"} 0
grpcws_handshakes_total{outcome="unknown_route"} 0
# HELP grpcws_messages_total Messages forwarded, by route, protocol and direction.
# TYPE grpcws_messages_total counter
grpcws_messages_total{direction="backend_to_client",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 3
grpcws_messages_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 3
grpcws_messages_total{direction="backend_to_client",protocol="connect",route="/echo.v1.Echo/Unary"} 1
grpcws_messages_total{direction="client_to_backend",protocol="connect",route="/echo.v1.Echo/Unary"} 1
# HELP grpcws_message_bytes_total Bytes of the messages forwarded, as sized on the wire, by route, protocol and direction.
# TYPE grpcws_message_bytes_total counter
grpcws_message_bytes_total{direction="backend_to_client",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 12
grpcws_message_bytes_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 60
grpcws_message_bytes_total{direction="backend_to_client",protocol="connect",route="/echo.v1.Echo/Unary"} 200
grpcws_message_bytes_total{direction="client_to_backend",protocol="connect",route="/echo.v1.Echo/Unary"} 100
# HELP grpcws_streams_total RPCs ended, by route, protocol and gRPC status code.
# TYPE grpcws_streams_total counter
grpcws_streams_total{code="NotFound",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 1
grpcws_streams_total{code="OK",protocol="connect",route="/echo.v1.Echo/Unary"} 1
# HELP grpcws_stream_duration_seconds How long RPCs lasted, by route and protocol.
# TYPE grpcws_stream_duration_seconds histogram
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.005"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.01"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.025"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.05"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.1"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.25"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="0.5"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="1"} 0
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="2.5"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="10"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="30"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="60"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="300"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="900"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="3600"} 1
grpcws_stream_duration_seconds_bucket{protocol="grpcws.v1",route="/echo.v1.Echo/Chat",le="+Inf"} 1
grpcws_stream_duration_seconds_sum{protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 1.5
grpcws_stream_duration_seconds_count{protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.005"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.01"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.025"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.05"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.1"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.25"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="0.5"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="1"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="2.5"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="10"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="30"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="60"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="300"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="900"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="3600"} 1
grpcws_stream_duration_seconds_bucket{protocol="connect",route="/echo.v1.Echo/Unary",le="+Inf"} 1
grpcws_stream_duration_seconds_sum{protocol="connect",route="/echo.v1.Echo/Unary"} 0.003
grpcws_stream_duration_seconds_count{protocol="connect",route="/echo.v1.Echo/Unary"} 1
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"grpcws_connections_open", "grpcws_handshakes_total", "grpcws_messages_total",
		"grpcws_message_bytes_total", "grpcws_streams_total", "grpcws_stream_duration_seconds")
	if err != nil {
		t.Error(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(fmt.Sprintf(openWant, 0, 0)), "grpcws_streams_open"); err != nil {
		t.Errorf("after the ends: %v", err)
	}
}

func TestNegativeSizeCountsMessageOnly(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	s := m.Accepted(echoRoute)
	s.ClientMessage(-1)
	s.ServerMessage(-1)
	if got := sumOf(t, reg, "grpcws_messages_total"); got != 2 {
		t.Errorf("grpcws_messages_total: got %v; want 2", got)
	}
	if got := sumOf(t, reg, "grpcws_message_bytes_total"); got != 0 {
		t.Errorf("grpcws_message_bytes_total: got %v; want 0", got)
	}
}

func TestRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		why  []bridge.Refusal
		want string
	}{
		{
			name: "none",
			want: `
grpcws_handshakes_total{outcome="accepted"} 0
grpcws_handshakes_total{outcome="bad_request"} 0
grpcws_handshakes_total{outcome="origin_refused"} 0
grpcws_handshakes_total{outcome="over_limit"} 0
grpcws_handshakes_total{outcome="shutting_down"} 0
grpcws_handshakes_total{outcome="unknown_route"} 0
`,
		},
		{
			name: "each",
			why: []bridge.Refusal{
				bridge.RefusedUnknownRoute, bridge.RefusedOrigin, bridge.RefusedOverLimit,
				bridge.RefusedOverLimit, bridge.RefusedBadRequest, bridge.RefusedShutdown,
				bridge.RefusedShutdown, bridge.RefusedShutdown,
			},
			want: `
grpcws_handshakes_total{outcome="accepted"} 0
grpcws_handshakes_total{outcome="bad_request"} 1
grpcws_handshakes_total{outcome="origin_refused"} 1
grpcws_handshakes_total{outcome="over_limit"} 2
grpcws_handshakes_total{outcome="shutting_down"} 3
grpcws_handshakes_total{outcome="unknown_route"} 1
`,
		},
		{
			name: "new reason",
			why:  []bridge.Refusal{"some_future_reason"},
			want: `
grpcws_handshakes_total{outcome="accepted"} 0
grpcws_handshakes_total{outcome="bad_request"} 0
grpcws_handshakes_total{outcome="origin_refused"} 0
grpcws_handshakes_total{outcome="over_limit"} 0
grpcws_handshakes_total{outcome="shutting_down"} 0
grpcws_handshakes_total{outcome="some_future_reason"} 1
grpcws_handshakes_total{outcome="unknown_route"} 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewPedanticRegistry()
			m := metrics.New(reg)
			for _, why := range tt.why {
				m.Refused(why)
			}
			want := "# HELP grpcws_handshakes_total WebSocket handshakes by outcome: accepted, or why the connection was refused.\n" +
				"# TYPE grpcws_handshakes_total counter\n" + strings.TrimPrefix(tt.want, "\n")
			if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_handshakes_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestConfigReloaded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)

	m.ConfigReloaded(false)
	m.ConfigReloaded(true)
	m.ConfigReloaded(true)
	m.ConfigReloaded(false)

	const want = `
# HELP grpcws_config_reloads_total Configuration reloads by result (success or failure).
# TYPE grpcws_config_reloads_total counter
grpcws_config_reloads_total{result="failure"} 2
grpcws_config_reloads_total{result="success"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_config_reloads_total"); err != nil {
		t.Error(err)
	}
}

func TestDescriptorsLoaded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	m.DescriptorsLoaded("echo", true)
	m.DescriptorsLoaded("echo", true)
	m.DescriptorsLoaded("chat", false)

	const want = `
# HELP grpcws_descriptor_loads_total Descriptor loads by backend and result (success or failure).
# TYPE grpcws_descriptor_loads_total counter
grpcws_descriptor_loads_total{backend="chat",result="failure"} 1
grpcws_descriptor_loads_total{backend="chat",result="success"} 0
grpcws_descriptor_loads_total{backend="echo",result="failure"} 0
grpcws_descriptor_loads_total{backend="echo",result="success"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_descriptor_loads_total"); err != nil {
		t.Error(err)
	}
}

func TestNewTwiceOnOneRegistryPanics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	defer func() {
		if recover() == nil {
			t.Error("second New on one registry: got no panic; want one")
		}
	}()
	metrics.New(reg)
}

func TestHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	s := m.Accepted(echoRoute)
	s.ClientMessage(42)
	m.Refused(bridge.RefusedOrigin)
	m.SetDraining(true)

	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d; want 200\n%s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type: got %q; want text/plain…", ct)
	}
	for _, line := range []string{
		"# TYPE grpcws_connections_open gauge",
		"grpcws_connections_open 1",
		`grpcws_handshakes_total{outcome="accepted"} 1`,
		`grpcws_handshakes_total{outcome="origin_refused"} 1`,
		`grpcws_handshakes_total{outcome="over_limit"} 0`,
		`grpcws_messages_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 1`,
		`grpcws_message_bytes_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} 42`,
		"grpcws_draining 1",
	} {
		if !containsLine(string(body), line) {
			t.Errorf("exposition lacks the line %q:\n%s", line, body)
		}
	}
	// Go and process metrics are the caller's to register.
	if strings.Contains(string(body), "go_goroutines") || strings.Contains(string(body), "process_") {
		t.Errorf("exposition has Go or process metrics:\n%s", body)
	}
}

func TestConcurrentMessages(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	const (
		streams    = 8
		goroutines = 4 // per stream, on both directions
		messages   = 1000
		size       = 3
	)
	var wg sync.WaitGroup
	for range streams {
		s := m.Accepted(echoRoute) // all streams share the route's series
		var rpc sync.WaitGroup
		for range goroutines {
			rpc.Go(func() {
				for range messages {
					s.ClientMessage(size)
					s.ServerMessage(2 * size)
				}
			})
		}
		wg.Go(func() {
			rpc.Wait()
			s.Ended(codes.Canceled, time.Second)
		})
	}
	// Scrape while the messages are counted.
	wg.Go(func() {
		for range 10 {
			if _, err := reg.Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()

	const n = streams * goroutines * messages
	want := `
# HELP grpcws_messages_total Messages forwarded, by route, protocol and direction.
# TYPE grpcws_messages_total counter
grpcws_messages_total{direction="backend_to_client",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} ` + itoa(n) + `
grpcws_messages_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} ` + itoa(n) + `
# HELP grpcws_message_bytes_total Bytes of the messages forwarded, as sized on the wire, by route, protocol and direction.
# TYPE grpcws_message_bytes_total counter
grpcws_message_bytes_total{direction="backend_to_client",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} ` + itoa(n*2*size) + `
grpcws_message_bytes_total{direction="client_to_backend",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} ` + itoa(n*size) + `
# HELP grpcws_streams_total RPCs ended, by route, protocol and gRPC status code.
# TYPE grpcws_streams_total counter
grpcws_streams_total{code="Canceled",protocol="grpcws.v1",route="/echo.v1.Echo/Chat"} ` + itoa(streams) + `
# HELP grpcws_connections_open RPCs open now.
# TYPE grpcws_connections_open gauge
grpcws_connections_open 0
`
	err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"grpcws_messages_total", "grpcws_message_bytes_total", "grpcws_streams_total", "grpcws_connections_open")
	if err != nil {
		t.Error(err)
	}
}

func BenchmarkClientMessage(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry())
	s := m.Accepted(echoRoute)
	b.ReportAllocs()
	for b.Loop() {
		s.ClientMessage(128)
	}
}

func BenchmarkClientMessageParallel(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		s := m.Accepted(echoRoute) // one RPC per goroutine, one route for all
		for pb.Next() {
			s.ClientMessage(128)
		}
	})
}

func BenchmarkAccepted(b *testing.B) {
	m := metrics.New(prometheus.NewRegistry())
	b.ReportAllocs()
	for b.Loop() {
		m.Accepted(echoRoute).Ended(codes.OK, time.Millisecond)
	}
}

func TestClientMessageDoesNotAllocate(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process's allocations.
	m := metrics.New(prometheus.NewRegistry())
	s := m.Accepted(echoRoute)
	if got := testing.AllocsPerRun(1000, func() {
		s.ClientMessage(128)
		s.ServerMessage(128)
	}); got != 0 {
		t.Errorf("allocations per message: got %v; want 0", got)
	}
}

func TestMux(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg)
	a, b := m.MuxOpened(), m.MuxOpened()
	a.Stalled()
	a.Stalled()
	b.Stalled()
	a.Closed(3)
	const want = `
# HELP grpcws_mux_connections_open Multiplexed (grpcws.mux.v1) connections open now; their RPCs are in grpcws_streams_open{protocol="grpcws.mux.v1"}.
# TYPE grpcws_mux_connections_open gauge
grpcws_mux_connections_open 1
# HELP grpcws_mux_flow_control_stalls_total Times a message to a multiplexed client waited for the client to grant flow-control window.
# TYPE grpcws_mux_flow_control_stalls_total counter
grpcws_mux_flow_control_stalls_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "grpcws_mux_connections_open", "grpcws_mux_flow_control_stalls_total"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "grpcws_mux_connection_streams"); err != nil || n != 1 {
		t.Errorf("connection streams: %d series, %v", n, err)
	}
}
