package v1wire

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
)

// vectors is testdata/vectors.json, which the TypeScript client's tests
// read too.
type vectors struct {
	Closes []struct {
		Close   int    `json:"close"`
		Reason  string `json:"reason"`
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"closes"`
	CloseCodes []struct {
		Code  int `json:"code"`
		Close int `json:"close"`
	} `json:"closeCodes"`
	CarriesStatus []struct {
		Close   int  `json:"close"`
		Carries bool `json:"carries"`
	} `json:"carriesStatus"`
	Agrees []struct {
		Code   int  `json:"code"`
		Close  int  `json:"close"`
		Agrees bool `json:"agrees"`
	} `json:"agrees"`
	Reasons []struct {
		Message string `json:"message"`
		Reason  string `json:"reason"`
	} `json:"reasons"`
	Timeouts []struct {
		Ms      int64  `json:"ms"`
		Encoded string `json:"encoded"`
	} `json:"timeouts"`
	ParseTimeouts []struct {
		Value   string `json:"value"`
		Nanos   int64  `json:"nanos"`
		Invalid bool   `json:"invalid"`
	} `json:"parseTimeouts"`
	Tokens []struct {
		Token string `json:"token"`
		Entry string `json:"entry"`
	} `json:"tokens"`
	Routes []struct {
		Method string `json:"method"`
		Name   string `json:"name"`
	} `json:"routes"`
	EndSend      string `json:"endSend"`
	ServerFrames []struct {
		Frame    string              `json:"frame"`
		Kind     string              `json:"kind"`
		Code     int32               `json:"code"`
		Message  string              `json:"message"`
		Details  []map[string]string `json:"details"`
		Metadata map[string][]string `json:"metadata"`
	} `json:"serverFrames"`
}

func load(t *testing.T) vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Closes) == 0 || len(v.ServerFrames) == 0 || len(v.Tokens) == 0 {
		t.Fatal("testdata/vectors.json lacks sections")
	}
	return v
}

func TestCloses(t *testing.T) {
	t.Parallel()
	v := load(t)
	for _, c := range v.Closes {
		st := CloseStatus(websocket.StatusCode(c.Close), c.Reason)
		if int(st.Code()) != c.Code || st.Message() != c.Message {
			t.Errorf("CloseStatus(%d, %q) = %v %q; want %v %q", c.Close, c.Reason, st.Code(), st.Message(), codes.Code(c.Code), c.Message)
		}
	}
	for _, c := range v.CloseCodes {
		if got := CloseCode(codes.Code(c.Code)); int(got) != c.Close {
			t.Errorf("CloseCode(%v) = %d; want %d", codes.Code(c.Code), got, c.Close)
		}
	}
	for _, c := range v.Agrees {
		if got := CloseAgrees(codes.Code(c.Code), websocket.StatusCode(c.Close)); got != c.Agrees {
			t.Errorf("CloseAgrees(%v, %d) = %v; want %v", codes.Code(c.Code), c.Close, got, c.Agrees)
		}
	}
	for _, c := range v.CarriesStatus {
		if got := CloseCarriesStatus(websocket.StatusCode(c.Close)); got != c.Carries {
			t.Errorf("CloseCarriesStatus(%d) = %v; want %v", c.Close, got, c.Carries)
		}
	}
	// Every code's close code reads back as that code.
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		if got := CloseStatus(CloseCode(c), "x").Code(); got != c {
			t.Errorf("CloseStatus(CloseCode(%v)) = %v", c, got)
		}
	}
}

func TestCloseReason(t *testing.T) {
	t.Parallel()
	for _, c := range load(t).Reasons {
		if got := CloseReason(c.Message); got != c.Reason {
			t.Errorf("CloseReason(%q) = %q; want %q", c.Message, got, c.Reason)
		}
	}
	if got := CloseReason("bad \xff\xfe"); got != "bad \uFFFD" {
		t.Errorf("CloseReason of invalid UTF-8 = %q; want it replaced", got)
	}
}

func FuzzCloseReason(f *testing.F) {
	f.Add("grpcws: " + strings.Repeat("é", 100))
	f.Add("\xff")
	f.Fuzz(func(t *testing.T, msg string) {
		r := CloseReason(msg)
		if len(r) > MaxCloseReason || !utf8.ValidString(r) {
			t.Fatalf("CloseReason(%q) = %q: %d bytes, valid %v", msg, r, len(r), utf8.ValidString(r))
		}
		if utf8.ValidString(msg) && !strings.HasPrefix(msg, r) {
			t.Fatalf("CloseReason(%q) = %q: not a prefix", msg, r)
		}
	})
}

// Timeouts follow gRPC's rules, in grpcheader; the vectors hold both
// clients to the same encoding.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	v := load(t)
	for _, c := range v.Timeouts {
		if got := grpcheader.EncodeTimeout(time.Duration(c.Ms) * time.Millisecond); got != c.Encoded {
			t.Errorf("EncodeTimeout(%d ms) = %q; want %q", c.Ms, got, c.Encoded)
		}
	}
	for _, c := range v.ParseTimeouts {
		d, err := grpcheader.ParseTimeout(c.Value)
		if (err != nil) != c.Invalid || (!c.Invalid && d != time.Duration(c.Nanos)) {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %v, invalid %v", c.Value, d, err, time.Duration(c.Nanos), c.Invalid)
		}
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	for _, c := range load(t).Tokens {
		if got := TokenEntry(c.Token); got != c.Entry {
			t.Errorf("TokenEntry(%q) = %q; want %q", c.Token, got, c.Entry)
		}
		o, err := ParseOffer([]string{"a.B.C, " + c.Entry})
		if err != nil || o.Token != c.Token || !reflect.DeepEqual(o.Names, []string{"a.B.C"}) {
			t.Errorf("ParseOffer(%q) = %+v, %v; want token %q and the name", c.Entry, o, err, c.Token)
		}
	}
	// Other schemes are dropped unread; a token that does not decode is an
	// error that does not hold it, and the names survive.
	o, err := ParseOffer([]string{"x.y, base64url.bearer.authorization.k8s.io.c2VjcmV0", TokenPrefix + "***secret***"})
	if err == nil || strings.Contains(err.Error(), "secret") || o.Token != "" || !reflect.DeepEqual(o.Names, []string{"x.y"}) {
		t.Errorf("ParseOffer with a foreign and a bad token = %+v, %v", o, err)
	}
	if _, err := ParseOffer([]string{TokenPrefix + base64.RawURLEncoding.EncodeToString([]byte("a\x01b"))}); err == nil {
		t.Errorf("a token that is not printable was accepted")
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	for _, c := range load(t).Routes {
		got, err := RouteName(c.Method)
		if err != nil || got != c.Name {
			t.Errorf("RouteName(%q) = %q, %v; want %q", c.Method, got, err, c.Name)
		}
		if err := CheckRouteName(got); err != nil {
			t.Errorf("CheckRouteName(%q) = %v", got, err)
		}
	}
	for _, m := range []string{"examples.echo.v1.EchoService/Echo", "/examples.echo.v1.EchoService/", "//Echo", "/a/b/c"} {
		if _, err := RouteName(m); err == nil {
			t.Errorf("RouteName(%q) = nil error", m)
		}
	}
	for _, name := range []string{"a b", "x+json", "base64url.bearer.x", "", "a,b", "é"} {
		if err := CheckRouteName(name); err == nil {
			t.Errorf("CheckRouteName(%q) = nil; want an error", name)
		}
	}
	for _, name := range []string{"chat.v1", "grpc.testing.TestService.FullDuplexCall", "a_b-c~d"} {
		if err := CheckRouteName(name); err != nil {
			t.Errorf("CheckRouteName(%q) = %v; want nil", name, err)
		}
	}
}

func TestControlFrames(t *testing.T) {
	t.Parallel()
	v := load(t)
	if string(EndSend) != v.EndSend {
		t.Errorf("EndSend = %s; want %s", EndSend, v.EndSend)
	}
	if c, err := ParseClientControl(EndSend); err != nil || c.GetEndSend() == nil {
		t.Errorf("ParseClientControl(EndSend) = %v, %v", c, err)
	}
	for _, f := range v.ServerFrames {
		c, err := ParseServerControl([]byte(f.Frame))
		if err != nil {
			t.Fatalf("ParseServerControl(%s): %v", f.Frame, err)
		}
		var md metadata.MD
		var encoded []byte
		switch f.Kind {
		case "headers":
			if md, err = FromMetadata(c.GetHeaders()); err != nil {
				t.Fatal(err)
			}
			encoded, err = HeadersFrame(md)
		case "end":
			st := Status(c.GetEnd().GetStatus())
			if int32(st.Code()) != f.Code || st.Message() != f.Message || len(st.Proto().GetDetails()) != len(f.Details) {
				t.Errorf("end %s: status %v %q with %d details", f.Frame, st.Code(), st.Message(), len(st.Proto().GetDetails()))
			}
			if md, err = FromMetadata(c.GetEnd().GetTrailers()); err != nil {
				t.Fatal(err)
			}
			encoded, err = EndFrame(st, md)
		default:
			if c.GetKind() != nil {
				t.Errorf("frame %s: kind %T; want none", f.Frame, c.GetKind())
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		// Encoding gives the same JSON, up to white space.
		if !sameJSON(t, string(encoded[1:]), f.Frame[1:]) {
			t.Errorf("encoded %s; want %s", encoded, f.Frame)
		}
		want := metadata.MD{}
		for k, vs := range f.Metadata {
			for _, v := range vs {
				if strings.HasSuffix(k, "-bin") {
					b, _ := base64.StdEncoding.DecodeString(v)
					v = string(b)
				}
				want[k] = append(want[k], v)
			}
		}
		if !reflect.DeepEqual(md, want) {
			t.Errorf("frame %s: metadata %v; want %v", f.Frame, md, want)
		}
	}
	for _, bad := range []string{"", "{}", "#", "#[]", `#{"end":5}`} {
		if _, err := ParseServerControl([]byte(bad)); err == nil {
			t.Errorf("ParseServerControl(%q) = nil error", bad)
		}
	}
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func TestFrameMetadataLeavesOutContentType(t *testing.T) {
	t.Parallel()
	st := status.FromProto(&spb.Status{Code: 5, Message: "m", Details: []*anypb.Any{{TypeUrl: "t", Value: []byte{1}}}})
	b, err := EndFrame(st, metadata.Pairs("content-type", "application/grpc", "x", "y"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ParseServerControl(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.GetEnd().GetTrailers().GetEntries()["content-type"]; ok {
		t.Errorf("end frame %s holds content-type", b)
	}
	var _ *grpcwsv1.End = c.GetEnd()
}

func FuzzClientControl(f *testing.F) {
	for _, s := range []string{`#{"endSend":{}}`, `#{"end_send":{}}`, `#{}`, `#{"x":1}`, `#[`, `#null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseClientControl(b) // must not panic
	})
}

func FuzzParseOffer(f *testing.F) {
	f.Add("examples.echo.v1.EchoService.Echo, base64url.bearer.grpcws.dG9rZW4")
	f.Add("a+json,,  ,base64url.bearer.grpcws.***")
	f.Add(strings.Repeat("x,", 300))
	f.Fuzz(func(t *testing.T, header string) {
		o, err := ParseOffer([]string{header})
		if err != nil {
			if strings.Contains(err.Error(), TokenPrefix) {
				t.Fatalf("error %q names the token", err)
			}
			if o.Token != "" {
				t.Fatalf("token %q kept despite %v", o.Token, err)
			}
		}
		for _, n := range o.Names {
			if n == "" || strings.HasPrefix(n, BearerPrefix) || strings.TrimSpace(n) != n {
				t.Fatalf("offered name %q", n)
			}
		}
		if o.Token != "" && !grpcheader.Printable(o.Token) {
			t.Fatalf("token %q is not printable", o.Token)
		}
	})
}
