package bridge

import (
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
)

// Close codes the bridge sends besides 1000 and 4000+code. See
// docs/protocol.md, section 5.
const (
	closeGoingAway     = websocket.StatusGoingAway               // 1001: shutting down
	closeInvalidUTF8   = websocket.StatusInvalidFramePayloadData // 1007
	closeTooBig        = websocket.StatusMessageTooBig           // 1009
	closeTryAgainLater = websocket.StatusTryAgainLater           // 1013: over a connection limit
)

// maxReason is the longest close reason: a control frame holds 125 bytes,
// two of which are the code.
const maxReason = 123

// closeCode maps a final status to the close code that ends the connection:
// 1000 for OK, 4000 + code for the rest.
func closeCode(st *status.Status) websocket.StatusCode {
	if st.Code() == codes.OK {
		return websocket.StatusNormalClosure
	}
	return websocket.StatusCode(4000 + int(st.Code()))
}

// closeReason cuts msg at a UTF-8 character boundary to fit a close frame.
// Invalid UTF-8 is replaced, since a close reason must be valid UTF-8.
func closeReason(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= maxReason {
		return msg
	}
	i := maxReason
	for i > 0 && !utf8.RuneStart(msg[i]) {
		i--
	}
	return msg[:i]
}

// A failure is how the bridge ends an RPC for a reason of its own: the
// status to send and the close code. A zero code means closeCode(status).
type failure struct {
	status *status.Status
	code   websocket.StatusCode
	// silent failures send nothing: the client is gone.
	silent bool
	// closeOnly failures send no end frame, only the close code: the
	// client broke the WebSocket protocol.
	closeOnly bool
}

func (f *failure) closeCode() websocket.StatusCode {
	if f.code != 0 {
		return f.code
	}
	return closeCode(f.status)
}

func invalidArgument(msg string) *failure {
	return &failure{status: status.New(codes.InvalidArgument, msg)}
}

var controlJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// controlFrame encodes a control frame: '#' and the JSON of c.
func controlFrame(c *grpcwsv1.ServerControl) ([]byte, error) {
	b, err := controlJSON.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte{'#'}, b...), nil
}

// headersFrame encodes the backend's response headers. Content-Type is
// gRPC's own (application/grpc+proto) and says nothing about the frames the
// client gets, so it is left out.
func headersFrame(md metadata.MD) ([]byte, error) {
	return controlFrame(&grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_Headers{Headers: toMetadata(withoutContentType(md))}})
}

// withoutContentType returns md without gRPC's content-type, which a
// trailers-only response carries in its trailers.
func withoutContentType(md metadata.MD) metadata.MD {
	if _, ok := md["content-type"]; ok {
		md = md.Copy()
		delete(md, "content-type")
	}
	return md
}

func endFrame(st *status.Status, trailers metadata.MD) ([]byte, error) {
	trailers = withoutContentType(trailers)
	p := st.Proto()
	s := &grpcwsv1.Status{Code: p.GetCode(), Message: p.GetMessage()}
	for _, d := range p.GetDetails() {
		s.Details = append(s.Details, &grpcwsv1.Detail{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()})
	}
	return controlFrame(&grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_End{End: &grpcwsv1.End{
		Status:   s,
		Trailers: toMetadata(trailers),
	}}})
}

var controlParse = protojson.UnmarshalOptions{DiscardUnknown: true}

// parseClientControl parses a client control frame, '#' included.
func parseClientControl(b []byte) (*grpcwsv1.ClientControl, error) {
	var c grpcwsv1.ClientControl
	if err := controlParse.Unmarshal(b[1:], &c); err != nil {
		return nil, err
	}
	return &c, nil
}
