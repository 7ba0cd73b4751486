package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"

	"github.com/grpcws/grpcws/bridge"
)

func TestConnectionsOpen(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry())
	var open []bridge.StreamObserver
	for i := range 3 {
		open = append(open, m.Accepted(bridge.Route{Method: "/echo.v1.Echo/Unary"}))
		if got, want := testutil.ToFloat64(m.open), float64(i+1); got != want {
			t.Errorf("after %d Accepted: got %v; want %v", i+1, got, want)
		}
	}
	for i, s := range open {
		s.Ended(codes.OK, time.Millisecond)
		if got, want := testutil.ToFloat64(m.open), float64(len(open)-i-1); got != want {
			t.Errorf("after %d Ended: got %v; want %v", i+1, got, want)
		}
	}
	if got := testutil.ToFloat64(m.accepted); got != 3 {
		t.Errorf("handshakes accepted: got %v; want 3", got)
	}
}

func TestSetDraining(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry())
	for _, draining := range []bool{true, true, false, true} {
		m.SetDraining(draining)
		want := 0.0
		if draining {
			want = 1
		}
		if got := testutil.ToFloat64(m.draining); got != want {
			t.Errorf("after SetDraining(%v): got %v; want %v", draining, got, want)
		}
	}
}

func TestLastReloadTimestamp(t *testing.T) {
	t.Parallel()
	m := New(prometheus.NewRegistry())

	m.ConfigReloaded(false)
	if got := testutil.ToFloat64(m.lastReload); got != 0 {
		t.Errorf("after a failure only: got %v; want 0", got)
	}
	before := float64(time.Now().UnixNano()) / 1e9
	m.ConfigReloaded(true)
	after := float64(time.Now().UnixNano()) / 1e9
	got := testutil.ToFloat64(m.lastReload)
	if got < before || got > after {
		t.Errorf("after a success: got %v; want within [%v, %v]", got, before, after)
	}
	m.ConfigReloaded(false)
	if again := testutil.ToFloat64(m.lastReload); again != got {
		t.Errorf("after a later failure: got %v; want it unchanged at %v", again, got)
	}
	if ok, fail := testutil.ToFloat64(m.reloadOK), testutil.ToFloat64(m.reloadFail); ok != 1 || fail != 2 {
		t.Errorf("reloads: got success %v, failure %v; want 1, 2", ok, fail)
	}
}
