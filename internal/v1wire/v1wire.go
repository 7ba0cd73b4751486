// Package v1wire is grpcws protocol v1 on the wire (docs/protocol.md), in
// both directions: route names and the bearer-token subprotocol entry,
// control frames, and the close codes with the statuses they stand for.
// The bridge, the Go client, the benchmark, the soak and the tests speak
// protocol v1 through it; nothing else spells a close code or a control
// frame. The TypeScript client's web/src/protocol.ts is its twin, and both
// are tested against testdata/vectors.json, so that the two cannot drift.
//
// Request metadata and grpc-timeout follow gRPC's own rules, in
// internal/grpcheader.
package v1wire

import (
	"encoding/base64"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
)

// Route names and the subprotocol list (docs/protocol.md, section 1).
const (
	// JSONSuffix, after a route name, selects the JSON encoding.
	JSONSuffix = "+json"
	// TokenPrefix starts the subprotocol entry that carries a bearer token
	// in base64url.
	TokenPrefix = "base64url.bearer.grpcws."
	// BearerPrefix starts the entries of every bearer-token scheme, ours
	// and others' (Kubernetes' "base64url.bearer.authorization.k8s.io."):
	// no route name starts with it.
	BearerPrefix = "base64url.bearer."
	// MetadataHeaderPrefix starts the upgrade request's headers that carry
	// request metadata: Grpc-Metadata-<key>.
	MetadataHeaderPrefix = "Grpc-Metadata-"
)

// RouteName returns the default route name of a gRPC method:
// "/pkg.Service/Method" becomes "pkg.Service.Method".
func RouteName(method string) (string, error) {
	name, ok := strings.CutPrefix(method, "/")
	if !ok || strings.Count(name, "/") != 1 || strings.HasSuffix(name, "/") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("grpcws: malformed method name %q", method)
	}
	return strings.Replace(name, "/", ".", 1), nil
}

// CheckRouteName reports whether name can be a route's subprotocol: an
// HTTP token, not ending in JSONSuffix, not starting with BearerPrefix.
func CheckRouteName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty subprotocol name")
	case !isToken(name):
		return fmt.Errorf("subprotocol %q is not an HTTP token", name)
	case strings.HasSuffix(name, JSONSuffix):
		return fmt.Errorf("subprotocol %q ends in %q", name, JSONSuffix)
	case strings.HasPrefix(name, BearerPrefix):
		return fmt.Errorf("subprotocol %q starts with %q", name, BearerPrefix)
	}
	return nil
}

// isToken reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// TokenEntry returns the subprotocol entry that carries token: TokenPrefix
// and the token in base64url, unpadded.
func TokenEntry(token string) string {
	return TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))
}

// An Offer is what a client offered in Sec-WebSocket-Protocol.
type Offer struct {
	Names []string // the entries in order, less every bearer-token entry
	Token string   // our bearer token, decoded; "" if none
}

// ParseOffer splits the values of Sec-WebSocket-Protocol. Entries of other
// bearer-token schemes are dropped unread, so that they are never echoed or
// logged. On a token that does not decode it still returns the names, so
// that a refusal can echo one, and an error that never holds the token.
func ParseOffer(values []string) (Offer, error) {
	var o Offer
	var tokenErr error
	for _, h := range values {
		for p := range strings.SplitSeq(h, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			enc, ok := strings.CutPrefix(p, TokenPrefix)
			if !ok {
				if !strings.HasPrefix(p, BearerPrefix) {
					o.Names = append(o.Names, p)
				}
				continue
			}
			tok, err := decodeToken(enc)
			if err != nil {
				tokenErr = err
				continue
			}
			o.Token = tok
		}
	}
	if tokenErr != nil {
		o.Token = ""
	}
	return o, tokenErr
}

func decodeToken(enc string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return "", fmt.Errorf("grpcws: bearer token in the subprotocol list is not base64url")
	}
	for _, c := range b {
		if c < ' ' || c > '~' {
			return "", fmt.Errorf("grpcws: bearer token in the subprotocol list is empty or not printable ASCII")
		}
	}
	if len(b) == 0 {
		return "", fmt.Errorf("grpcws: bearer token in the subprotocol list is empty or not printable ASCII")
	}
	return string(b), nil
}

// Close codes the bridge sends (docs/protocol.md, section 5).
const (
	CloseNormal        = websocket.StatusNormalClosure           // 1000: the RPC ended with OK
	CloseGoingAway     = websocket.StatusGoingAway               // 1001: shutdown or idle: reconnect
	CloseProtocolError = websocket.StatusProtocolError           // 1002: the client broke the WebSocket protocol
	CloseInvalidUTF8   = websocket.StatusInvalidFramePayloadData // 1007
	CloseTooBig        = websocket.StatusMessageTooBig           // 1009
	CloseTryAgainLater = websocket.StatusTryAgainLater           // 1013: over a connection limit
	CloseStatusBase    = websocket.StatusCode(4000)              // 4000 + a gRPC code other than OK
)

// CloseCode is the close code that ends an RPC with code: 1000 for OK,
// 4000 + code for the rest.
func CloseCode(code codes.Code) websocket.StatusCode {
	if code == codes.OK {
		return CloseNormal
	}
	return CloseStatusBase + websocket.StatusCode(code)
}

// CloseStatus is the status a client reads from a close without an end
// frame. The reason is the message; without one, the message says what
// the code means.
func CloseStatus(code websocket.StatusCode, reason string) *status.Status {
	c, fallback := codes.Unavailable, "the connection closed unexpectedly"
	switch {
	case code > CloseStatusBase && code <= CloseStatusBase+16:
		c = codes.Code(code - CloseStatusBase)
		fallback = "the RPC ended with " + codeName(c)
	case code == CloseNormal:
		c, fallback = codes.Internal, "the connection closed without a status"
	case code == CloseGoingAway:
		fallback = "the bridge went away"
	case code == CloseTooBig:
		c, fallback = codes.ResourceExhausted, "message too big"
	case code == CloseTryAgainLater:
		c, fallback = codes.ResourceExhausted, "too many connections: try again later"
	case code == CloseProtocolError, code == websocket.StatusUnsupportedData, code == CloseInvalidUTF8:
		c, fallback = codes.Internal, "WebSocket protocol error"
	}
	if reason == "" {
		return status.New(c, fmt.Sprintf("grpcws: %s (close code %d)", fallback, int(code)))
	}
	return status.New(c, reason)
}

// codeName is a code's name as gRPC's specification spells it in
// lower case: "invalid_argument".
func codeName(c codes.Code) string {
	var b strings.Builder
	for i, r := range c.String() {
		if 'A' <= r && r <= 'Z' {
			if i > 0 {
				b.WriteByte('_')
			}
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// CloseCarriesStatus reports whether a close code stands for a status on
// its own, without an end frame before it: 1001, 1009, 1013 and 4001 to
// 4016. After 1000 or a dropped connection (1006), a client that saw no
// end frame has no status from the bridge.
func CloseCarriesStatus(code websocket.StatusCode) bool {
	switch {
	case code == CloseGoingAway, code == CloseTooBig, code == CloseTryAgainLater:
		return true
	case code > CloseStatusBase && code <= CloseStatusBase+16:
		return true
	}
	return false
}

// CloseAgrees reports whether a close code may follow an end frame with
// code: its own code, or 1001 for UNAVAILABLE (shutdown, idle), 1009 for
// RESOURCE_EXHAUSTED (a backend message over the limit), 1007 for
// INVALID_ARGUMENT (text that is not UTF-8).
func CloseAgrees(code codes.Code, close websocket.StatusCode) bool {
	switch {
	case close == CloseCode(code):
		return true
	case code == codes.Unavailable && close == CloseGoingAway,
		code == codes.ResourceExhausted && close == CloseTooBig,
		code == codes.InvalidArgument && close == CloseInvalidUTF8:
		return true
	}
	return false
}

// MaxCloseReason is the longest close reason: a close frame holds 125
// bytes, two of which are the code.
const MaxCloseReason = 123

// CloseReason cuts msg at a UTF-8 character boundary to fit a close frame.
// Invalid UTF-8 is replaced, since a close reason must be valid UTF-8.
func CloseReason(msg string) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= MaxCloseReason {
		return msg
	}
	i := MaxCloseReason
	for i > 0 && !utf8.RuneStart(msg[i]) {
		i--
	}
	return msg[:i]
}

// ControlPrefix starts every control frame; JSON follows.
const ControlPrefix = '#'

// EndSend is the client's half-close, as docs/protocol.md spells it.
var EndSend = []byte(`#{"endSend":{}}`)

var (
	controlJSON  = protojson.MarshalOptions{EmitUnpopulated: true}
	controlParse = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// HeadersFrame encodes the backend's response headers. Content-Type is
// gRPC's own and says nothing about the frames the client gets: it is left
// out.
func HeadersFrame(md metadata.MD) ([]byte, error) {
	return serverFrame(&grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_Headers{Headers: ToMetadata(md)}})
}

// EndFrame encodes the final status and the trailers, less Content-Type
// (which a trailers-only response carries in its trailers).
func EndFrame(st *status.Status, trailers metadata.MD) ([]byte, error) {
	return serverFrame(&grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_End{End: &grpcwsv1.End{
		Status:   FromStatus(st),
		Trailers: ToMetadata(trailers),
	}}})
}

// FromStatus converts a gRPC status to its control-frame form.
func FromStatus(st *status.Status) *grpcwsv1.Status {
	p := st.Proto()
	s := &grpcwsv1.Status{Code: p.GetCode(), Message: p.GetMessage()}
	for _, d := range p.GetDetails() {
		s.Details = append(s.Details, &grpcwsv1.Detail{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()})
	}
	return s
}

func serverFrame(c *grpcwsv1.ServerControl) ([]byte, error) {
	b, err := controlJSON.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append([]byte{ControlPrefix}, b...), nil
}

// ParseClientControl parses a control frame from the client, '#' included.
// Members it does not know are ignored: a frame of a later version may
// come back with no kind set, to be skipped.
func ParseClientControl(b []byte) (*grpcwsv1.ClientControl, error) {
	var c grpcwsv1.ClientControl
	if err := parseControl(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// ParseServerControl parses a text frame from the bridge, which must be a
// control frame; members it does not know are ignored, as in
// ParseClientControl.
func ParseServerControl(b []byte) (*grpcwsv1.ServerControl, error) {
	var c grpcwsv1.ServerControl
	if err := parseControl(b, &c); err != nil {
		return nil, err
	}
	return &c, nil
}

func parseControl(b []byte, m proto.Message) error {
	if len(b) == 0 || b[0] != ControlPrefix {
		return fmt.Errorf("not a control frame: it does not start with %q", ControlPrefix)
	}
	return controlParse.Unmarshal(b[1:], m)
}

// ToMetadata converts gRPC metadata to its control-frame form: -bin values
// in standard base64, Content-Type left out.
func ToMetadata(md metadata.MD) *grpcwsv1.Metadata {
	m := &grpcwsv1.Metadata{Entries: make(map[string]*grpcwsv1.MetadataValues, len(md))}
	for k, vs := range md {
		if k == "content-type" {
			continue
		}
		out := make([]string, len(vs))
		for i, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out[i] = v
		}
		m.Entries[k] = &grpcwsv1.MetadataValues{Values: out}
	}
	return m
}

// FromMetadata converts control-frame metadata to gRPC metadata, decoding
// the base64 of -bin values.
func FromMetadata(m *grpcwsv1.Metadata) (metadata.MD, error) {
	md := metadata.MD{}
	for k, vs := range m.GetEntries() {
		for _, v := range vs.GetValues() {
			if strings.HasSuffix(k, "-bin") {
				b, err := base64.StdEncoding.DecodeString(v)
				if err != nil {
					return nil, fmt.Errorf("metadata %q is not base64", k)
				}
				v = string(b)
			}
			md[k] = append(md[k], v)
		}
	}
	return md, nil
}

// Status turns an end frame's status into a gRPC status.
func Status(s *grpcwsv1.Status) *status.Status {
	p := &spb.Status{Code: s.GetCode(), Message: s.GetMessage()}
	for _, d := range s.GetDetails() {
		p.Details = append(p.Details, &anypb.Any{TypeUrl: d.GetTypeUrl(), Value: d.GetValue()})
	}
	return status.FromProto(p)
}
