package bridge

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// The limits of an RPC in time, each on a timer of its own, so that an
// idle RPC costs no goroutine: the write watchdog, the idle timeout and the
// pings. Writes take no context, which would cost a timer per frame.

// A watchdog bounds the time of one write: guard arms it for the write,
// and when a write outlasts the timeout, onStall runs, which must end the
// RPC and unblock the write.
type watchdog struct {
	timeout time.Duration
	timer   *time.Timer
	stalled atomic.Bool
}

// errWriteStalled is what a write returns when the watchdog ended it.
var errWriteStalled = errors.New("bridge: write stalled")

func newWatchdog(timeout time.Duration, onStall func()) *watchdog {
	w := new(watchdog)
	w.init(timeout, onStall)
	return w
}

// init readies a watchdog that is part of a larger value.
func (w *watchdog) init(timeout time.Duration, onStall func()) {
	w.timeout = timeout
	w.timer = time.AfterFunc(time.Hour, func() {
		w.stalled.Store(true)
		onStall()
	})
	w.timer.Stop()
}

// guard runs write under the watchdog. Calls of guard must not overlap.
func (w *watchdog) guard(write func() error) error {
	w.timer.Reset(w.timeout)
	err := write()
	if !w.timer.Stop() && w.stalled.Load() {
		return errWriteStalled
	}
	return err
}

func (w *watchdog) stop() { w.timer.Stop() }

// An idleTimer calls onIdle when no message went either way for d. A nil
// idleTimer does nothing.
type idleTimer struct {
	d      time.Duration
	last   atomic.Int64 // time.Now().UnixNano() of the last message
	mu     sync.Mutex
	timer  *time.Timer
	closed bool
}

func newIdleTimer(d time.Duration, onIdle func()) *idleTimer {
	t := &idleTimer{d: d}
	t.active()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.timer = time.AfterFunc(d, func() {
		quiet := time.Duration(time.Now().UnixNano() - t.last.Load())
		if quiet >= t.d {
			onIdle()
			return
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.closed {
			t.timer.Reset(t.d - quiet)
		}
	})
	return t
}

// active records a message.
func (t *idleTimer) active() {
	if t != nil {
		t.last.Store(time.Now().UnixNano())
	}
}

func (t *idleTimer) stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	t.timer.Stop()
}

// A keepalive pings the client every interval and calls onDead when a pong
// does not come within the timeout. While the bridge waits for the backend
// to take a message (sending), nothing reads the client, so a missing pong
// is no news about it; a ping that cannot be written is. The zero
// keepalive, never started, does nothing.
type keepalive struct {
	interval, timeout time.Duration
	p                 pinger
	sending           *atomic.Bool
	ended             <-chan struct{} // no pings once closed
	onDead            func()

	mu      sync.Mutex
	timer   *time.Timer
	closed  bool
	pinging sync.WaitGroup
}

func (k *keepalive) start(interval, timeout time.Duration, p pinger, sending *atomic.Bool, ended <-chan struct{}, onDead func()) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.interval, k.timeout, k.p, k.sending, k.ended, k.onDead = interval, timeout, p, sending, ended, onDead
	k.timer = time.AfterFunc(interval, k.ping)
}

func (k *keepalive) ping() {
	select {
	case <-k.ended:
		return
	default:
	}
	k.mu.Lock()
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.pinging.Add(1)
	k.mu.Unlock()
	defer k.pinging.Done()

	ctx, cancel := context.WithTimeout(context.Background(), k.timeout)
	err := k.p.ping(ctx)
	timedOut := ctx.Err() != nil
	cancel()
	if err != nil && timedOut && k.sending.Load() {
		err = nil
	}
	select {
	case <-k.ended:
		return // the RPC ended meanwhile: the ping failed on a closing connection
	default:
	}
	if err != nil {
		k.onDead()
		return
	}
	k.mu.Lock()
	if !k.closed {
		k.timer.Reset(k.interval)
	}
	k.mu.Unlock()
}

// stop stops the pings and waits for one under way.
func (k *keepalive) stop() {
	k.mu.Lock()
	k.closed = true
	if k.timer != nil {
		k.timer.Stop()
	}
	k.mu.Unlock()
	k.pinging.Wait()
}
