package main

import (
	"testing"
	"time"
)

func TestPercentileAndMedian(t *testing.T) {
	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	if got := percentile(lat, 0.5); got != 51*time.Millisecond {
		t.Errorf("p50 = %v; want 51ms", got)
	}
	if got := percentile(lat, 0.99); got != 100*time.Millisecond {
		t.Errorf("p99 = %v; want 100ms", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %v; want 0", got)
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v; want 2", got)
	}
}

func TestMeasurementArithmetic(t *testing.T) {
	m := measurement{roundTrips: 1000, elapsed: 2 * time.Second, bridgeCPU: 40 * time.Millisecond}
	if got := m.rate(); got != 500 {
		t.Errorf("rate = %v; want 500", got)
	}
	if got := m.cpuPerRoundTrip(); got != 40*time.Microsecond {
		t.Errorf("CPU per round trip = %v; want 40µs", got)
	}
	if got := (measurement{}).cpuPerRoundTrip(); got != 0 {
		t.Errorf("CPU per round trip of nothing = %v; want 0", got)
	}
}
