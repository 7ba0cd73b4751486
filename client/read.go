package client

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
)

var controlParse = protojson.UnmarshalOptions{DiscardUnknown: true}

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
		s.err, s.trailer = err, trailer
		for _, p := range s.headerAddrs {
			*p = s.header
		}
		for _, p := range s.trailerAddrs {
			*p = trailer
		}
		close(s.ended)
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
		c, err := parseControl(b)
		if err != nil {
			end(err, nil)
			return
		}
		switch k := c.GetKind().(type) {
		case *grpcwsv1.ServerControl_Headers:
			md, err := fromMetadata(k.Headers)
			if err != nil {
				end(err, nil)
				return
			}
			select {
			case <-s.headerReady: // a second headers frame: keep the first
			default:
				s.header = md
				close(s.headerReady)
			}
		case *grpcwsv1.ServerControl_End:
			trailer, err := fromMetadata(k.End.GetTrailers())
			if err != nil {
				end(err, nil)
				return
			}
			end(statusFrom(k.End.GetStatus()), trailer)
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

// parseControl parses a text frame from the bridge, which must be a control
// frame: '#' and the JSON of a ServerControl. Members it does not know are
// ignored, so a frame may come back with no kind set.
func parseControl(b []byte) (*grpcwsv1.ServerControl, error) {
	if len(b) == 0 || b[0] != '#' {
		return nil, status.Error(codes.Internal, "grpcws: the bridge sent a text frame that is not a control frame")
	}
	if !utf8.Valid(b) {
		return nil, status.Error(codes.Internal, "grpcws: the bridge sent a control frame that is not UTF-8")
	}
	c := &grpcwsv1.ServerControl{}
	if err := controlParse.Unmarshal(b[1:], c); err != nil {
		return nil, status.Errorf(codes.Internal, "grpcws: malformed control frame from the bridge: %v", err)
	}
	return c, nil
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
		return closeStatus(ce.Code, ce.Reason).Err()
	}
	return status.Errorf(codes.Unavailable, "grpcws: connection lost: %v", err)
}

// contextErr is the status of an RPC whose context is done: the client's
// own error when it ended the RPC, CANCELLED otherwise (a cancel from
// within, as after a second response to a unary RPC).
func (s *stream) contextErr() error {
	if err := s.clientErr(); err != nil {
		return err
	}
	return status.FromContextError(s.ctx.Err()).Err()
}

// closeStatus maps a close without an end frame to a status, as
// docs/protocol.md, section 5, says.
func closeStatus(code websocket.StatusCode, reason string) *status.Status {
	switch {
	case code >= 4001 && code <= 4016:
		return status.New(codes.Code(code-4000), reason)
	case code == websocket.StatusGoingAway:
		return status.New(codes.Unavailable, nonEmpty(reason, "grpcws: bridge shutting down"))
	case code == websocket.StatusMessageTooBig:
		return status.New(codes.ResourceExhausted, nonEmpty(reason, "grpcws: message too big"))
	case code == websocket.StatusTryAgainLater:
		return status.New(codes.ResourceExhausted, nonEmpty(reason, "grpcws: too many connections: try again later"))
	case code == websocket.StatusNormalClosure:
		return status.New(codes.Internal, "grpcws: the bridge closed the connection without a status")
	case code == websocket.StatusProtocolError, code == websocket.StatusUnsupportedData, code == websocket.StatusInvalidFramePayloadData:
		return status.Newf(codes.Internal, "grpcws: closed with %d: %s", int(code), reason)
	default:
		return status.Newf(codes.Unavailable, "grpcws: closed with %d: %s", int(code), reason)
	}
}

func nonEmpty(s, fallback string) string {
	if s == "" {
		return fallback
	}
	return s
}

// statusFrom turns the end frame's status into an error, nil for OK.
func statusFrom(st *grpcwsv1.Status) error {
	if st.GetCode() == 0 {
		return nil
	}
	p := &spb.Status{Code: st.GetCode(), Message: st.GetMessage()}
	for _, d := range st.GetDetails() {
		p.Details = append(p.Details, &anypb.Any{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()})
	}
	return status.FromProto(p).Err()
}

// fromMetadata turns control-frame metadata into gRPC metadata, decoding
// the base64 of -bin values.
func fromMetadata(m *grpcwsv1.Metadata) (metadata.MD, error) {
	md := metadata.MD{}
	for k, vs := range m.GetEntries() {
		for _, v := range vs.GetValues() {
			if strings.HasSuffix(k, "-bin") {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return nil, status.Errorf(codes.Internal, "grpcws: metadata %q from the bridge is not base64", k)
				}
				v = string(b)
			}
			md[k] = append(md[k], v)
		}
	}
	return md, nil
}
