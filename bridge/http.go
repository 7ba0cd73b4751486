package bridge

import (
	"compress/gzip"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
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
	stopped bool  // the handler is returning
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
	defer b.mu.Unlock()
	if b.stopped {
		return // the request is over: its ResponseWriter is no more
	}
	b.stalled = true
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

var errAborted = errors.New("bridge: the call ended before its request")

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

// stop stops the watchdog once the call is over, before the handler
// returns.
func (b *requestBody) stop() {
	b.watchdog.Stop()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
}

// A callWriter is a call's response, bounded in time: one write may take
// at most the write timeout, and a client that takes nothing for that long
// is dropped, which ends the call and cancels its backend stream. It sees
// every write, vanguard's too, such as the last of a unary response, made
// after the session ended. A response that starts while the client may
// still be sending its request (a refusal, an early error) closes an
// HTTP/1 connection after it, so that net/http does not wait to read the
// rest of the body first.
type callWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	body    *requestBody
	http1   bool
	writes  *watchdog
	stalled atomic.Bool // the watchdog cut a write
	began   atomic.Bool // a response is under way

	mu   sync.Mutex
	done bool // the request is over: the ResponseWriter is no more
}

func newCallWriter(w http.ResponseWriter, r *http.Request, rc *http.ResponseController, body *requestBody, timeout time.Duration) *callWriter {
	c := &callWriter{ResponseWriter: w, rc: rc, body: body, http1: r.ProtoMajor == 1}
	c.writes = newWatchdog(timeout, func() {
		c.stalled.Store(true)
		c.abort()
	})
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
	_ = c.writes.guard(func() error {
		c.ResponseWriter.WriteHeader(code)
		return nil
	})
}

func (c *callWriter) Write(b []byte) (n int, err error) {
	c.start()
	err = c.writes.guard(func() (err error) {
		n, err = c.ResponseWriter.Write(b)
		return err
	})
	return n, err
}

func (c *callWriter) Flush() {
	c.start()
	_ = c.writes.guard(c.rc.Flush)
}

func (c *callWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// abort fails a write under way, and every later one, with a write
// deadline in the past. It may come from a timer as the request ends.
func (c *callWriter) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		_ = c.rc.SetWriteDeadline(time.Unix(1, 0))
	}
}

// stop ends the watchdog, before the handler returns.
func (c *callWriter) stop() {
	c.writes.stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done = true
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

// inflate decompresses a request message, at most limit bytes of it. It
// consumes data.
func inflate(data mem.BufferSlice, limit int) (mem.BufferSlice, error) {
	defer data.Free()
	d := gzipReaders.Get().(*boundedGzip)
	defer gzipReaders.Put(d)
	d.limit = int64(limit)
	err := d.Reset(data.Reader())
	var out mem.BufferSlice
	if err == nil {
		out, err = mem.ReadAll(d, mem.DefaultBufferPool())
	}
	if err != nil {
		out.Free()
		if st := vanguardError(err); st != nil {
			return nil, &failure{status: st}
		}
		return nil, invalidArgument(fmt.Sprintf("grpcws: compressed request message: %v", err))
	}
	return out, nil
}

var gzipReaders = sync.Pool{New: func() any { return new(boundedGzip) }}

// preflight answers a CORS preflight from an allowed origin: POST and GET
// (Connect's GET for side-effect-free methods), any request header (the
// call's metadata), credentials, cached for two hours.
func preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Set("Access-Control-Allow-Methods", "POST, GET")
	if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
		h.Set("Access-Control-Allow-Headers", req)
	}
	h.Set("Access-Control-Max-Age", "7200")
	h.Add("Vary", "Origin")
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// corsWriter adds the CORS headers of an allowed cross-origin request to
// the response, and exposes every header the response carries (metadata,
// grpc-status, Connect's trailer-*), as the page's client must read them.
type corsWriter struct {
	http.ResponseWriter
	origin string
	done   bool
}

func (c *corsWriter) header() {
	if c.done {
		return
	}
	c.done = true
	h := c.ResponseWriter.Header()
	var expose []string
	for k := range h {
		switch strings.ToLower(k) {
		case "cache-control", "content-language", "content-length", "content-type", "expires", "last-modified", "pragma", "trailer":
			continue
		}
		if !strings.HasPrefix(k, http.TrailerPrefix) {
			expose = append(expose, k)
		}
	}
	for _, v := range h.Values("Trailer") {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				expose = append(expose, t)
			}
		}
	}
	slices.Sort(expose)
	h.Set("Access-Control-Allow-Origin", c.origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	if len(expose) > 0 {
		h.Set("Access-Control-Expose-Headers", strings.Join(slices.Compact(expose), ", "))
	}
}

func (c *corsWriter) WriteHeader(code int) {
	c.header()
	c.ResponseWriter.WriteHeader(code)
}

func (c *corsWriter) Write(b []byte) (int, error) {
	c.header()
	return c.ResponseWriter.Write(b)
}

func (c *corsWriter) Flush() {
	c.header()
	http.NewResponseController(c.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (c *corsWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// textRequest turns a grpc-web-text request, whose body is base64, into a
// binary gRPC-Web one for the transcoder.
func textRequest(r *http.Request) *http.Request {
	r = r.Clone(r.Context())
	ct := r.Header.Get("Content-Type")
	r.Header.Set("Content-Type", "application/grpc-web"+strings.TrimPrefix(strings.ToLower(ct), "application/grpc-web-text"))
	r.Body = struct {
		io.Reader
		io.Closer
	}{base64.NewDecoder(base64.StdEncoding, r.Body), r.Body}
	r.ContentLength = -1
	r.Header.Del("Content-Length")
	return r
}

// textResponse encodes a binary gRPC-Web response as grpc-web-text: each
// write in base64 of its own, padded, as grpcwebproxy did; the clients
// decode groups of four characters, padded or not, so a message is never
// held back waiting for the bytes that would complete a group.
type textResponse struct {
	http.ResponseWriter
	wrote bool
}

func textWriter(w http.ResponseWriter) *textResponse { return &textResponse{ResponseWriter: w} }

func (t *textResponse) WriteHeader(code int) {
	if !t.wrote {
		t.wrote = true
		h := t.ResponseWriter.Header()
		if ct := h.Get("Content-Type"); strings.HasPrefix(ct, "application/grpc-web") {
			h.Set("Content-Type", "application/grpc-web-text"+strings.TrimPrefix(ct, "application/grpc-web"))
		}
		h.Del("Content-Length")
	}
	t.ResponseWriter.WriteHeader(code)
}

func (t *textResponse) Write(b []byte) (int, error) {
	if !t.wrote {
		t.WriteHeader(http.StatusOK)
	}
	if len(b) == 0 {
		return 0, nil
	}
	if _, err := io.WriteString(t.ResponseWriter, base64.StdEncoding.EncodeToString(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (t *textResponse) Flush() {
	http.NewResponseController(t.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (t *textResponse) Unwrap() http.ResponseWriter { return t.ResponseWriter }

// writeError answers a request that reaches no backend with st, in the
// request's protocol: a trailers-only response for gRPC and gRPC-Web, an
// error for Connect.
func writeError(w http.ResponseWriter, protocol string, st *status.Status) {
	h := w.Header()
	switch protocol {
	case "grpc", "grpc-web", "grpc-web-text":
		h.Set("Content-Type", "application/"+protocol+"+proto")
		h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
		h.Set("Grpc-Message", grpcheader.EncodeMessage(st.Message()))
		w.WriteHeader(http.StatusOK)
	case "connect-streaming":
		writeConnectStreamError(w, st)
	default:
		body, _ := json.Marshal(map[string]string{"code": connectCode(st.Code()), "message": st.Message()})
		h.Set("Content-Type", "application/json")
		w.WriteHeader(connectHTTPStatus(st.Code()))
		_, _ = w.Write(body)
	}
}

// writeConnectStreamError ends a Connect streaming response with st.
func writeConnectStreamError(w http.ResponseWriter, st *status.Status) {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": connectCode(st.Code()), "message": st.Message()}})
	frame := make([]byte, 5, 5+len(body))
	frame[0] = 0x02 // end of stream
	binary.BigEndian.PutUint32(frame[1:], uint32(len(body)))
	w.Header().Set("Content-Type", "application/connect+proto")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(frame, body...))
}

// connectCode is the Connect protocol's name of a code.
func connectCode(c codes.Code) string {
	switch c {
	case codes.Canceled:
		return "canceled"
	case codes.InvalidArgument:
		return "invalid_argument"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	case codes.NotFound:
		return "not_found"
	case codes.AlreadyExists:
		return "already_exists"
	case codes.PermissionDenied:
		return "permission_denied"
	case codes.ResourceExhausted:
		return "resource_exhausted"
	case codes.FailedPrecondition:
		return "failed_precondition"
	case codes.Aborted:
		return "aborted"
	case codes.OutOfRange:
		return "out_of_range"
	case codes.Unimplemented:
		return "unimplemented"
	case codes.Internal:
		return "internal"
	case codes.Unavailable:
		return "unavailable"
	case codes.DataLoss:
		return "data_loss"
	case codes.Unauthenticated:
		return "unauthenticated"
	}
	return "unknown"
}

// connectHTTPStatus is the HTTP status of a Connect unary error.
func connectHTTPStatus(c codes.Code) int {
	switch c {
	case codes.Canceled:
		return 499
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// trailerCase lower-cases the names in the trailers frames of a gRPC-Web
// response, as the gRPC-Web protocol asks: vanguard writes them in Go's
// canonical case, and Google's grpc-web client looks for "grpc-status"
// case-sensitively. Lower-casing keeps every length, so the frames pass
// through as they are written.
type trailerCase struct {
	http.ResponseWriter
	prefix  [5]byte
	n       int  // bytes of prefix seen
	left    int  // payload bytes left in the current frame
	trailer bool // the current frame holds trailers
	inName  bool // at a header name: lower-case until ':'
}

func (t *trailerCase) Write(b []byte) (int, error) {
	out := b
	copied := false
	for i := 0; i < len(b); {
		if t.left == 0 {
			t.prefix[t.n] = b[i]
			t.n++
			i++
			if t.n == 5 {
				t.n = 0
				t.left = int(binary.BigEndian.Uint32(t.prefix[1:]))
				t.trailer = t.prefix[0]&0x80 != 0
				t.inName = true
			}
			continue
		}
		n := min(t.left, len(b)-i)
		if t.trailer {
			for j := i; j < i+n; j++ {
				c := b[j]
				switch {
				case c == '\n':
					t.inName = true
				case !t.inName:
				case c == ':':
					t.inName = false
				case 'A' <= c && c <= 'Z':
					if !copied {
						out, copied = slices.Clone(b), true
					}
					out[j] = c + ('a' - 'A')
				}
			}
		}
		t.left -= n
		i += n
	}
	return t.ResponseWriter.Write(out)
}

func (t *trailerCase) Flush() {
	http.NewResponseController(t.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher
}

func (t *trailerCase) Unwrap() http.ResponseWriter { return t.ResponseWriter }
