package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A Stream names the series of one route and one protocol.
type Stream struct {
	Route    string // "/package.Service/Method"
	Protocol string // a bridge.Protocol
}

// Counts are the RPC counters of one route and protocol at one moment.
type Counts struct {
	Open            float64            // RPCs open
	ClientMessages  float64            // messages forwarded from the client to the backend, ever
	BackendMessages float64            // messages forwarded from the backend to the client, ever
	Ended           map[string]float64 // RPCs ended, ever, by gRPC status code name ("OK", "NotFound", …)
}

// A Snapshot is every route and protocol's counters at one moment, and the
// refused connections and calls.
type Snapshot struct {
	Time    time.Time
	Streams map[Stream]Counts
	Refused map[string]float64 // refusals, ever, by reason (a bridge.Refusal)
}

// Snapshot reads the RPC counters now. It takes no lock that the bridge's
// per-message methods take.
func (m *Metrics) Snapshot() Snapshot {
	s := Snapshot{Time: time.Now(), Streams: map[Stream]Counts{}, Refused: map[string]float64{}}
	update := func(k Stream, f func(c *Counts)) {
		c := s.Streams[k]
		f(&c)
		s.Streams[k] = c
	}
	each(m.streamsOpen, func(l map[string]string, d *dto.Metric) {
		update(Stream{l["route"], l["protocol"]}, func(c *Counts) { c.Open = d.GetGauge().GetValue() })
	})
	each(m.messages, func(l map[string]string, d *dto.Metric) {
		update(Stream{l["route"], l["protocol"]}, func(c *Counts) {
			if l["direction"] == clientToBackend {
				c.ClientMessages = d.GetCounter().GetValue()
			} else {
				c.BackendMessages = d.GetCounter().GetValue()
			}
		})
	})
	each(m.streams, func(l map[string]string, d *dto.Metric) {
		update(Stream{l["route"], l["protocol"]}, func(c *Counts) {
			if c.Ended == nil {
				c.Ended = map[string]float64{}
			}
			c.Ended[l["code"]] = d.GetCounter().GetValue()
		})
	})
	each(m.handshakes, func(l map[string]string, d *dto.Metric) {
		if why := l["outcome"]; why != "accepted" {
			s.Refused[why] = d.GetCounter().GetValue()
		}
	})
	return s
}

// each calls f with the labels and the value of every series of c.
func each(c prometheus.Collector, f func(labels map[string]string, d *dto.Metric)) {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil {
			continue
		}
		labels := make(map[string]string, len(d.GetLabel()))
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		f(labels, &d)
	}
}

// A Change is what happened to one route and protocol between two
// snapshots.
type Change struct {
	ClientMessages  float64            // messages from the client
	BackendMessages float64            // messages from the backend
	Ended           map[string]float64 // RPCs ended, by code name; codes with none are left out
}

// Since returns, for each route and protocol of s, what changed since
// the earlier snapshot base, and the time between the two. Counters only
// grow, so a series missing from base counts from zero.
func (s Snapshot) Since(base Snapshot) (map[Stream]Change, time.Duration) {
	return s.changes(base), s.Time.Sub(base.Time)
}

// RefusedSince returns the refusals since the earlier snapshot base, by
// reason; reasons with none are left out.
func (s Snapshot) RefusedSince(base Snapshot) map[string]float64 {
	out := map[string]float64{}
	for why, n := range s.Refused {
		if d := n - base.Refused[why]; d > 0 {
			out[why] = d
		}
	}
	return out
}

func (s Snapshot) changes(base Snapshot) map[Stream]Change {
	out := make(map[Stream]Change, len(s.Streams))
	for k, now := range s.Streams {
		then := base.Streams[k]
		c := Change{
			ClientMessages:  now.ClientMessages - then.ClientMessages,
			BackendMessages: now.BackendMessages - then.BackendMessages,
		}
		for code, n := range now.Ended {
			if d := n - then.Ended[code]; d > 0 {
				if c.Ended == nil {
					c.Ended = map[string]float64{}
				}
				c.Ended[code] = d
			}
		}
		out[k] = c
	}
	return out
}

// A History keeps snapshots, oldest first, for as long as it is told, so
// that rates and recent counts can be read against one of them. It is safe
// for concurrent use.
type History struct {
	keep time.Duration

	mu    sync.Mutex
	snaps []Snapshot
}

// NewHistory returns a History that keeps snapshots for keep: a snapshot
// is dropped once the next one is older than keep, so that one at least
// keep old remains.
func NewHistory(keep time.Duration) *History {
	return &History{keep: keep}
}

// Add adds s, which must not be older than the snapshots added before.
func (h *History) Add(s Snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.snaps = append(h.snaps, s)
	cut := 0
	for cut+1 < len(h.snaps) && s.Time.Sub(h.snaps[cut+1].Time) >= h.keep {
		cut++
	}
	h.snaps = append(h.snaps[:0], h.snaps[cut:]...)
}

// Since returns the oldest snapshot taken at t or later, or false when
// there is none.
func (h *History) Since(t time.Time) (Snapshot, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.snaps {
		if !s.Time.Before(t) {
			return s, true
		}
	}
	return Snapshot{}, false
}
