package connlimit

import (
	"errors"
	"net/netip"
	"testing"
)

// Which limit refuses, and a release that gives its place back once
// however often it is called.
func TestAcquire(t *testing.T) {
	t.Parallel()
	l := New(2, 1)
	a, b, c := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.4")
	releaseA, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(a); !errors.Is(err, ErrTooManyFromAddress) {
		t.Errorf("second from one address: %v; want ErrTooManyFromAddress", err)
	}
	if _, err := l.Acquire(b); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(c); !errors.Is(err, ErrTooMany) {
		t.Errorf("third in all: %v; want ErrTooManyConnections", err)
	}
	releaseA()
	releaseA()
	if n := l.Open(); n != 1 {
		t.Errorf("Open() = %d after releasing one of two twice; want 1", n)
	}
	if _, err := l.Acquire(c); err != nil {
		t.Errorf("after a release: %v", err)
	}
}
