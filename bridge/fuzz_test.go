package bridge

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"google.golang.org/grpc/mem"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// The fuzz targets cover every parser of client input. `make test` runs
// each briefly; `make fuzz` runs them longer.

func FuzzRequestMetadata(f *testing.F) {
	f.Add("x-a=1&x-b-bin=AAE&grpc-timeout=5S", "Grpc-Metadata-X-C", "v", "dG9r")
	f.Add("%zz", "Grpc-Timeout", "99999999H", "")
	f.Add("grpc-status=1", "Grpc-Metadata-:path", "/x", "")
	f.Fuzz(func(t *testing.T, query, name, value, encodedToken string) {
		// Tokens reach the metadata only through ParseOffer.
		offer, err := v1wire.ParseOffer([]string{v1wire.TokenPrefix + encodedToken})
		if err != nil {
			offer.Token = ""
		}
		r := &http.Request{
			URL:    &url.URL{RawQuery: query},
			Header: http.Header{http.CanonicalHeaderKey(name): {value}},
		}
		cfg := newConfig([]Option{WithMetadataHeaders("x-allowed"), WithMetadataAllowlist("x-a", "x-b-bin", "x-c")})
		rmd := cfg.metadata.start()
		timeout, err := v1Metadata(r, rmd)
		if err != nil {
			return
		}
		md := rmd.finish(r, offer.Token, "")
		if timeout < 0 {
			t.Fatalf("negative timeout %v", timeout)
		}
		allowed := map[string]bool{"x-a": true, "x-b-bin": true, "x-c": true, "x-allowed": true,
			"authorization": true, "traceparent": true, "tracestate": true}
		for k, vs := range md {
			if err := grpcheader.CheckKey(k); err != nil {
				t.Fatalf("accepted key %q: %v", k, err)
			}
			if !allowed[k] {
				t.Fatalf("forwarded key %q, which the allowlist does not hold", k)
			}
			for _, v := range vs {
				if !strings.HasSuffix(k, "-bin") && !grpcheader.Printable(v) {
					t.Fatalf("accepted value %q for %q", v, k)
				}
			}
		}
	})
}

// FuzzJSONMessage feeds JSON frames to the decoder of the JSON encoding.
func FuzzJSONMessage(f *testing.F) {
	h, err := NewHandler([]Service{{Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"), Conn: testbackend.NopConn{}}})
	if err != nil {
		f.Fatal(err)
	}
	rt, _ := h.routes.lookup("examples.echo.v1.EchoService.Echo")
	s := &v1Framing{h: h, route: rt, json: true}
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
		if got, _ := newConfig([]Option{WithOriginPatterns(tt.patterns...)}).origin(r); got != tt.want {
			t.Errorf("origin %q host %q patterns %q: %v; want %v", tt.origin, tt.host, tt.patterns, got, tt.want)
		}
	}
}
