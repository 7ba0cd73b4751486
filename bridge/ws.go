package bridge

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/v1wire"
)

// A wsConn is what the WebSocket framings share: one connection, read one
// message at a time into gRPC's buffers, written a message at a time, kept
// alive with pings and cut at once by abort.
type wsConn struct {
	conn   *websocket.Conn
	maxMsg int // bytes of one message, for the failure's message
}

// read reads one message. Reads end when the connection closes, never by
// a context: cancelling a read's context closes the connection too early.
// Its error is a *failure.
func (c wsConn) read() (websocket.MessageType, mem.Buffer, error) {
	typ, r, err := c.conn.Reader(context.Background())
	if err != nil {
		return 0, nil, c.readFailed(err)
	}
	buf, err := readMessage(r)
	if err != nil {
		return 0, nil, c.readFailed(err)
	}
	return typ, buf, nil
}

// readFailed classifies the error that ended reading from the client.
func (c wsConn) readFailed(err error) *failure {
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce):
		return &failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client closed the connection (%d) before the end", ce.Code)}
	case errors.Is(err, websocket.ErrMessageTooBig):
		// The WebSocket layer has already closed with 1009.
		return &failure{silent: true, code: v1wire.CloseTooBig, status: status.Newf(codes.ResourceExhausted,
			"grpcws: client message larger than %d bytes", c.maxMsg)}
	case connectionGone(err):
		return &failure{silent: true, status: status.Newf(codes.Canceled, "grpcws: client connection lost: %v", err)}
	default:
		// The client broke the WebSocket protocol (an unmasked frame, a
		// bad length, compressed data that does not inflate). The
		// WebSocket layer does not always say so: close with 1002.
		return &failure{closeOnly: true, code: v1wire.CloseProtocolError, status: status.Newf(codes.Canceled,
			"grpcws: client broke the WebSocket protocol: %v", err)}
	}
}

// connectionGone reports whether a read error means the connection ended
// (closed, reset, timed out) rather than that the client broke the
// protocol.
func connectionGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, context.Canceled)
}

// write writes one message of the parts of data, after prefix.
func (c wsConn) write(typ websocket.MessageType, prefix []byte, data mem.BufferSlice) error {
	if len(prefix) == 0 && len(data) == 1 {
		return c.conn.Write(context.Background(), typ, data[0].ReadOnlyData())
	}
	w, err := c.conn.Writer(context.Background(), typ)
	if err != nil {
		return err
	}
	if len(prefix) > 0 {
		_, err = w.Write(prefix)
	}
	for _, b := range data {
		if err != nil {
			break
		}
		_, err = w.Write(b.ReadOnlyData())
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

func (c wsConn) ping(ctx context.Context) error { return c.conn.Ping(ctx) }

func (c wsConn) abort() { _ = c.conn.CloseNow() }

// initialReadSize is the first buffer a message from the client is read
// into; it doubles until the message fits. It is above gRPC's pooling
// threshold (1 KiB): mem.NewBuffer does not return smaller buffers to the
// pool, which would cost an allocation per message.
const initialReadSize = 4 << 10

// readMessage reads one message into a buffer from gRPC's pool.
func readMessage(r io.Reader) (mem.Buffer, error) {
	pool := mem.DefaultBufferPool()
	bp := pool.Get(initialReadSize)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			next := pool.Get(2 * cap(b))
			nb := append((*next)[:0], b...)
			pool.Put(bp)
			bp, b = next, nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			*bp = b
			return mem.NewBuffer(bp, pool), nil
		}
		if err != nil {
			pool.Put(bp)
			return nil, err
		}
	}
}

// offers reports whether r offers the subprotocol name.
func offers(r *http.Request, name string) bool {
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.TrimSpace(p) == name {
				return true
			}
		}
	}
	return false
}

// acceptOptions are the options of every handshake. The origin is checked
// by the Handler, to refuse with a code rather than an HTTP error.
func (c *config) acceptOptions(subprotocols ...string) *websocket.AcceptOptions {
	mode := websocket.CompressionDisabled
	if c.compression {
		mode = websocket.CompressionNoContextTakeover // no per-connection dictionary
	}
	return &websocket.AcceptOptions{
		Subprotocols:       subprotocols,
		InsecureSkipVerify: true,
		CompressionMode:    mode,
	}
}
