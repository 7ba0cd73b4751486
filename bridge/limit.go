package bridge

import (
	"net/netip"

	"github.com/grpcws/grpcws/internal/connlimit"
)

// A Limiter admits connections and calls, counting them while they are
// open: a WebSocket from its handshake to its close, an HTTP call from its
// start to its end. Acquire takes a place for the client at addr (see
// WithTrustedProxies for what the address is) and returns the function
// that gives it back, which the Handler calls once; or it returns an error,
// whose text the client reads as the reason of its refusal (close 1013, or
// RESOURCE_EXHAUSTED), so it should start with "grpcws:" and hold nothing
// secret. Acquire is called from many goroutines at once and must not
// block.
//
// One Limiter may serve several Handlers, such as the old and the new one
// across a reload of the configuration.
type Limiter interface {
	Acquire(addr netip.Addr) (release func(), err error)
}

// WithConnLimits caps the connections and calls open at once in the
// Handler, total in all and perAddr from one client address, with a
// Limiter of its own. Zero or less means no limit. Default: no limits. A
// connection over a limit is refused: the WebSocket handshake completes and
// closes with 1013 (try again later) and RESOURCE_EXHAUSTED; an HTTP call
// gets RESOURCE_EXHAUSTED (HTTP 429 in Connect). Open connections are not
// disturbed. To share limits between Handlers, use WithLimiter.
func WithConnLimits(total, perAddr int) Option {
	return optionFunc(func(c *config) { c.limiter = connlimit.New(total, perAddr) })
}

// WithLimiter admits connections and calls with l, in place of
// WithConnLimits. Default: none.
func WithLimiter(l Limiter) Option {
	return optionFunc(func(c *config) { c.limiter = l })
}
