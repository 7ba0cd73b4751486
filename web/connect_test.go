package web_test

// The generated client over two transports in Chromium: connect-web's
// createConnectTransport (the Connect protocol over fetch, through the
// bridge's HTTP protocols) and createGrpcwsTransport (WebSocket), from
// web/compat/transports.ts.

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// transportsBundle is web/compat/transports.ts bundled.
var transportsBundle = &testBundle{entry: "web/compat/transports.ts"}

// The same calls through the same client return the same responses,
// headers, trailers and errors (code, message, details) over Connect and
// over grpcws, in both formats; client-streaming and bidi, which fetch
// cannot send, work over grpcws.
func TestConnectTransports(t *testing.T) {
	t.Parallel()
	s := newHTTPSite(t, transportsBundle.build(t))
	ctx := newTab(t, 40*time.Second)
	do(t, ctx, chromedp.Navigate(s.url+"/"))
	waitFor(t, ctx, "the transports bundle", `typeof globalThis.transports === "object"`)

	// Each call's Outcome (web/compat/transports.ts) as JSON, by transport
	// and call.
	outcomes := map[string]map[string]string{}
	for _, name := range []string{"connect", "connect-json", "grpcws", "grpcws-json"} {
		got := eval[map[string]any](t, ctx, fmt.Sprintf(`transports.run(%q, location.origin + "/")`, name))
		outcomes[name] = map[string]string{}
		for call, v := range got {
			b, err := json.Marshal(v) // object keys sorted
			if err != nil {
				t.Fatal(err)
			}
			outcomes[name][call] = string(b)
		}
	}

	const md = `{"x-echo-bin":"/wA=","x-echo-many":"a, b","x-echo-one":"1"}`
	ok := func(responses string) string {
		return `{"header":` + md + `,"responses":` + responses + `,"trailer":` + md + `}`
	}
	failed := func(code, message, details, responses, header string) string {
		return `{"error":{"code":"` + code + `","details":` + details + `,"metadata":` + md + `,"rawMessage":"` + message + `"},` +
			`"header":` + header + `,"responses":` + responses + `,"trailer":{}}`
	}
	const failMessage = "nicht gefunden: Straße ✗ 見つかりません 100%"
	want := map[string]string{
		"unary":        ok(`[{"message":"grüß dich ✓","payload":"AAEC/w=="}]`),
		"generated":    ok(`[{"payload":"` + strings.Repeat("A", 400) + `"}]`),
		"serverStream": ok(`[{"index":1,"message":"tick"},{"index":2,"message":"tick"},{"index":3,"message":"tick"}]`),
		"fail": failed("not_found", failMessage, `[{"code":5,"message":"`+failMessage+`"}]`,
			`[]`, `{}`),
		"failStream": failed("failed_precondition", "à la fin", `[{"code":9,"message":"à la fin"}]`,
			`[{"index":1,"message":"t"},{"index":2,"message":"t"}]`, md),
		"clientStream": ok(`[{"bytes":"6","messages":"3"}]`),
		"bidi":         ok(`[{"index":"1","message":"one"},{"index":"2","message":"two 👋"}]`),
	}
	calls := []string{"unary", "generated", "serverStream", "fail", "failStream", "clientStream", "bidi"}
	for _, name := range []string{"grpcws", "grpcws-json"} {
		for _, c := range calls {
			if got := outcomes[name][c]; got != want[c] {
				t.Errorf("%s %s:\n got  %s\n want %s", name, c, got, want[c])
			}
		}
	}
	for _, name := range []string{"connect", "connect-json"} {
		grpcws := strings.Replace(name, "connect", "grpcws", 1)
		for _, c := range calls {
			got := outcomes[name][c]
			if c == "clientStream" || c == "bidi" {
				if !strings.Contains(got, `"error":`) {
					t.Errorf("%s %s: %s; want an error (fetch cannot stream a request)", name, c, got)
				}
				continue
			}
			if got != outcomes[grpcws][c] {
				t.Errorf("%s %s differs from %s:\n %-12s %s\n %-12s %s", name, c, grpcws, name, got, grpcws, outcomes[grpcws][c])
			}
		}
	}

	// At the backend: every call is over, with the request headers; the
	// client streams that fetch cannot send never arrived.
	if err := s.backend.WaitIdle(backendContext(t)); err != nil {
		t.Error(err)
	}
	methods := map[string]int{}
	for _, call := range s.backend.Calls() {
		methods[strings.TrimPrefix(call.Method, "/examples.echo.v1.EchoService/")]++
		if got := call.MD.Get("x-echo-many"); !slices.Equal(got, []string{"a, b"}) && !slices.Equal(got, []string{"a", "b"}) {
			t.Errorf("%s at the backend: x-echo-many %q; want a and b", call.Method, got)
		}
	}
	if wantMethods := map[string]int{"Echo": 12, "Ticker": 8, "Upload": 2, "Bidi": 2}; !maps.Equal(methods, wantMethods) {
		t.Errorf("calls at the backend: %v; want %v", methods, wantMethods)
	}
}
