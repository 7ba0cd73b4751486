package metrics_test

import (
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/metrics"
)

func TestSnapshot(t *testing.T) {
	t.Parallel()
	m := metrics.New(prometheus.NewPedanticRegistry())
	if s := m.Snapshot(); len(s.Streams) != 0 {
		t.Errorf("before any RPC: %v; want no streams", s.Streams)
	}
	chat := echoRoute // grpcws.v1
	unary := bridge.Route{Method: "/echo.v1.Echo/Unary", Protocol: bridge.ProtocolConnect}
	open := m.Accepted(chat)
	open.ClientMessage(3)
	open.ClientMessage(3)
	open.ServerMessage(3)
	for _, code := range []codes.Code{codes.OK, codes.NotFound, codes.NotFound} {
		s := m.Accepted(unary)
		s.ClientMessage(1)
		s.ServerMessage(1)
		s.Ended(code, time.Millisecond)
	}
	m.Refused(bridge.RefusedUnknownRoute)
	m.Refused(bridge.RefusedUnknownRoute)
	m.Refused(bridge.RefusedOverLimit)
	before := time.Now()
	s := m.Snapshot()
	if s.Time.Before(before) || time.Since(s.Time) > time.Minute {
		t.Errorf("snapshot time %v; want now", s.Time)
	}
	tests := []struct {
		name string
		key  metrics.Stream
		want metrics.Counts
	}{
		{"open stream", metrics.Stream{Route: chat.Method, Protocol: "grpcws.v1"},
			metrics.Counts{Open: 1, ClientMessages: 2, BackendMessages: 1}},
		{"ended calls", metrics.Stream{Route: unary.Method, Protocol: "connect"},
			metrics.Counts{ClientMessages: 3, BackendMessages: 3, Ended: map[string]float64{"OK": 1, "NotFound": 2}}},
	}
	for _, tt := range tests {
		got, ok := s.Streams[tt.key]
		if !ok {
			t.Errorf("%s: no counts for %v", tt.name, tt.key)
			continue
		}
		if got.Open != tt.want.Open || got.ClientMessages != tt.want.ClientMessages ||
			got.BackendMessages != tt.want.BackendMessages || !maps.Equal(got.Ended, tt.want.Ended) {
			t.Errorf("%s: got %+v; want %+v", tt.name, got, tt.want)
		}
	}
	if len(s.Streams) != 2 {
		t.Errorf("%d streams: %v; want 2", len(s.Streams), s.Streams)
	}
	// Every reason is there from the start, at zero.
	wantRefused := map[string]float64{"unknown_route": 2, "over_limit": 1, "origin_refused": 0, "bad_request": 0, "shutting_down": 0}
	if !maps.Equal(s.Refused, wantRefused) {
		t.Errorf("refused %v; want %v", s.Refused, wantRefused)
	}
	base := s
	m.Refused(bridge.RefusedOrigin)
	if got, want := m.Snapshot().RefusedSince(base), map[string]float64{"origin_refused": 1}; !maps.Equal(got, want) {
		t.Errorf("RefusedSince = %v; want %v", got, want)
	}
}

func TestSnapshotSince(t *testing.T) {
	t.Parallel()
	k := metrics.Stream{Route: "/a.B/C", Protocol: "grpc"}
	fresh := metrics.Stream{Route: "/a.B/D", Protocol: "connect"}
	t0 := time.Unix(1000, 0)
	base := metrics.Snapshot{Time: t0, Streams: map[metrics.Stream]metrics.Counts{
		k: {ClientMessages: 10, BackendMessages: 20, Ended: map[string]float64{"OK": 5, "Canceled": 1}},
	}}
	now := metrics.Snapshot{Time: t0.Add(10 * time.Second), Streams: map[metrics.Stream]metrics.Counts{
		k:     {Open: 2, ClientMessages: 30, BackendMessages: 25, Ended: map[string]float64{"OK": 7, "Canceled": 1, "Unavailable": 3}},
		fresh: {ClientMessages: 4, Ended: map[string]float64{"OK": 4}},
	}}
	changes, d := now.Since(base)
	if d != 10*time.Second {
		t.Errorf("span %v; want 10s", d)
	}
	want := map[metrics.Stream]metrics.Change{
		k:     {ClientMessages: 20, BackendMessages: 5, Ended: map[string]float64{"OK": 2, "Unavailable": 3}},
		fresh: {ClientMessages: 4, Ended: map[string]float64{"OK": 4}},
	}
	if len(changes) != len(want) {
		t.Fatalf("changes %v; want %v", changes, want)
	}
	for key, w := range want {
		got := changes[key]
		if got.ClientMessages != w.ClientMessages || got.BackendMessages != w.BackendMessages || !maps.Equal(got.Ended, w.Ended) {
			t.Errorf("%v: got %+v; want %+v", key, got, w)
		}
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	h := metrics.NewHistory(time.Minute)
	t0 := time.Unix(1000, 0)
	if _, ok := h.Since(t0); ok {
		t.Error("an empty history has a snapshot")
	}
	at := func(s int) metrics.Snapshot { return metrics.Snapshot{Time: t0.Add(time.Duration(s) * time.Second)} }
	for s := 0; s <= 120; s += 10 {
		h.Add(at(s))
	}
	tests := []struct {
		name  string
		since int // seconds after t0
		want  int
		ok    bool
	}{
		{"a minute before the last", 60, 60, true},
		{"between two", 95, 100, true},
		{"older than what is kept: the oldest kept", 0, 60, true},
		{"the last", 120, 120, true},
		{"after the last", 121, 0, false},
	}
	for _, tt := range tests {
		got, ok := h.Since(t0.Add(time.Duration(tt.since) * time.Second))
		if ok != tt.ok || (ok && !got.Time.Equal(at(tt.want).Time)) {
			t.Errorf("%s: Since(t0+%ds) = %v, %v; want t0+%ds, %v", tt.name, tt.since, got.Time.Sub(t0), ok, tt.want, tt.ok)
		}
	}
}
