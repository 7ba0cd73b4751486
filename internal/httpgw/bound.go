package httpgw

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The bounds of one HTTP call that net/http, vanguard and gRPC leave open:
// how long the client may take to send its request and to take the
// response, and how far a compressed message may inflate. docs/security.md
// lists them with their tests.

// A requestBody is a call's request body, bounded in time: while the call
// waits for the bytes of a message, one read may wait at most the read
// timeout. Between two whole messages of a client stream it waits as long
// as the client likes, as a WebSocket does: the idle timeout and the
// stream's deadline bound that, and HTTP/2 pings find a client that is
// gone. It also notes how the body ended, so that the call's status says
// what the client did wrong.
//
// One goroutine reads at a time (vanguard's, or the gRPC server's); the
// watchdog timer and the call's status read the rest under mu.
type requestBody struct {
	body      io.ReadCloser
	rc        *http.ResponseController
	timeout   time.Duration
	watchdog  *time.Timer
	enveloped bool // messages carry 5-byte prefixes: gRPC, gRPC-Web, Connect streaming
	streaming bool // the method takes a stream: the client may pause between messages

	// Where the reader is in the current message, when enveloped.
	prefix [5]byte
	seen   int // bytes of the prefix read so far
	left   int // bytes of the message still to come after its prefix

	mu      sync.Mutex
	ended   bool  // read to the end, or failed
	stalled bool  // the watchdog fired
	aborted bool  // the call ended: reading stopped
	cause   error // a status error saying what the client did wrong, or nil
}

func newRequestBody(r *http.Request, rc *http.ResponseController, timeout time.Duration) *requestBody {
	b := &requestBody{body: r.Body, rc: rc, timeout: timeout}
	b.watchdog = time.AfterFunc(time.Hour, b.stall)
	b.watchdog.Stop()
	if r.Body == nil || r.Body == http.NoBody {
		b.ended = true
	}
	return b
}

// expect tells the body what it carries: length-prefixed messages or one
// bare message, and whether the client may pause between messages.
func (b *requestBody) expect(enveloped, streaming bool) {
	b.enveloped, b.streaming = enveloped, streaming && enveloped
}

func (b *requestBody) Read(p []byte) (int, error) {
	waiting := !b.streaming || b.seen > 0 || b.left > 0
	if waiting {
		b.watchdog.Reset(b.timeout)
	}
	n, err := b.body.Read(p)
	stopped := waiting && !b.watchdog.Stop()
	b.mu.Lock()
	stalled, aborted := stopped && b.stalled, b.aborted
	b.mu.Unlock()
	switch {
	case aborted:
		return n, errAborted
	case stalled:
		return n, b.fail(status.Errorf(codes.DeadlineExceeded, "grpcws: the client sent no bytes of its request for %v", b.timeout))
	}
	if b.enveloped {
		b.scan(p[:n])
	}
	switch {
	case err == io.EOF && (b.seen > 0 || b.left > 0):
		return n, b.fail(status.Error(codes.InvalidArgument, "grpcws: the request ended inside a message"))
	case err == io.EOF:
		b.mu.Lock()
		b.ended = true
		b.mu.Unlock()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return n, b.fail(status.Errorf(codes.DeadlineExceeded, "grpcws: the client sent no bytes of its request for %v", b.timeout))
	}
	return n, err
}

// scan follows the message prefixes in p.
func (b *requestBody) scan(p []byte) {
	for len(p) > 0 {
		if b.left > 0 {
			n := min(b.left, len(p))
			b.left -= n
			p = p[n:]
			continue
		}
		n := copy(b.prefix[b.seen:], p)
		b.seen += n
		p = p[n:]
		if b.seen == len(b.prefix) {
			b.seen = 0
			b.left = int(uint32(b.prefix[1])<<24 | uint32(b.prefix[2])<<16 | uint32(b.prefix[3])<<8 | uint32(b.prefix[4]))
		}
	}
}

// stall runs when one read waited longer than the read timeout: it ends
// the read with a deadline in the past.
func (b *requestBody) stall() {
	b.mu.Lock()
	b.stalled = true
	b.mu.Unlock()
	_ = b.rc.SetReadDeadline(time.Unix(1, 0))
}

// abort ends a read under way, and every later one, when the call is
// over before the request: a client stream whose backend ended first.
func (b *requestBody) abort() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ended {
		return
	}
	b.ended, b.aborted = true, true
	_ = b.rc.SetReadDeadline(time.Unix(1, 0))
}

var errAborted = errors.New("httpgw: the call ended before its request")

// fail records why the body could not be read and returns an error for the
// reader: io.ErrUnexpectedEOF, which every reader above takes for a broken
// request.
func (b *requestBody) fail(cause error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ended = true
	if b.cause == nil {
		b.cause = cause
	}
	return io.ErrUnexpectedEOF
}

// failure returns what the client did wrong in its request, or nil.
func (b *requestBody) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cause
}

// unread reports whether the client may still be sending the body.
func (b *requestBody) unread() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.ended
}

func (b *requestBody) Close() error {
	b.watchdog.Stop()
	return b.body.Close()
}

// stop stops the watchdog once the call is over.
func (b *requestBody) stop() { b.watchdog.Stop() }

// A callWriter is a call's response, bounded in time: one write may take
// at most the write timeout, and a client that takes nothing for that long
// is dropped, which ends the call and cancels its backend stream. A
// response that starts while the client may still be sending its request
// (a refusal, an early error) closes an HTTP/1 connection after it, so that
// net/http does not wait to read the rest of the body first.
type callWriter struct {
	http.ResponseWriter
	rc       *http.ResponseController
	body     *requestBody
	http1    bool
	timeout  time.Duration
	watchdog *time.Timer
	stalled  atomic.Bool
	began    atomic.Bool // a response is under way
}

func newCallWriter(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, body *requestBody, timeout time.Duration) *callWriter {
	c := &callWriter{ResponseWriter: w, rc: rc, body: body, http1: r.ProtoMajor == 1, timeout: timeout}
	c.watchdog = time.AfterFunc(time.Hour, c.stall)
	c.watchdog.Stop()
	return c
}

func (c *callWriter) start() {
	if c.began.Swap(true) {
		return
	}
	if c.http1 && c.body.unread() {
		c.ResponseWriter.Header().Set("Connection", "close")
	}
}

func (c *callWriter) WriteHeader(code int) {
	c.start()
	c.watchdog.Reset(c.timeout)
	c.ResponseWriter.WriteHeader(code)
	c.watchdog.Stop()
}

func (c *callWriter) Write(b []byte) (int, error) {
	c.start()
	c.watchdog.Reset(c.timeout)
	n, err := c.ResponseWriter.Write(b)
	if !c.watchdog.Stop() && c.stalled.Load() {
		return n, errWriteStalled
	}
	return n, err
}

func (c *callWriter) Flush() {
	c.start()
	c.watchdog.Reset(c.timeout)
	_ = c.rc.Flush()
	c.watchdog.Stop()
}

func (c *callWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

var errWriteStalled = errors.New("httpgw: write stalled")

// stall runs when one write took longer than the write timeout: a write
// deadline in the past fails it, and with it the call.
func (c *callWriter) stall() {
	c.stalled.Store(true)
	_ = c.rc.SetWriteDeadline(time.Unix(1, 0))
}

// boundedGzip inflates gzip request messages for vanguard, at most limit
// bytes of each: a message that would inflate further fails with
// RESOURCE_EXHAUSTED after limit + 1 bytes, so that a small compressed
// body cannot make the gateway allocate more than the message size limit.
// Data that does not inflate fails with INVALID_ARGUMENT.
type boundedGzip struct {
	gz    gzip.Reader
	limit int64
	n     int64 // bytes inflated of this message
}

func newBoundedGzip(limit int) func() connect.Decompressor {
	return func() connect.Decompressor { return &boundedGzip{limit: int64(limit)} }
}

func (d *boundedGzip) Reset(r io.Reader) error {
	d.n = 0
	if err := d.gz.Reset(r); err != nil {
		return notGzip(err)
	}
	return nil
}

func (d *boundedGzip) Read(p []byte) (int, error) {
	if left := d.limit + 1 - d.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := d.gz.Read(p)
	d.n += int64(n)
	switch {
	case d.n > d.limit:
		return n, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("grpcws: compressed request message inflates past the limit of %d bytes", d.limit))
	case err != nil && err != io.EOF:
		return n, notGzip(err)
	}
	return n, err
}

func (d *boundedGzip) Close() error { return d.gz.Close() }

func notGzip(err error) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("grpcws: request message is not valid gzip: %w", err))
}

func gzipCompressor() connect.Compressor { return gzip.NewWriter(io.Discard) }

// vanguardError is what vanguard failed a request body with, as a status,
// or nil when err is not vanguard's.
func vanguardError(err error) *status.Status {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return nil
	}
	return status.New(codes.Code(ce.Code()), ce.Message())
}
