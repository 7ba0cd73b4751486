package bridge_test

import (
	"context"
	"testing"
	"time"

	"github.com/grpcws/grpcws/bridge"
	"google.golang.org/grpc/codes"
)

// FuzzGatewayRequest feeds request bodies, in every protocol and codec of
// the gateway, compressed or not, to a real gateway in front of a real
// backend. (Ticker, whose request may ask for an endless stream, is left
// out.) Every request must get a well-formed answer in its protocol,
// with a code that says what went wrong (never UNKNOWN, nor UNAVAILABLE
// from a backend that is up), and leave no backend call running.
func FuzzGatewayRequest(f *testing.F) {
	echo := []byte{0x0a, 0x02, 'h', 'i'}
	f.Add(uint8(0), false, echo)
	f.Add(uint8(1), false, lpm(0, echo))
	f.Add(uint8(2), true, lpm(1, gzipped(f, echo)))
	f.Add(uint8(3), false, lpm(0, []byte(`{"message":"hi"}`)))
	f.Add(uint8(4), false, append(lpm(0, echo), 0, 0))
	f.Add(uint8(5), false, []byte(`{"message":`))
	f.Add(uint8(6), true, lpm(1, []byte{0x1f, 0x8b, 8, 0}))
	f.Add(uint8(7), false, lpm(0x80, nil))
	fx := newHTTPFixture(f, bridge.WithMaxMessageSize(64<<10))
	h2 := h2c()
	type kind struct {
		path, ct string
		h2       bool
		gzip     string // the header that names gzip
	}
	kinds := []kind{
		{echoPath, "application/proto", false, "Content-Encoding"},
		{echoPath, "application/grpc-web+proto", false, "Grpc-Encoding"},
		{echoPath, "application/grpc", true, "Grpc-Encoding"},
		{echoPath, "application/grpc-web+json", false, "Grpc-Encoding"},
		{uploadPath, "application/connect+proto", false, "Connect-Content-Encoding"},
		{echoPath, "application/json", false, "Content-Encoding"},
		{uploadPath, "application/grpc", true, "Grpc-Encoding"},
		{bidiPath, "application/connect+json", true, "Connect-Content-Encoding"},
	}
	f.Fuzz(func(t *testing.T, which uint8, compressed bool, body []byte) {
		k := kinds[int(which)%len(kinds)]
		c := rawCall{name: k.ct, client: fx.client, path: k.path, ct: k.ct, body: body}
		if k.h2 {
			c.client = h2
		}
		if compressed {
			c.header = map[string]string{k.gzip: "gzip"}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code, msg, _ := c.do(t, ctx, fx.url)
		if code == codes.Unknown || code == codes.Unavailable {
			t.Fatalf("%s %s: %v %q", k.ct, k.path, code, msg)
		}
		if err := fx.backend.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
	})
}
