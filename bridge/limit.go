package bridge

import (
	"errors"
	"net/netip"
	"sync"
)

// A ConnLimiter caps the connections open at once, in total and per client
// address (see WithTrustedProxies for what the address is). It is safe for
// concurrent use, and may be shared by several Handlers, such as the old and
// the new one across a reload of the configuration.
type ConnLimiter struct {
	mu      sync.Mutex
	total   int // zero: no limit
	perAddr int // zero: no limit
	open    int
	byAddr  map[netip.Addr]int
}

// NewConnLimiter returns a ConnLimiter that allows total connections in all
// and perAddr from one client address. Zero or less means no limit.
func NewConnLimiter(total, perAddr int) *ConnLimiter {
	l := &ConnLimiter{byAddr: map[netip.Addr]int{}}
	l.SetLimits(total, perAddr)
	return l
}

// SetLimits changes the limits. Connections already open stay open, even
// when they are now over a limit; new ones are refused until the count
// drops below it.
func (l *ConnLimiter) SetLimits(total, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total, l.perAddr = max(total, 0), max(perAddr, 0)
}

// Open returns the number of connections open.
func (l *ConnLimiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// ErrTooManyConnections and ErrTooManyFromAddress are the refusals of
// Acquire: the total limit, and the limit per client address. The bridge
// sends their text as the close reason with 1013 (try again later).
var (
	ErrTooManyConnections = errors.New("grpcws: too many connections: try again later")
	ErrTooManyFromAddress = errors.New("grpcws: too many connections from your address: try again later")
)

// Acquire counts one more connection from addr, unless that goes over a
// limit: then it returns ErrTooManyConnections or ErrTooManyFromAddress and
// counts nothing. Otherwise release gives the place back; call it once,
// when the connection ends. Handlers given the limiter call it for each
// WebSocket; other servers that share the limits (an HTTP gateway beside
// the bridge) call it for each request.
func (l *ConnLimiter) Acquire(addr netip.Addr) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total > 0 && l.open >= l.total:
		return nil, ErrTooManyConnections
	case l.perAddr > 0 && l.byAddr[addr] >= l.perAddr:
		return nil, ErrTooManyFromAddress
	}
	l.open++
	l.byAddr[addr]++
	var once sync.Once
	return func() { once.Do(func() { l.release(addr) }) }, nil
}

func (l *ConnLimiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.byAddr[addr] - 1; n > 0 {
		l.byAddr[addr] = n
	} else {
		delete(l.byAddr, addr)
	}
}
