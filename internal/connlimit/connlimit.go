// Package connlimit counts open connections and calls, in total and per
// client address, for the limits that the bridge and the sidecar share.
package connlimit

import (
	"errors"
	"net/netip"
	"sync"
)

// A Limiter caps what is open at once, in total and per client address. It
// is safe for concurrent use, and may be shared by several bridge Handlers,
// such as the old and the new one across a reload of the configuration.
type Limiter struct {
	mu      sync.Mutex
	total   int // zero: no limit
	perAddr int // zero: no limit
	open    int
	byAddr  map[netip.Addr]int
}

// New returns a Limiter that allows total places in all and perAddr for
// one client address. Zero or less means no limit.
func New(total, perAddr int) *Limiter {
	l := &Limiter{byAddr: map[netip.Addr]int{}}
	l.SetLimits(total, perAddr)
	return l
}

// SetLimits changes the limits. Places already taken stay taken, even when
// they are now over a limit; new ones are refused until the count drops
// below it.
func (l *Limiter) SetLimits(total, perAddr int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total, l.perAddr = max(total, 0), max(perAddr, 0)
}

// Open returns the number of places taken.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// The refusals of Acquire. Their text is what a client reads: the close
// reason with 1013, or the message of RESOURCE_EXHAUSTED.
var (
	ErrTooMany            = errors.New("grpcws: too many connections: try again later")
	ErrTooManyFromAddress = errors.New("grpcws: too many connections from your address: try again later")
)

// Acquire takes one place for addr, unless that goes over a limit: then it
// returns ErrTooMany or ErrTooManyFromAddress and takes nothing. Otherwise
// release gives the place back; it may be called more than once.
func (l *Limiter) Acquire(addr netip.Addr) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total > 0 && l.open >= l.total:
		return nil, ErrTooMany
	case l.perAddr > 0 && l.byAddr[addr] >= l.perAddr:
		return nil, ErrTooManyFromAddress
	}
	l.open++
	l.byAddr[addr]++
	var once sync.Once
	return func() { once.Do(func() { l.release(addr) }) }, nil
}

func (l *Limiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if n := l.byAddr[addr] - 1; n > 0 {
		l.byAddr[addr] = n
	} else {
		delete(l.byAddr, addr)
	}
}
