package client

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// closeTimeout bounds the wait for the bridge's close after the end frame,
// as coder/websocket bounds its own close handshake.
const closeTimeout = 5 * time.Second

// read owns reading from the WebSocket. It hands messages to RecvMsg one
// at a time, records the headers and the outcome, and returns when the
// connection closes. After the end frame it keeps reading, so that the
// bridge's close is answered and the close handshake completes.
func (s *stream) read() {
	defer close(s.done)
	defer s.cancel()
	defer s.conn.CloseNow()

	ctx := s.ctx // until the end frame; then the wait for the close
	ended := false
	end := func(err error, trailer metadata.MD) {
		if ended {
			return
		}
		ended = true
		s.call.end(err, trailer)
	}
	for {
		typ, b, err := s.conn.Read(ctx)
		if err != nil {
			end(s.readError(err), nil)
			return
		}
		if ended {
			continue // only the close should follow the end frame
		}
		if typ == websocket.MessageBinary {
			if len(b) > s.maxRecv {
				end(status.Errorf(codes.ResourceExhausted, "grpcws: received message larger than max (%d vs. %d)", len(b), s.maxRecv), nil)
				return
			}
			select {
			case s.msgs <- b:
			case <-s.ctx.Done():
				end(s.contextErr(), nil)
				return
			}
			continue
		}
		if !utf8.Valid(b) {
			end(status.Error(codes.Internal, "grpcws: the bridge sent a control frame that is not UTF-8"), nil)
			return
		}
		c, err := v1wire.ParseServerControl(b)
		if err != nil {
			end(status.Errorf(codes.Internal, "grpcws: the bridge sent a text frame that is not a control frame: %v", err), nil)
			return
		}
		switch k := c.GetKind().(type) {
		case *grpcwsv1.ServerControl_Headers:
			md, err := v1wire.FromMetadata(k.Headers)
			if err != nil {
				end(status.Errorf(codes.Internal, "grpcws: headers from the bridge: %v", err), nil)
				return
			}
			s.setHeader(md) // a second headers frame: keep the first
		case *grpcwsv1.ServerControl_End:
			trailer, err := v1wire.FromMetadata(k.End.GetTrailers())
			if err != nil {
				end(status.Errorf(codes.Internal, "grpcws: trailers from the bridge: %v", err), nil)
				return
			}
			end(v1wire.Status(k.End.GetStatus()).Err(), trailer)
			// The RPC is over and the bridge closes next. Callers often
			// cancel their context as soon as RecvMsg returns: that must
			// not cut the close handshake short, which the bridge would
			// see as a dropped connection.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(s.ctx), closeTimeout)
			defer cancel()
		default:
			// A control frame of a later version: skip it.
		}
	}
}

// readError maps the error that ended reading before an end frame.
func (s *stream) readError(err error) error {
	if s.ctx.Err() != nil {
		return s.contextErr()
	}
	if errors.Is(err, websocket.ErrMessageTooBig) {
		return status.Errorf(codes.ResourceExhausted, "grpcws: received a frame larger than %d bytes", max(s.maxRecv, minReadLimit))
	}
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return v1wire.CloseStatus(ce.Code, ce.Reason).Err()
	}
	return status.Errorf(codes.Unavailable, "grpcws: connection lost: %v", err)
}
