package bridge

import (
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

// acquire counts one more connection from addr, unless that goes over a
// limit. It returns which limit refused it: "" when it did not.
func (l *ConnLimiter) acquire(addr netip.Addr) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total > 0 && l.open >= l.total:
		return "grpcws: too many connections: try again later"
	case l.perAddr > 0 && l.byAddr[addr] >= l.perAddr:
		return "grpcws: too many connections from your address: try again later"
	}
	l.open++
	l.byAddr[addr]++
	return ""
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
