// Package v1test is a raw protocol v1 client for tests: it sends frames as
// a test writes them, and reads what the bridge sends, checking each
// control frame with internal/v1wire. The Go client (package client) is
// the real one; this one lets a test see every frame and send any.
package v1test

import (
	"context"
	"errors"
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// A Result is everything the bridge sent on one connection.
type Result struct {
	Headers *grpcwsv1.Metadata
	Frames  int // data frames
	Binary  [][]byte
	Text    []string
	End     *grpcwsv1.End
	Close   websocket.StatusCode // -1 when the connection dropped without a close
	Reason  string
	Order   []string // "headers", "message", "end"
	ReadErr error    // the read error, when it was not a close
}

// Code is the status code of the end frame, or -1 without one.
func (r Result) Code() int32 {
	if r.End == nil {
		return -1
	}
	return r.End.GetStatus().GetCode()
}

// ReadAll reads until the bridge closes the connection. It fails the test
// on a control frame that does not parse, or a data frame after the end.
func ReadAll(t testing.TB, ctx context.Context, c *websocket.Conn) Result {
	t.Helper()
	var r Result
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			r.Close = websocket.CloseStatus(err)
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				r.Reason = ce.Reason
			} else {
				r.ReadErr = err
			}
			return r
		}
		if typ == websocket.MessageText && len(b) > 0 && b[0] == v1wire.ControlPrefix {
			sc, err := v1wire.ParseServerControl(b)
			if err != nil {
				t.Fatalf("bad control frame %q: %v", b, err)
			}
			switch {
			case sc.GetHeaders() != nil:
				r.Headers = sc.GetHeaders()
				r.Order = append(r.Order, "headers")
			case sc.GetEnd() != nil:
				r.End = sc.GetEnd()
				r.Order = append(r.Order, "end")
			default:
				t.Fatalf("control frame with nothing set: %q", b)
			}
			continue
		}
		if r.End != nil {
			t.Fatalf("data frame after the end frame")
		}
		r.Frames++
		r.Order = append(r.Order, "message")
		if typ == websocket.MessageBinary {
			r.Binary = append(r.Binary, b)
		} else {
			r.Text = append(r.Text, string(b))
		}
	}
}

// Next reads frames until a message, and fails the test on a close.
func Next(t testing.TB, ctx context.Context, c *websocket.Conn) []byte {
	t.Helper()
	for {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if typ == websocket.MessageBinary {
			return b
		}
	}
}

// Send writes m as one binary frame.
func Send(t testing.TB, ctx context.Context, c *websocket.Conn, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageBinary, b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// SendText writes s as one text frame.
func SendText(t testing.TB, ctx context.Context, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// EndSend half-closes the request stream.
func EndSend(t testing.TB, ctx context.Context, c *websocket.Conn) {
	t.Helper()
	SendText(t, ctx, c, string(v1wire.EndSend))
}

// CloseCode reads until the connection closes and returns the close code
// and the number of messages read.
func CloseCode(ctx context.Context, c *websocket.Conn) (websocket.StatusCode, int) {
	n := 0
	for {
		typ, _, err := c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err), n
		}
		if typ == websocket.MessageBinary {
			n++
		}
	}
}
