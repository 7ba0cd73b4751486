// Package h2test is a raw HTTP/2 client for hostile tests: it writes the
// frames a test asks for, in the order it asks, and reads nothing unless
// asked, so that a test can stop anywhere a real client never would (after
// the preface, inside a header block, with its window shut).
package h2test

import (
	"bytes"
	"net"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A Conn writes HTTP/2 frames to a connection without TLS, as a client with
// prior knowledge. It is not safe for concurrent use.
type Conn struct {
	nc       net.Conn
	framer   *http2.Framer
	prefaced bool
}

// New returns a Conn that writes to nc.
func New(nc net.Conn) *Conn {
	return &Conn{nc: nc, framer: http2.NewFramer(nc, nc)}
}

// Preface writes the client's connection preface and an empty SETTINGS
// frame, once.
func (c *Conn) Preface() error {
	if c.prefaced {
		return nil
	}
	c.prefaced = true
	if _, err := c.nc.Write([]byte(http2.ClientPreface)); err != nil {
		return err
	}
	return c.framer.WriteSettings()
}

// Headers writes a request's HEADERS frame on stream for a POST to path
// with the given header fields, after the preface. Without endHeaders, the
// header block stays open: the server waits for a CONTINUATION frame.
func (c *Conn) Headers(stream uint32, path string, fields map[string]string, endStream, endHeaders bool) error {
	if err := c.Preface(); err != nil {
		return err
	}
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":authority", Value: c.nc.RemoteAddr().String()}, {Name: ":path", Value: path},
	} {
		if err := enc.WriteField(f); err != nil {
			return err
		}
	}
	for k, v := range fields {
		if err := enc.WriteField(hpack.HeaderField{Name: k, Value: v}); err != nil {
			return err
		}
	}
	return c.framer.WriteHeaders(http2.HeadersFrameParam{
		StreamID:      stream,
		BlockFragment: block.Bytes(),
		EndStream:     endStream,
		EndHeaders:    endHeaders,
	})
}

// Request writes a whole request on stream: its headers, then body in one
// DATA frame that ends the stream.
func (c *Conn) Request(stream uint32, path string, fields map[string]string, body []byte) error {
	if err := c.Headers(stream, path, fields, false, true); err != nil {
		return err
	}
	return c.framer.WriteData(stream, true, body)
}

// ReadFrame reads the next frame from the server.
func (c *Conn) ReadFrame() (http2.Frame, error) {
	return c.framer.ReadFrame()
}
