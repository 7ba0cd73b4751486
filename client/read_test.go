package client

import (
	"testing"

	"github.com/coder/websocket"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
)

func TestCloseStatus(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		code   websocket.StatusCode
		reason string
		want   codes.Code
		msg    string // "" when any message will do
	}{
		{"4001 cancelled", 4001, "gone", codes.Canceled, "gone"},
		{"4003 invalid argument", 4003, `grpcws: metadata "x" refused`, codes.InvalidArgument, `grpcws: metadata "x" refused`},
		{"4004 deadline", 4004, "late", codes.DeadlineExceeded, "late"},
		{"4012 unimplemented", 4012, "no route", codes.Unimplemented, "no route"},
		{"4014 unavailable", 4014, "down", codes.Unavailable, "down"},
		{"4016 unauthenticated", 4016, "who", codes.Unauthenticated, "who"},
		{"4000 is not a code", 4000, "", codes.Unavailable, ""},
		{"4017 is not a code", 4017, "", codes.Unavailable, ""},
		{"1000 without end", websocket.StatusNormalClosure, "", codes.Internal, ""},
		{"1001 going away", websocket.StatusGoingAway, "grpcws: bridge shutting down", codes.Unavailable, "grpcws: bridge shutting down"},
		{"1002 protocol error", websocket.StatusProtocolError, "", codes.Internal, ""},
		{"1003 unsupported data", websocket.StatusUnsupportedData, "", codes.Internal, ""},
		{"1006 dropped", websocket.StatusAbnormalClosure, "", codes.Unavailable, ""},
		{"1007 invalid payload", websocket.StatusInvalidFramePayloadData, "", codes.Internal, ""},
		{"1009 too big", websocket.StatusMessageTooBig, "", codes.ResourceExhausted, ""},
		{"1013 try again later", websocket.StatusTryAgainLater, "grpcws: too many connections: try again later", codes.ResourceExhausted, "grpcws: too many connections: try again later"},
		{"1011 internal error", websocket.StatusInternalError, "", codes.Unavailable, ""},
		{"3000 application", 3000, "", codes.Unavailable, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := closeStatus(tt.code, tt.reason)
			if st.Code() != tt.want || (tt.msg != "" && st.Message() != tt.msg) {
				t.Errorf("closeStatus(%d, %q) = %v, %q; want %v, %q", tt.code, tt.reason, st.Code(), st.Message(), tt.want, tt.msg)
			}
		})
	}
}

func TestParseControl(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		frame   string
		want    *grpcwsv1.ServerControl // nil when parsing must fail
		wantErr codes.Code
	}{
		{
			name:  "headers",
			frame: `#{"headers":{"entries":{"x-a":{"values":["1","2"]},"x-b-bin":{"values":["AAE="]}}}}`,
			want: &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_Headers{Headers: &grpcwsv1.Metadata{Entries: map[string]*grpcwsv1.MetadataValues{
				"x-a": {Values: []string{"1", "2"}}, "x-b-bin": {Values: []string{"AAE="}},
			}}}},
		},
		{
			name:  "empty headers",
			frame: `#{"headers":{}}`,
			want:  &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_Headers{Headers: &grpcwsv1.Metadata{}}},
		},
		{
			name:  "end as the bridge writes it",
			frame: `#{"end":{"status":{"code":5,"message":"nicht gefunden","details":[]},"trailers":{"entries":{}}}}`,
			want: &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_End{End: &grpcwsv1.End{
				Status: &grpcwsv1.Status{Code: 5, Message: "nicht gefunden"}, Trailers: &grpcwsv1.Metadata{},
			}}},
		},
		{
			name:  "end with every field absent",
			frame: `#{"end":{}}`,
			want:  &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_End{End: &grpcwsv1.End{}}},
		},
		{
			name:  "snake_case names",
			frame: `#{"end":{"status":{"details":[{"type_url":"type.googleapis.com/x","value":"AQI="}]}}}`,
			want: &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_End{End: &grpcwsv1.End{
				Status: &grpcwsv1.Status{Details: []*grpcwsv1.Detail{{TypeUrl: "type.googleapis.com/x", Value: []byte{1, 2}}}},
			}}},
		},
		{
			name:  "unknown member is skipped",
			frame: `#{"later":{"x":1}}`,
			want:  &grpcwsv1.ServerControl{},
		},
		{
			name:  "unknown member next to a known one",
			frame: `#{"headers":{"entries":{},"more":true}}`,
			want:  &grpcwsv1.ServerControl{Kind: &grpcwsv1.ServerControl_Headers{Headers: &grpcwsv1.Metadata{}}},
		},
		{name: "no hash", frame: `{"headers":{}}`, wantErr: codes.Internal},
		{name: "empty frame", frame: ``, wantErr: codes.Internal},
		{name: "not JSON", frame: `#headers`, wantErr: codes.Internal},
		{name: "two members", frame: `#{"headers":{},"end":{}}`, wantErr: codes.Internal},
		{name: "not UTF-8", frame: "#{\"end\":{\"status\":{\"message\":\"\xff\"}}}", wantErr: codes.Internal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseControl([]byte(tt.frame))
			if tt.want == nil {
				if status.Code(err) != tt.wantErr {
					t.Fatalf("parseControl(%q) = %v, %v; want %v", tt.frame, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !proto.Equal(got, tt.want) {
				t.Fatalf("parseControl(%q) = %v, %v; want %v", tt.frame, got, err, tt.want)
			}
		})
	}
}

func TestStatusFrom(t *testing.T) {
	t.Parallel()
	if err := statusFrom(&grpcwsv1.Status{}); err != nil {
		t.Errorf("statusFrom(OK) = %v; want nil", err)
	}
	if err := statusFrom(nil); err != nil {
		t.Errorf("statusFrom(nil) = %v; want nil", err)
	}
	info, err := proto.Marshal(&errdetails.ErrorInfo{Reason: "QUOTA", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	err = statusFrom(&grpcwsv1.Status{Code: 9, Message: "précondition – 前提条件", Details: []*grpcwsv1.Detail{
		{TypeUrl: "type.googleapis.com/google.rpc.ErrorInfo", Value: info},
	}})
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "précondition – 前提条件" || len(st.Details()) != 1 {
		t.Fatalf("statusFrom = %v with details %v; want FAILED_PRECONDITION with one detail", st, st.Details())
	}
	if got, ok := st.Details()[0].(*errdetails.ErrorInfo); !ok || got.GetReason() != "QUOTA" {
		t.Errorf("detail = %v; want ErrorInfo QUOTA", st.Details()[0])
	}
}

func TestFromMetadata(t *testing.T) {
	t.Parallel()
	md, err := fromMetadata(&grpcwsv1.Metadata{Entries: map[string]*grpcwsv1.MetadataValues{
		"x-a":     {Values: []string{"1", "2"}},
		"x-b-bin": {Values: []string{"AP8Q", ""}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := md.Get("x-a"); len(got) != 2 || got[0] != "1" || got[1] != "2" {
		t.Errorf("x-a = %q; want [1 2]", got)
	}
	if got := md.Get("x-b-bin"); len(got) != 2 || got[0] != "\x00\xff\x10" || got[1] != "" {
		t.Errorf("x-b-bin = %q; want the decoded bytes", got)
	}
	if md, err := fromMetadata(nil); err != nil || len(md) != 0 {
		t.Errorf("fromMetadata(nil) = %v, %v; want empty", md, err)
	}
	if _, err := fromMetadata(&grpcwsv1.Metadata{Entries: map[string]*grpcwsv1.MetadataValues{"x-bin": {Values: []string{"!!"}}}}); status.Code(err) != codes.Internal {
		t.Errorf("bad base64: %v; want INTERNAL", err)
	}
}

// FuzzParseControl checks that no frame from a bridge makes the client
// panic, and that whatever parses turns into metadata and a status.
func FuzzParseControl(f *testing.F) {
	for _, s := range []string{
		`#{"headers":{"entries":{"x-a":{"values":["1"]}}}}`,
		`#{"end":{"status":{"code":3,"message":"m","details":[{"typeUrl":"t","value":"AQ=="}]},"trailers":{"entries":{"x-bin":{"values":["AQ=="]}}}}}`,
		`#{}`, `#`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseControl(b)
		if err != nil {
			if status.Code(err) != codes.Internal {
				t.Fatalf("parseControl error %v; want INTERNAL", err)
			}
			return
		}
		_, _ = fromMetadata(c.GetHeaders())
		_, _ = fromMetadata(c.GetEnd().GetTrailers())
		_ = statusFrom(c.GetEnd().GetStatus())
	})
}
