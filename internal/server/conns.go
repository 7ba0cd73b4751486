package server

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/connlimit"
	"github.com/grpcws/grpcws/internal/peer"
)

// A connTracker bounds the listener's connections while they carry no
// request, which the bridge cannot see.
//
//   - A connection that brings no request within limits.handshake_timeout
//     of its accept is closed. net/http's ReadHeaderTimeout does that for
//     HTTP/1, but not for HTTP/2's preface and SETTINGS, nor for a first
//     HEADERS frame that never ends. HTTP/2's pings bound header blocks
//     that stall later on (see Serve).
//   - An HTTP/2 connection holds a place in a limiter of its own, with the
//     same limits as WebSockets and calls (limits.max_connections and
//     max_connections_per_ip), whenever it has no stream open: from its
//     preface on, and while idle. Over a limit, it is closed. Its streams
//     hold places of their own (see the bridge). An HTTP/1 connection is
//     counted through the request it carries, a WebSocket or a call, as
//     before: so a client at its limit can still open a connection, and
//     learn with 1013 or RESOURCE_EXHAUSTED that it may have no more.
//
// Connections from a trusted proxy are not counted: one carries the
// requests of many clients, whose own addresses are counted per request.
type connTracker struct {
	limiter   *connlimit.Limiter
	handshake time.Duration
	log       *slog.Logger
	observer  bridge.Observer
	trusted   func() []netip.Prefix // the configuration's, now

	mu    sync.Mutex
	conns map[net.Conn]*trackedConn
}

// A trackedConn is the state of one connection.
type trackedConn struct {
	addr    netip.Addr
	counted bool        // from an address that is counted
	timer   *time.Timer // closes it unless a request comes
	http1   atomic.Bool // it carried an HTTP/1 request

	release func() // gives back its place; nil while it holds none; under connTracker.mu
}

type connKey struct{}

func newConnTracker(limiter *connlimit.Limiter, handshake time.Duration, log *slog.Logger, observer bridge.Observer, trusted func() []netip.Prefix) *connTracker {
	return &connTracker{
		limiter:   limiter,
		handshake: handshake,
		log:       log,
		observer:  observer,
		trusted:   trusted,
		conns:     map[net.Conn]*trackedConn{},
	}
}

// connContext is http.Server.ConnContext, which runs first for each
// accepted connection: it starts tracking it, and makes its state
// reachable from its requests, for served.
func (t *connTracker) connContext(ctx context.Context, c net.Conn) context.Context {
	addr := peer.Addr(c.RemoteAddr().String())
	tc := &trackedConn{addr: addr, counted: !peer.Trusted(addr, t.trusted())}
	t.mu.Lock()
	t.conns[c] = tc
	t.mu.Unlock()
	return context.WithValue(ctx, connKey{}, tc)
}

// connState is http.Server.ConnState.
func (t *connTracker) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if tc := t.get(c); tc != nil {
			// Set before the connection's goroutine starts, which stops it.
			tc.timer = time.AfterFunc(t.handshake, func() {
				t.log.Debug("grpcws: connection closed: no request within the handshake timeout",
					slog.String("client", tc.addr.String()), slog.Duration("handshake_timeout", t.handshake))
				_ = c.Close()
			})
		}
	case http.StateActive:
		// A request is under way, and holds a place of its own.
		if tc := t.get(c); tc != nil {
			t.let(tc)
		}
	case http.StateIdle:
		// HTTP/2 reports Active, then Idle, once it has read the preface;
		// HTTP/1 after each request.
		if tc := t.get(c); tc != nil && !tc.http1.Load() && !t.hold(tc) {
			t.refuse(c, tc)
		}
	case http.StateHijacked, http.StateClosed:
		t.mu.Lock()
		tc := t.conns[c]
		delete(t.conns, c)
		t.mu.Unlock()
		if tc != nil {
			tc.stopTimer()
			t.let(tc)
		}
	}
}

// served records that r arrived on its connection: the handshake timeout
// no longer applies to it.
func served(r *http.Request) {
	if tc, _ := r.Context().Value(connKey{}).(*trackedConn); tc != nil {
		tc.stopTimer()
		if r.ProtoMajor == 1 {
			tc.http1.Store(true)
		}
	}
}

func (t *connTracker) get(c net.Conn) *trackedConn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[c]
}

// hold takes a place for tc, unless it holds one or is not counted. It
// reports false when the limits refuse one.
func (t *connTracker) hold(tc *trackedConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !tc.counted || tc.release != nil {
		return true
	}
	release, err := t.limiter.Acquire(tc.addr)
	if err != nil {
		return false
	}
	tc.release = release
	return true
}

// let gives back tc's place, if it holds one.
func (t *connTracker) let(tc *trackedConn) {
	t.mu.Lock()
	release := tc.release
	tc.release = nil
	t.mu.Unlock()
	if release != nil {
		release()
	}
}

func (t *connTracker) refuse(c net.Conn, tc *trackedConn) {
	t.observer.Refused(bridge.RefusedOverLimit)
	t.log.Warn("grpcws: connection refused", slog.String("client", tc.addr.String()),
		slog.String("refusal", string(bridge.RefusedOverLimit)), slog.String("reason", "too many connections without a request"))
	_ = c.Close()
}

func (tc *trackedConn) stopTimer() {
	if t := tc.timer; t != nil {
		t.Stop()
	}
}
