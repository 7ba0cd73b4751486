package bridge

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/mem"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
)

// The fuzz targets cover every parser of client input. `make test` runs
// each briefly; `make fuzz` runs them longer.

func FuzzParseOffer(f *testing.F) {
	f.Add("examples.echo.v1.EchoService.Echo, base64url.bearer.grpcws.dG9rZW4")
	f.Add("a+json,,  ,base64url.bearer.grpcws.***")
	f.Add(strings.Repeat("x,", 300))
	f.Fuzz(func(t *testing.T, header string) {
		r := &http.Request{Header: http.Header{"Sec-Websocket-Protocol": {header}}}
		o, err := parseOffer(r)
		if err != nil {
			if strings.Contains(err.Error(), tokenPrefix) {
				t.Fatalf("error %q names the token", err)
			}
			if o.token != "" {
				t.Fatalf("token %q kept despite %v", o.token, err)
			}
		}
		for _, n := range o.names {
			if n == "" || strings.HasPrefix(n, tokenPrefix) || strings.TrimSpace(n) != n {
				t.Fatalf("offered name %q", n)
			}
		}
		if o.token != "" && !grpcheader.Printable(o.token) {
			t.Fatalf("token %q is not printable", o.token)
		}
	})
}

func FuzzRequestMetadata(f *testing.F) {
	f.Add("x-a=1&x-b-bin=AAE&grpc-timeout=5S", "Grpc-Metadata-X-C", "v", "dG9r")
	f.Add("%zz", "Grpc-Timeout", "99999999H", "")
	f.Add("grpc-status=1", "Grpc-Metadata-:path", "/x", "")
	f.Fuzz(func(t *testing.T, query, name, value, encodedToken string) {
		// Tokens reach requestMetadata only through decodeToken.
		token, err := decodeToken(encodedToken)
		if err != nil {
			token = ""
		}
		r := &http.Request{
			URL:    &url.URL{RawQuery: query},
			Header: http.Header{http.CanonicalHeaderKey(name): {value}},
		}
		md, timeout, err := requestMetadata(r, newConfig([]Option{WithMetadataHeaders("x-allowed")}), token, "")
		if err != nil {
			return
		}
		if timeout < 0 {
			t.Fatalf("negative timeout %v", timeout)
		}
		for k, vs := range md {
			if err := grpcheader.CheckKey(k); err != nil {
				t.Fatalf("accepted key %q: %v", k, err)
			}
			for _, v := range vs {
				if !strings.HasSuffix(k, "-bin") && !grpcheader.Printable(v) {
					t.Fatalf("accepted value %q for %q", v, k)
				}
			}
		}
	})
}

func FuzzClientControl(f *testing.F) {
	for _, s := range []string{`#{"endSend":{}}`, `#{"end_send":{}}`, `#{}`, `#{"x":1}`, `#[`, `#null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 || b[0] != '#' {
			return
		}
		_, _ = parseClientControl(b) // must not panic
	})
}

func FuzzCloseReason(f *testing.F) {
	f.Add(strings.Repeat("ü", 100))
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, msg string) {
		r := closeReason(msg)
		if len(r) > maxReason || !utf8.ValidString(r) {
			t.Fatalf("closeReason(%q) = %q: %d bytes, valid %v", msg, r, len(r), utf8.ValidString(r))
		}
		if utf8.ValidString(msg) && !strings.HasPrefix(msg, r) {
			t.Fatalf("closeReason(%q) = %q: not a prefix", msg, r)
		}
	})
}

// FuzzJSONMessage feeds JSON frames to the decoder of the JSON encoding.
func FuzzJSONMessage(f *testing.F) {
	h, err := NewHandler([]Service{{Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"), Conn: nopConn{}}})
	if err != nil {
		f.Fatal(err)
	}
	rt, _ := h.routes.lookup("examples.echo.v1.EchoService.Echo")
	s := &session{h: h, route: rt, json: true}
	for _, seed := range []string{`{"message":"hi","payload":"AAE="}`, `{"delay":"1.5s"}`, `{"fail":{"code":5}}`, `{"message":1}`, `[]`, `{"unknown":true}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !utf8.Valid(b) {
			return // refused before decoding
		}
		msg, fail := s.decode(websocket.MessageText, b, mem.SliceBuffer(b))
		if fail == nil && msg == nil {
			t.Fatal("decode returned neither a message nor a failure")
		}
		if fail != nil && fail.status.Code() != 3 {
			t.Fatalf("decode failure code %v; want INVALID_ARGUMENT", fail.status.Code())
		}
	})
}

func TestOriginAllowed(t *testing.T) {
	tests := []struct {
		origin, host string
		patterns     []string
		want         bool
	}{
		{"", "bridge:8080", nil, true},
		{"http://bridge:8080", "bridge:8080", nil, true},
		{"http://BRIDGE:8080", "bridge:8080", nil, true},
		{"https://evil.example", "bridge:8080", nil, false},
		{"https://a.good.example", "bridge", []string{"*.good.example"}, true},
		{"https://good.example", "bridge", []string{"*.good.example"}, false},
		{"https://x.example", "bridge", []string{"https://x.example"}, true},
		{"http://x.example", "bridge", []string{"https://x.example"}, false},
		{"null", "bridge", nil, false},
		{"https://any.example", "bridge", []string{"*"}, true},
	}
	for _, tt := range tests {
		r := &http.Request{Host: tt.host, Header: http.Header{}}
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if got, _ := originAllowed(r, tt.patterns); got != tt.want {
			t.Errorf("origin %q host %q patterns %q: %v; want %v", tt.origin, tt.host, tt.patterns, got, tt.want)
		}
	}
}

func TestSubprotocolNames(t *testing.T) {
	for _, name := range []string{"a b", "x+json", "base64url.bearer.x", "", "a,b", "é"} {
		if err := checkRouteName(name); err == nil {
			t.Errorf("checkRouteName(%q) = nil; want an error", name)
		}
	}
	for _, name := range []string{"chat.v1", "grpc.testing.TestService.FullDuplexCall", "a_b-c~d"} {
		if err := checkRouteName(name); err != nil {
			t.Errorf("checkRouteName(%q) = %v; want nil", name, err)
		}
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	secret := base64.RawURLEncoding.EncodeToString([]byte("secret\x01"))
	r := &http.Request{Header: http.Header{"Sec-Websocket-Protocol": {tokenPrefix + secret}}}
	_, err := parseOffer(r)
	if err == nil || strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("error %v; want one that does not hold the token", err)
	}
}
