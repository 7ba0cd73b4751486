package bridge_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/grpcws/grpcws/internal/v1test"

	"github.com/coder/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/grpcws/grpcws/bridge"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

func TestEveryKindBinary(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	t.Run("unary", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, echoRoute)
		if got := c.Subprotocol(); got != echoRoute {
			t.Fatalf("subprotocol = %q; want %q", got, echoRoute)
		}
		v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "hi", Payload: []byte{0, 1, 2}})
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusNormalClosure || r.Code() != 0 {
			t.Fatalf("close %d, status %d; want 1000, 0 (end %v)", r.Close, r.Code(), r.End)
		}
		if got, want := strings.Join(r.Order, ","), "headers,message,end"; got != want {
			t.Errorf("frames %s; want %s", got, want)
		}
		if ct := values(r.Headers, "content-type"); ct != nil {
			t.Errorf("headers carry gRPC's content-type %q; want it left out", ct)
		}
		var res echov1.EchoResponse
		if err := proto.Unmarshal(r.Binary[0], &res); err != nil {
			t.Fatal(err)
		}
		if res.GetMessage() != "hi" || !bytes.Equal(res.GetPayload(), []byte{0, 1, 2}) {
			t.Errorf("response %v; want hi, [0 1 2]", &res)
		}
	})

	t.Run("server streaming", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, tickerRoute)
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Message: "tick", Count: 5})
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusNormalClosure || len(r.Binary) != 5 {
			t.Fatalf("close %d, %d messages; want 1000, 5", r.Close, len(r.Binary))
		}
		for i, b := range r.Binary {
			var res echov1.TickerResponse
			if err := proto.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			if res.GetIndex() != int32(i+1) || res.GetMessage() != "tick" {
				t.Errorf("message %d = %v; want index %d", i, &res, i+1)
			}
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, uploadRoute)
		for _, chunk := range []string{"a", "bb", "ccc"} {
			v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte(chunk)})
		}
		v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusNormalClosure || len(r.Binary) != 1 {
			t.Fatalf("close %d, %d messages; want 1000, 1", r.Close, len(r.Binary))
		}
		var res echov1.UploadResponse
		if err := proto.Unmarshal(r.Binary[0], &res); err != nil {
			t.Fatal(err)
		}
		if res.GetMessages() != 3 || res.GetBytes() != 6 {
			t.Errorf("response %v; want 3 messages, 6 bytes", &res)
		}
	})

	t.Run("bidi", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, bidiRoute)
		for i := range 3 {
			v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: fmt.Sprint(i)})
			// Each answer arrives before the next message is sent: the
			// stream is full duplex.
			for {
				typ, b, err := c.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if typ == websocket.MessageText {
					continue // headers
				}
				var res echov1.BidiResponse
				if err := proto.Unmarshal(b, &res); err != nil {
					t.Fatal(err)
				}
				if res.GetMessage() != fmt.Sprint(i) || res.GetIndex() != int64(i+1) {
					t.Fatalf("answer %v; want %d, index %d", &res, i, i+1)
				}
				break
			}
		}
		v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusNormalClosure || r.Code() != 0 {
			t.Fatalf("close %d, status %d; want 1000, 0", r.Close, r.Code())
		}
	})
}

func TestEveryKindJSON(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name  string
		route string
		send  []string
		want  []string // response messages, compared after removing spaces
	}{
		{"unary", echoRoute, []string{`{"message":"héllo","payload":"AAEC"}`}, []string{`{"message":"héllo","payload":"AAEC"}`}},
		{"server streaming", tickerRoute, []string{`{"message":"t","count":2}`}, []string{`{"message":"t","index":1}`, `{"message":"t","index":2}`}},
		{"client streaming", uploadRoute, []string{`{"chunk":"aGVsbG8="}`, `{"chunk":"d29ybGQ="}`, `#{"endSend":{}}`}, []string{`{"messages":"2","bytes":"10"}`}},
		{"bidi", bidiRoute, []string{` {"message":"a"}`, `{"message":"b"}`, `#{"endSend":{}}`}, []string{`{"message":"a","index":"1"}`, `{"message":"b","index":"2"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			c := f.dial(t, ctx, "", nil, tt.route+"+json")
			if got := c.Subprotocol(); got != tt.route+"+json" {
				t.Fatalf("subprotocol = %q; want %q", got, tt.route+"+json")
			}
			for _, m := range tt.send {
				v1test.SendText(t, ctx, c, m)
			}
			r := v1test.ReadAll(t, ctx, c)
			if r.Close != websocket.StatusNormalClosure {
				t.Fatalf("close %d %q; want 1000 (end %v)", r.Close, r.Reason, r.End)
			}
			if len(r.Binary) != 0 || len(r.Text) != len(tt.want) {
				t.Fatalf("got %d binary, %q; want text %q", len(r.Binary), r.Text, tt.want)
			}
			for i := range tt.want {
				if got := strings.ReplaceAll(r.Text[i], " ", ""); got != tt.want[i] {
					t.Errorf("message %d = %s; want %s", i, got, tt.want[i])
				}
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithMetadataHeaders("X-Tenant"))
	ctx := testContext(t)
	bin := []byte{0xff, 0x00, 0xfe}
	h := http.Header{}
	h.Set("Grpc-Metadata-X-Echo-Header", "from-header")
	h.Set("Grpc-Metadata-X-Echo-Data-Bin", base64.StdEncoding.EncodeToString(bin))
	h.Set("X-Tenant", "acme")
	h.Set("X-Not-Allowed", "dropped")
	c := f.dial(t, ctx, "?x-echo-query=from-query&x-echo-query=twice&x-echo-url-bin="+base64.RawURLEncoding.EncodeToString(bin), h, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "md"})
	r := v1test.ReadAll(t, ctx, c)
	if r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		key  string
		want []string
	}{
		{"x-echo-header", []string{"from-header"}},
		{"x-echo-data-bin", []string{string(bin)}},
		{"x-echo-query", []string{"from-query", "twice"}},
		{"x-echo-url-bin", []string{string(bin)}},
		{"x-tenant", []string{"acme"}},
		{"x-not-allowed", nil},
	}
	for _, c := range checks {
		if got := call.MD.Get(c.key); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("backend metadata %s = %q; want %q", c.key, got, c.want)
		}
	}
	// The echo service returns x-echo-* in headers and trailers; -bin
	// values come back in standard base64.
	wantBin := base64.StdEncoding.EncodeToString(bin)
	if got := values(r.Headers, "x-echo-data-bin"); len(got) != 1 || got[0] != wantBin {
		t.Errorf("headers x-echo-data-bin = %q; want %q", got, wantBin)
	}
	if got := values(r.End.GetTrailers(), "x-echo-query"); fmt.Sprint(got) != "[from-query twice]" {
		t.Errorf("trailers x-echo-query = %q; want [from-query twice]", got)
	}
	if got := values(r.End.GetTrailers(), "x-echo-url-bin"); len(got) != 1 || got[0] != wantBin {
		t.Errorf("trailers x-echo-url-bin = %q; want %q", got, wantBin)
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	token := "s3cr3t.token-value"
	c := f.dial(t, ctx, "", nil, "base64url.bearer.grpcws."+base64.RawURLEncoding.EncodeToString([]byte(token)), echoRoute)
	if got := c.Subprotocol(); got != echoRoute {
		t.Fatalf("subprotocol = %q; want %q (the token must never be echoed)", got, echoRoute)
	}
	v1test.Send(t, ctx, c, &echov1.EchoRequest{})
	if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
		t.Fatalf("close %d; want 1000", r.Close)
	}
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
	if err != nil {
		t.Fatal(err)
	}
	if got := call.MD.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+token {
		t.Errorf("authorization = %q; want [Bearer %s]", got, token)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	long := strings.Repeat("Fehler: Datei nicht gefunden – ü 🚀 ", 10)
	tests := []struct {
		name    string
		route   string
		req     proto.Message
		code    codes.Code
		msg     string
		withEnd bool
		endSend bool
	}{
		{"unary non-ASCII", echoRoute, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 5, Message: "nicht gefunden – 見つかりません"}}, codes.NotFound, "nicht gefunden – 見つかりません", true, false},
		{"long message", echoRoute, &echov1.EchoRequest{Fail: &echov1.Failure{Code: 13, Message: long}}, codes.Internal, long, true, false},
		{"after stream", tickerRoute, &echov1.TickerRequest{Count: 2, Fail: &echov1.Failure{Code: 9, Message: "stop"}}, codes.FailedPrecondition, "stop", true, false},
		{"client streaming", uploadRoute, &echov1.UploadRequest{Fail: &echov1.Failure{Code: 16, Message: "who?"}}, codes.Unauthenticated, "who?", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			c := f.dial(t, ctx, "", nil, tt.route)
			v1test.Send(t, ctx, c, tt.req)
			r := v1test.ReadAll(t, ctx, c)
			if r.Code() != int32(tt.code) || r.End.GetStatus().GetMessage() != tt.msg {
				t.Fatalf("status %d %q; want %d %q", r.Code(), r.End.GetStatus().GetMessage(), tt.code, tt.msg)
			}
			if want := websocket.StatusCode(4000 + int(tt.code)); r.Close != want {
				t.Errorf("close %d; want %d", r.Close, want)
			}
			if len(r.Reason) > 123 || !utf8.ValidString(r.Reason) || !strings.HasPrefix(tt.msg, r.Reason) {
				t.Errorf("reason %q (%d bytes): want a valid UTF-8 prefix of the message, at most 123 bytes", r.Reason, len(r.Reason))
			}
			if len(tt.msg) > 123 && len(r.Reason) < 119 {
				t.Errorf("reason cut to %d bytes; want as much as fits", len(r.Reason))
			}
		})
	}
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	for _, via := range []string{"header", "query"} {
		t.Run(via, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			ctx := testContext(t)
			var c *websocket.Conn
			if via == "header" {
				c = f.dial(t, ctx, "", http.Header{"Grpc-Timeout": {"200m"}}, echoRoute)
			} else {
				c = f.dial(t, ctx, "?grpc-timeout=200m", nil, echoRoute)
			}
			start := time.Now()
			v1test.Send(t, ctx, c, &echov1.EchoRequest{Delay: durationpb.New(30 * time.Second)})
			r := v1test.ReadAll(t, ctx, c)
			if r.Code() != int32(codes.DeadlineExceeded) || r.Close != 4004 {
				t.Fatalf("status %d, close %d; want DEADLINE_EXCEEDED, 4004", r.Code(), r.Close)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("took %v; the deadline was 200ms", d)
			}
			call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Echo")
			if err != nil {
				t.Fatal(err)
			}
			// The backend got the deadline the client asked for.
			if !call.HasDeadline {
				t.Fatal("the backend saw no deadline")
			}
			// The timeout counts from the handshake, a little before start;
			// the bounds only allow for a loaded machine.
			if d := call.Deadline.Sub(start); d <= 0 || d > 2*time.Second {
				t.Errorf("backend deadline %v after the request; want about 200ms", d)
			}
			// Its context ended: by its own deadline or by the bridge's
			// cancel at the same instant, as with any gRPC client.
			if call.CtxErr == nil {
				t.Error("the backend's context did not end")
			}
		})
	}
}

func TestClientCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, tickerRoute)
	v1test.Send(t, ctx, c, &echov1.TickerRequest{Message: "forever", Interval: durationpb.New(time.Millisecond)})
	for got := 0; got < 3; {
		typ, _, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.MessageBinary {
			got++
		}
	}
	c.CloseNow() // the tab closes
	call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if call.CtxErr != context.Canceled {
		t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
	}
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithOriginPatterns("*.good.example", "https://exact.example"))
	tests := []struct {
		name      string
		path      string
		header    http.Header
		protocols []string
		echo      string
		close     websocket.StatusCode
		reason    string
	}{
		{"unknown route", "", nil, []string{"no.such.Service.Method", echoRoute + "x"}, "no.such.Service.Method", 4012, `no route named "no.such.Service.Method"`},
		{"no subprotocol", "", nil, nil, "", 4012, "no subprotocol offered"},
		{"foreign origin", "", http.Header{"Origin": {"https://evil.example"}}, []string{echoRoute}, echoRoute, 4007, `origin "https://evil.example" not allowed`},
		{"origin scheme mismatch", "", http.Header{"Origin": {"http://exact.example"}}, []string{echoRoute}, echoRoute, 4007, "not allowed"},
		{"reserved metadata", "?grpc-status=0", nil, []string{echoRoute}, echoRoute, 4003, `"grpc-status" is reserved`},
		{"bad metadata key", "", http.Header{"Grpc-Metadata-X!bad": {"v"}}, []string{echoRoute}, echoRoute, 4003, "metadata key"},
		{"bad binary metadata", "?x-data-bin=***", nil, []string{echoRoute}, echoRoute, 4003, "not base64"},
		{"bad timeout", "?grpc-timeout=soon", nil, []string{echoRoute}, echoRoute, 4003, "grpc-timeout"},
		{"bad token", "", nil, []string{echoRoute, "base64url.bearer.grpcws.***"}, echoRoute, 4003, "bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			c := f.dial(t, ctx, tt.path, tt.header, tt.protocols...)
			if got := c.Subprotocol(); got != tt.echo {
				t.Errorf("subprotocol = %q; want %q", got, tt.echo)
			}
			r := v1test.ReadAll(t, ctx, c)
			if r.Close != tt.close || !strings.Contains(r.Reason, tt.reason) {
				t.Errorf("close %d %q; want %d containing %q", r.Close, r.Reason, tt.close, tt.reason)
			}
			if r.Frames != 0 || r.End != nil {
				t.Errorf("got frames %v before a refusal; want none", r.Order)
			}
		})
	}
	if n := len(f.backend.Calls()); n != 0 {
		t.Errorf("the backend saw %d calls; refused connections must not reach it", n)
	}

	t.Run("allowed origins", func(t *testing.T) {
		t.Parallel()
		for _, origin := range []string{"https://app.good.example", "https://exact.example", f.server.URL} {
			ctx := testContext(t)
			c := f.dial(t, ctx, "", http.Header{"Origin": {origin}}, echoRoute)
			v1test.Send(t, ctx, c, &echov1.EchoRequest{})
			if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
				t.Errorf("origin %s: close %d %q; want 1000", origin, r.Close, r.Reason)
			}
		}
	})

	t.Run("plain HTTP", func(t *testing.T) {
		t.Parallel()
		res, err := http.Get(f.server.URL)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, res)
		if res.StatusCode != http.StatusUpgradeRequired || !strings.Contains(body, "WebSocket") {
			t.Errorf("GET: %d %q; want 426 and a readable body", res.StatusCode, body)
		}
	})
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, bridge.WithValidation(true))
	type frame struct {
		typ websocket.MessageType
		b   func(t *testing.T) []byte
	}
	bin := func(b []byte) frame { return frame{websocket.MessageBinary, func(*testing.T) []byte { return b }} }
	msg := func(m proto.Message) frame {
		return frame{websocket.MessageBinary, func(t *testing.T) []byte { return mustMarshal(t, m) }}
	}
	// Backends that keep the RPC open, so the error, not the backend's
	// end, decides the outcome.
	slow := &echov1.EchoRequest{Delay: durationpb.New(time.Minute)}
	endless := &echov1.TickerRequest{Interval: durationpb.New(time.Hour)}
	text := func(s string) frame {
		return frame{websocket.MessageText, func(*testing.T) []byte { return []byte(s) }}
	}
	tests := []struct {
		name   string
		route  string
		frames []frame
		close  websocket.StatusCode
		reason string
	}{
		{"second message to unary", echoRoute, []frame{msg(slow), msg(slow)}, 4003, "message after end of send"},
		{"message after end of send", tickerRoute, []frame{msg(endless), msg(endless)}, 4003, "message after end of send"},
		{"end of send twice", tickerRoute, []frame{msg(endless), text(`#{"endSend":{}}`)}, 4003, "end of send after end of send"},
		{"end of send before unary request", echoRoute, []frame{text(`#{"endSend":{}}`)}, 4003, "before the request"},
		{"text message in binary encoding", bidiRoute, []frame{text(`{"message":"x"}`)}, 4003, "not a control frame (those start with '#')"},
		{"binary message in JSON encoding", bidiRoute + "+json", []frame{bin([]byte{})}, 4003, "binary frame in the JSON encoding"},
		{"invalid JSON message", bidiRoute + "+json", []frame{text(`{"nope":1}`)}, 4003, "not a valid examples.echo.v1.BidiRequest"},
		{"malformed control", bidiRoute, []frame{text(`#{"endSend":`)}, 4003, "malformed control frame"},
		{"invalid UTF-8", bidiRoute, []frame{text("#\xff\xfe")}, 1007, "not valid UTF-8"},
		{"invalid protobuf with validation", bidiRoute, []frame{bin([]byte{0xff, 0xff, 0xff})}, 4003, "not a valid examples.echo.v1.BidiRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := testContext(t)
			c := f.dial(t, ctx, "", nil, tt.route)
			for _, fr := range tt.frames {
				if err := c.Write(ctx, fr.typ, fr.b(t)); err != nil {
					t.Fatal(err)
				}
			}
			r := v1test.ReadAll(t, ctx, c)
			if r.Close != tt.close || !strings.Contains(r.Reason, tt.reason) {
				t.Fatalf("close %d %q; want %d containing %q", r.Close, r.Reason, tt.close, tt.reason)
			}
			if r.End == nil || !strings.Contains(r.End.GetStatus().GetMessage(), tt.reason) {
				t.Errorf("end frame %v; want the status in-band too", r.End)
			}
		})
	}
	ctx := testContext(t)
	if err := f.backend.WaitIdle(ctx); err != nil {
		t.Fatalf("a backend stream is still open: %v", err)
	}

	t.Run("unknown control frames are skipped", func(t *testing.T) {
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, uploadRoute)
		v1test.SendText(t, ctx, c, `#{"somethingNew":{"x":1}}`)
		v1test.Send(t, ctx, c, &echov1.UploadRequest{Chunk: []byte("abc")})
		v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
		if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
			t.Fatalf("close %d %q; want 1000", r.Close, r.Reason)
		}
	})
}

func TestMessageSize(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	f := newFixture(t, bridge.WithMaxMessageSize(limit))

	t.Run("from the client", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		// A message exactly at the limit passes.
		req := &echov1.UploadRequest{Chunk: make([]byte, limit-4)}
		if n := proto.Size(req); n != limit {
			t.Fatalf("request of %d bytes; want %d", n, limit)
		}
		c := f.dial(t, ctx, "", nil, uploadRoute)
		v1test.Send(t, ctx, c, req)
		v1test.SendText(t, ctx, c, `#{"endSend":{}}`)
		if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusNormalClosure {
			t.Fatalf("at the limit: close %d %q; want 1000", r.Close, r.Reason)
		}
		// One byte more is refused.
		c = f.dial(t, ctx, "", nil, uploadRoute)
		_ = c.Write(ctx, websocket.MessageBinary, make([]byte, limit+1))
		if r := v1test.ReadAll(t, ctx, c); r.Close != websocket.StatusMessageTooBig {
			t.Fatalf("over the limit: close %d %q; want 1009", r.Close, r.Reason)
		}
	})

	t.Run("from the backend", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, echoRoute)
		v1test.Send(t, ctx, c, &echov1.EchoRequest{ResponseSize: 2 * limit})
		r := v1test.ReadAll(t, ctx, c)
		if r.Close != websocket.StatusMessageTooBig || r.Code() != int32(codes.ResourceExhausted) {
			t.Fatalf("close %d, status %d; want 1009, RESOURCE_EXHAUSTED", r.Close, r.Code())
		}
	})
}

func TestBackendDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := testContext(t)

	// Mid-stream: the stream ends with UNAVAILABLE.
	c := f.dial(t, ctx, "", nil, bidiRoute)
	v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: "x"})
	for {
		typ, _, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.MessageBinary {
			break
		}
	}
	f.backend.Stop()
	r := v1test.ReadAll(t, ctx, c)
	if r.Code() != int32(codes.Unavailable) || r.Close != 4014 {
		t.Fatalf("mid-stream: status %d, close %d; want UNAVAILABLE, 4014", r.Code(), r.Close)
	}

	// New connections: refused with UNAVAILABLE.
	c = f.dial(t, ctx, "", nil, echoRoute)
	v1test.Send(t, ctx, c, &echov1.EchoRequest{})
	r = v1test.ReadAll(t, ctx, c)
	if r.Code() != int32(codes.Unavailable) || r.Close != 4014 {
		t.Fatalf("new: status %d, close %d; want UNAVAILABLE, 4014", r.Code(), r.Close)
	}
}

func TestClientGone(t *testing.T) {
	t.Parallel()
	t.Run("no pong", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithPing(50*time.Millisecond, 100*time.Millisecond))
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, tickerRoute)
		// The client sends the request and never reads again, so it never
		// answers a ping.
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Interval: durationpb.New(time.Hour)})
		call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
		if err != nil {
			t.Fatal(err)
		}
		if call.CtxErr != context.Canceled {
			t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
		}
	})
	t.Run("not reading", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, bridge.WithPing(0, 0), bridge.WithWriteTimeout(200*time.Millisecond))
		ctx := testContext(t)
		c := f.dial(t, ctx, "", nil, tickerRoute)
		v1test.Send(t, ctx, c, &echov1.TickerRequest{Message: strings.Repeat("x", 32<<10)})
		call, err := f.backend.WaitCall(ctx, "/examples.echo.v1.EchoService/Ticker")
		if err != nil {
			t.Fatal(err)
		}
		if call.CtxErr != context.Canceled {
			t.Errorf("backend ctx error %v; want %v", call.CtxErr, context.Canceled)
		}
	})
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	var chat *bridge.Route
	routes := f.handler.Routes()
	for i := range routes {
		if routes[i].Method == "/examples.chat.v1.ChatService/Chat" {
			chat = &routes[i]
		}
	}
	if chat == nil || fmt.Sprint(chat.Names) != "[examples.chat.v1.ChatService.Chat chat.v1]" || !chat.ClientStreams || !chat.ServerStreams {
		t.Fatalf("chat route %+v; want both names, bidi", chat)
	}
	if len(routes) != 5 {
		t.Errorf("%d routes; want 5", len(routes))
	}
	ctx := testContext(t)
	c := f.dial(t, ctx, "", nil, "chat.v1+json")
	v1test.SendText(t, ctx, c, `{"join":{"room":"r","nickname":"ann"}}`)
	_, b, err := c.Read(ctx)
	if err != nil || !strings.HasPrefix(string(b), "#") {
		t.Fatalf("first frame %q, %v; want headers", b, err)
	}
	_, b, err = c.Read(ctx)
	if err != nil || !strings.Contains(string(b), "ann") {
		t.Fatalf("second frame %q, %v; want a message naming ann", b, err)
	}
}

func TestNewHandlerErrors(t *testing.T) {
	t.Parallel()
	echo := compiledServices()[0]
	tests := []struct {
		name     string
		services []bridge.Service
		want     string
	}{
		{"no descriptor", []bridge.Service{{}}, "no descriptor"},
		{"no connection", []bridge.Service{{Desc: echo}}, "no connection"},
	}
	for _, tt := range tests {
		if _, err := bridge.NewHandler(tt.services); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v; want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestCompression(t *testing.T) {
	t.Parallel()
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint(enabled), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, bridge.WithCompression(enabled))
			ctx := testContext(t)
			c, res, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{
				Subprotocols:    []string{echoRoute},
				CompressionMode: websocket.CompressionNoContextTakeover,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.CloseNow()
			if got := res.Header.Get("Sec-WebSocket-Extensions") != ""; got != enabled {
				t.Errorf("compression negotiated: %v; want %v", got, enabled)
			}
			v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: strings.Repeat("compressible ", 1000)})
			r := v1test.ReadAll(t, ctx, c)
			if r.Close != websocket.StatusNormalClosure || len(r.Binary) != 1 {
				t.Fatalf("close %d, %d messages; want 1000, 1", r.Close, len(r.Binary))
			}
		})
	}
}
