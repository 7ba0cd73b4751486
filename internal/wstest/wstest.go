// Package wstest is a raw WebSocket client for testing servers against
// hostile and broken clients. It writes the upgrade request and every frame
// exactly as told, so a test can break any rule of RFC 6455 on purpose:
// dribble the request byte by byte, set reserved bits, leave frames
// unmasked, declare lengths it never sends, send unknown opcodes or
// oversized control frames. It reads the server's frames as they are.
//
// A Conn is for one goroutine at a time, except that Close and the deadline
// setters may be called from any goroutine to unblock a read or a write.
package wstest

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Opcodes of RFC 6455, section 5.2. The others (3 to 7, 11 to 15) are
// reserved: a server must fail a connection that uses them.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes that never travel in a close frame: they describe what the
// client saw.
const (
	// NoStatus is the code of a close frame without a payload.
	NoStatus = 1005
	// Abnormal is the code for a connection that ended without a close
	// frame, as browsers report it.
	Abnormal = 1006
)

// A Frame is one WebSocket frame. The zero Frame is an unmasked, non-final
// continuation frame with no payload: build frames with Text, Binary, Ping,
// Close and Fragments, then break what the test needs broken.
type Frame struct {
	Fin              bool
	RSV1, RSV2, RSV3 bool
	Opcode           byte // only the low four bits are written
	// Mask masks the payload with a random key, as every client frame must
	// be. Frames read from a server are returned unmasked, with Mask set if
	// the server masked them.
	Mask    bool
	Payload []byte
	// DeclaredLen, when set, is written as the payload length instead of
	// len(Payload), in the 64-bit form if it does not fit the shorter
	// ones. Payload is written as it is: a test declares a length it never
	// sends, or one that disagrees with what follows.
	DeclaredLen *uint64
}

// String describes f without its payload, for test failures.
func (f Frame) String() string {
	var flags []string
	for _, fl := range []struct {
		set  bool
		name string
	}{{f.Fin, "fin"}, {f.RSV1, "rsv1"}, {f.RSV2, "rsv2"}, {f.RSV3, "rsv3"}, {f.Mask, "masked"}} {
		if fl.set {
			flags = append(flags, fl.name)
		}
	}
	s := fmt.Sprintf("opcode %#x [%s] %d bytes", f.Opcode, strings.Join(flags, " "), len(f.Payload))
	if f.DeclaredLen != nil {
		s += fmt.Sprintf(" (declared %d)", *f.DeclaredLen)
	}
	return s
}

// Text returns a final, masked text frame.
func Text(s string) Frame { return Frame{Fin: true, Opcode: OpText, Mask: true, Payload: []byte(s)} }

// Binary returns a final, masked binary frame.
func Binary(b []byte) Frame { return Frame{Fin: true, Opcode: OpBinary, Mask: true, Payload: b} }

// Ping returns a masked ping frame.
func Ping(b []byte) Frame { return Frame{Fin: true, Opcode: OpPing, Mask: true, Payload: b} }

// Close returns a masked close frame with code and reason. It does not
// check either, so a test can send codes a peer must refuse.
func Close(code uint16, reason string) Frame {
	p := binary.BigEndian.AppendUint16(nil, code)
	return Frame{Fin: true, Opcode: OpClose, Mask: true, Payload: append(p, reason...)}
}

// Fragments splits one message into masked frames of at most size bytes of
// payload: the first carries opcode, the others are continuations, and the
// last is final. An empty payload gives one final frame.
func Fragments(opcode byte, payload []byte, size int) []Frame {
	if size <= 0 {
		size = len(payload)
	}
	var frames []Frame
	for first := true; first || len(payload) > 0; first = false {
		n := min(size, len(payload))
		op := OpContinuation
		if first {
			op = opcode
		}
		frames = append(frames, Frame{Opcode: op, Mask: true, Payload: payload[:n]})
		payload = payload[n:]
	}
	frames[len(frames)-1].Fin = true
	return frames
}

// Length returns a pointer to n, for Frame.DeclaredLen.
func Length(n uint64) *uint64 { return &n }

// AppendFrame appends the wire form of f to b. A masked frame's payload is
// masked with key.
func AppendFrame(b []byte, f Frame, key [4]byte) []byte {
	b0 := f.Opcode & 0x0f
	for _, bit := range []struct {
		set  bool
		mask byte
	}{{f.Fin, 0x80}, {f.RSV1, 0x40}, {f.RSV2, 0x20}, {f.RSV3, 0x10}} {
		if bit.set {
			b0 |= bit.mask
		}
	}
	n := uint64(len(f.Payload))
	if f.DeclaredLen != nil {
		n = *f.DeclaredLen
	}
	var b1 byte
	if f.Mask {
		b1 = 0x80
	}
	switch {
	case n < 126:
		b = append(b, b0, b1|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, b0, b1|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, b0, b1|127), n)
	}
	if !f.Mask {
		return append(b, f.Payload...)
	}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, f.Payload...)
	for i := range f.Payload {
		b[start+i] ^= key[i%4]
	}
	return b
}

// Request is a WebSocket upgrade request. Its zero value, with the Host
// that Dial fills in, is a valid request for "/".
type Request struct {
	Method string // default "GET"
	Path   string // default "/"
	Host   string // default: the address dialed
	// Subprotocols are offered in one Sec-WebSocket-Protocol header, in
	// order. None: no header.
	Subprotocols []string
	// Header holds more headers, such as Origin, Cookie or
	// Sec-WebSocket-Extensions (Host is the field above). A header set here
	// replaces the default of the same name (Upgrade, Connection,
	// Sec-WebSocket-Key, Sec-WebSocket-Version), so a test can send a
	// broken one; a header set to an empty slice is left out.
	Header http.Header
}

// defaultKey is the example key of RFC 6455, section 1.3.
const defaultKey = "dGhlIHNhbXBsZSBub25jZQ=="

// Bytes returns the request as it goes on the wire, headers in a stable
// order.
func (r Request) Bytes() []byte {
	h := http.Header{
		"Upgrade":               {"websocket"},
		"Connection":            {"Upgrade"},
		"Sec-Websocket-Key":     {defaultKey},
		"Sec-Websocket-Version": {"13"},
	}
	if len(r.Subprotocols) > 0 {
		h.Set("Sec-WebSocket-Protocol", strings.Join(r.Subprotocols, ", "))
	}
	for k, v := range r.Header {
		h[http.CanonicalHeaderKey(k)] = v
	}
	method, path := r.Method, r.Path
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, r.Host)
	for _, k := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[k] {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// A Conn is a client connection, before or after the upgrade.
type Conn struct {
	nc net.Conn
	br *bufio.Reader
	// Response is the server's answer to the upgrade, once Upgrade or
	// ReadResponse has read it. Its body is not read.
	Response *http.Response
}

// NewConn returns a Conn over nc that has not yet upgraded: write the
// request with Write (all at once, byte by byte, or not at all), then call
// ReadResponse.
func NewConn(nc net.Conn) *Conn {
	return &Conn{nc: nc, br: bufio.NewReader(nc)}
}

// Dial connects to addr over TCP and upgrades with r, whose Host defaults
// to addr. It fails unless the server switches protocols.
func Dial(ctx context.Context, addr string, r Request) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("wstest: %w", err)
	}
	if r.Host == "" {
		r.Host = addr
	}
	c := NewConn(nc)
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
		defer nc.SetDeadline(time.Time{})
	}
	if _, err := c.Upgrade(r.Bytes()); err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Upgrade writes the raw request req and reads the answer. It fails unless
// the answer is 101 Switching Protocols with the right
// Sec-WebSocket-Accept; the response is in c.Response either way.
func (c *Conn) Upgrade(req []byte) (*http.Response, error) {
	if err := c.Write(req); err != nil {
		return nil, err
	}
	res, err := c.ReadResponse()
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		return res, fmt.Errorf("wstest: upgrade answered %s", res.Status)
	}
	key := defaultKey
	if k := reqHeader(req, "Sec-WebSocket-Key"); k != "" {
		key = k
	}
	if got, want := res.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		return res, fmt.Errorf("wstest: Sec-WebSocket-Accept %q; want %q", got, want)
	}
	return res, nil
}

// ReadResponse reads the server's answer to the upgrade request.
func (c *Conn) ReadResponse() (*http.Response, error) {
	res, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return nil, fmt.Errorf("wstest: reading the upgrade response: %w", err)
	}
	c.Response = res
	return res, nil
}

// Write writes raw bytes: part of a request, or frames built by hand.
func (c *Conn) Write(b []byte) error {
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("wstest: write: %w", err)
	}
	return nil
}

// WriteFrame writes frames, each masked with a fresh random key if it is
// masked, in one write.
func (c *Conn) WriteFrame(frames ...Frame) error {
	var b []byte
	for _, f := range frames {
		var key [4]byte
		if f.Mask {
			_, _ = rand.Read(key[:])
		}
		b = AppendFrame(b, f, key)
	}
	return c.Write(b)
}

// maxRead bounds the payload of one frame ReadFrame accepts, so that a
// broken server cannot make a test allocate without bound.
const maxRead = 64 << 20

// ReadFrame reads one frame as the server sent it, unmasked.
func (c *Conn) ReadFrame() (Frame, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{
		Fin:    hdr[0]&0x80 != 0,
		RSV1:   hdr[0]&0x40 != 0,
		RSV2:   hdr[0]&0x20 != 0,
		RSV3:   hdr[0]&0x10 != 0,
		Opcode: hdr[0] & 0x0f,
		Mask:   hdr[1]&0x80 != 0,
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return Frame{}, unexpected(err)
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return Frame{}, unexpected(err)
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > maxRead {
		return Frame{}, fmt.Errorf("wstest: server frame of %d bytes", n)
	}
	var key [4]byte
	if f.Mask {
		if _, err := io.ReadFull(c.br, key[:]); err != nil {
			return Frame{}, unexpected(err)
		}
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, f.Payload); err != nil {
		return Frame{}, unexpected(err)
	}
	if f.Mask {
		for i := range f.Payload {
			f.Payload[i] ^= key[i%4]
		}
	}
	return f, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// A CloseError is a close frame from the server.
type CloseError struct {
	Code   int // NoStatus when the frame had no payload
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("wstest: server closed with %d %q", e.Code, e.Reason)
}

// ReadMessage reads the next data message, reassembling fragments. On the
// way it answers pings (ignoring a failure to write the pong) and skips
// pongs. A close frame from the server is
// echoed and returned as a *CloseError. It does not inflate compressed
// messages: compressed reports whether the message was (RSV1), and Inflate
// undoes it.
func (c *Conn) ReadMessage() (opcode byte, payload []byte, compressed bool, err error) {
	started := false
	for {
		f, err := c.ReadFrame()
		if err != nil {
			return 0, nil, false, err
		}
		switch f.Opcode {
		case OpPing:
			// Best effort: a connection the server has dropped fails the
			// next read, which says more.
			_ = c.WriteFrame(Frame{Fin: true, Opcode: OpPong, Mask: true, Payload: f.Payload})
			continue
		case OpPong:
			continue
		case OpClose:
			ce := parseClose(f.Payload)
			_ = c.WriteFrame(Frame{Fin: true, Opcode: OpClose, Mask: true, Payload: f.Payload[:min(len(f.Payload), 2)]})
			return 0, nil, false, ce
		case OpContinuation:
			if !started {
				return 0, nil, false, errors.New("wstest: continuation frame without a message")
			}
		default:
			if started {
				return 0, nil, false, fmt.Errorf("wstest: frame with opcode %#x inside a fragmented message", f.Opcode)
			}
			started, opcode, compressed = true, f.Opcode, f.RSV1
		}
		payload = append(payload, f.Payload...)
		if len(payload) > maxRead {
			return 0, nil, false, fmt.Errorf("wstest: server message over %d bytes", maxRead)
		}
		if f.Fin {
			return opcode, payload, compressed, nil
		}
	}
}

func parseClose(p []byte) *CloseError {
	if len(p) < 2 {
		return &CloseError{Code: NoStatus}
	}
	return &CloseError{Code: int(binary.BigEndian.Uint16(p)), Reason: string(p[2:])}
}

// A Message is a data message read by ReadUntilClose.
type Message struct {
	Opcode     byte
	Payload    []byte
	Compressed bool
}

// Closed is how the server ended a connection.
type Closed struct {
	// Code is the close frame's code; NoStatus for a close frame without
	// one; Abnormal when the connection ended without a close frame.
	Code   int
	Reason string
	// Messages are the data messages read before the end.
	Messages []Message
}

// ReadUntilClose reads messages until the server closes the connection,
// answering pings and echoing the close frame. A connection that ends
// without a close frame (EOF or reset) is reported as Abnormal, not as an
// error; a deadline or another failure to read is an error.
func (c *Conn) ReadUntilClose() (Closed, error) {
	var out Closed
	for {
		op, p, compressed, err := c.ReadMessage()
		var ce *CloseError
		switch {
		case errors.As(err, &ce):
			out.Code, out.Reason = ce.Code, ce.Reason
			return out, nil
		case isDropped(err):
			out.Code = Abnormal
			return out, nil
		case err != nil:
			return out, err
		}
		out.Messages = append(out.Messages, Message{Opcode: op, Payload: p, Compressed: compressed})
	}
}

// isDropped reports whether err is the connection ending without a close
// frame, rather than a deadline or a fault of the test.
func isDropped(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// SetDeadline sets the read and write deadline of the underlying
// connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline sets the read deadline of the underlying connection.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline of the underlying connection.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }

// NetConn returns the underlying connection, such as to shrink its
// buffers. Reading from it directly skips what Conn has buffered.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the underlying connection at once, without a close frame.
func (c *Conn) Close() error { return c.nc.Close() }

// Deflate compresses p as one permessage-deflate message (RFC 7692,
// section 7.2.1): raw DEFLATE, flushed, without the final empty block's
// four bytes. Send it in a frame with RSV1 set.
func Deflate(p []byte) []byte {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression) // the level is valid
	_, _ = w.Write(p)                                  // a bytes.Buffer does not fail
	_ = w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// Inflate undoes Deflate, and fails if the message inflates past limit
// bytes.
func Inflate(p []byte, limit int64) ([]byte, error) {
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("wstest: inflate: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("wstest: message inflates past %d bytes", limit)
	}
	return b, nil
}

// acceptKey is the Sec-WebSocket-Accept for key (RFC 6455, section 4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// reqHeader returns the first value of a header in a raw request.
func reqHeader(req []byte, name string) string {
	for line := range strings.SplitSeq(string(req), "\r\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
