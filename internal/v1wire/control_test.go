package v1wire

import (
	"testing"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// statusErr is Status as an error, nil for OK, as a client reads it.
func statusErr(s *grpcwsv1.Status) error { return Status(s).Err() }

func TestParseServerControl(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		frame   string
		want    *grpcwsv1.ServerControl // nil when parsing must fail
		wantErr bool
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
		{name: "no hash", frame: `{"headers":{}}`, wantErr: true},
		{name: "empty frame", frame: ``, wantErr: true},
		{name: "not JSON", frame: `#headers`, wantErr: true},
		{name: "two members", frame: `#{"headers":{},"end":{}}`, wantErr: true},
		{name: "not UTF-8", frame: "#{\"end\":{\"status\":{\"message\":\"\xff\"}}}", wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseServerControl([]byte(tt.frame))
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParseServerControl(%q) = %v; want an error", tt.frame, got)
				}
				return
			}
			if err != nil || !proto.Equal(got, tt.want) {
				t.Fatalf("ParseServerControl(%q) = %v, %v; want %v", tt.frame, got, err, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	if err := statusErr(&grpcwsv1.Status{}); err != nil {
		t.Errorf("statusErr(OK) = %v; want nil", err)
	}
	if err := statusErr(nil); err != nil {
		t.Errorf("statusErr(nil) = %v; want nil", err)
	}
	info, err := proto.Marshal(&errdetails.ErrorInfo{Reason: "QUOTA", Domain: "example.com"})
	if err != nil {
		t.Fatal(err)
	}
	err = statusErr(&grpcwsv1.Status{Code: 9, Message: "précondition – 前提条件", Details: []*grpcwsv1.Detail{
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
	md, err := FromMetadata(&grpcwsv1.Metadata{Entries: map[string]*grpcwsv1.MetadataValues{
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
	if md, err := FromMetadata(nil); err != nil || len(md) != 0 {
		t.Errorf("FromMetadata(nil) = %v, %v; want empty", md, err)
	}
	if _, err := FromMetadata(&grpcwsv1.Metadata{Entries: map[string]*grpcwsv1.MetadataValues{"x-bin": {Values: []string{"!!"}}}}); err == nil {
		t.Errorf("bad base64: no error")
	}
}

// FuzzServerControl checks that no frame from a bridge makes the client
// panic, and that whatever parses turns into metadata and a status.
func FuzzServerControl(f *testing.F) {
	for _, s := range []string{
		`#{"headers":{"entries":{"x-a":{"values":["1"]}}}}`,
		`#{"end":{"status":{"code":3,"message":"m","details":[{"typeUrl":"t","value":"AQ=="}]},"trailers":{"entries":{"x-bin":{"values":["AQ=="]}}}}}`,
		`#{}`, `#`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseServerControl(b)
		if err != nil {
			return
		}
		_, _ = FromMetadata(c.GetHeaders())
		_, _ = FromMetadata(c.GetEnd().GetTrailers())
		_ = statusErr(c.GetEnd().GetStatus())
	})
}
