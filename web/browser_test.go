package web_test

// End-to-end tests in headless chromium: the demo page and the TypeScript
// client, served by demo.Handler next to a bridge in front of a real gRPC
// backend, all on 127.0.0.1. The page exposes the transport, connect-es's
// createClient and the clients it made as `grpcws`.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/bridge"
	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/web/demo"
)

// site is what `grpcws --demo` serves: the page for plain GETs, the bridge
// for WebSocket upgrades, on one origin.
type site struct {
	backend *testbackend.Backend
	url     string // http://127.0.0.1:PORT
	host    string // 127.0.0.1:PORT
}

func newSite(t *testing.T, opts ...bridge.Option) *site {
	t.Helper()
	b := testbackend.Start(t)
	h, err := bridge.NewHandler([]bridge.Service{
		{Desc: echov1.File_examples_echo_v1_echo_proto.Services().ByName("EchoService"), Conn: b.Conn},
		{Desc: chatv1.File_examples_chat_v1_chat_proto.Services().ByName("ChatService"), Conn: b.Conn},
	}, append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	page := demo.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			h.ServeHTTP(w, r)
			return
		}
		page.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return &site{backend: b, url: srv.URL, host: strings.TrimPrefix(srv.URL, "http://")}
}

// eval runs a JavaScript expression in the tab, awaits it if it is a
// promise, and decodes its JSON value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", firstLine(js), err)
	}
	return v
}

// waitFor polls a JavaScript predicate until it is true.
func waitFor(t *testing.T, ctx context.Context, what, js string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, js, err)
	}
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// open loads the demo page and waits until its script has run.
func open(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(url))
	waitFor(t, ctx, "the client", `typeof globalThis.grpcws === "object"`)
}

func backendContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two tabs join a room through the page's form and chat: each message goes
// up one bidi stream and is fanned out down both.
func TestBrowserChat(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ann, bob := newTab(t, 40*time.Second), newTab(t, 40*time.Second)
	const room = "Café ☕"

	join := func(ctx context.Context, nick string) {
		open(t, ctx, s.url+"/#"+room)
		do(t, ctx,
			chromedp.SetValue(chromedp.ID("nickname"), nick),
			chromedp.Click(chromedp.CSS("#join-form button[type=submit]")),
		)
		waitFor(t, ctx, nick+" in the room", `!document.getElementById("room-view").hidden && document.getElementById("status").textContent === "live"`)
		if got := eval[string](t, ctx, `document.getElementById("room-name").textContent`); got != room {
			t.Errorf("%s: room %q; want %q", nick, got, room)
		}
	}
	members := `[...document.querySelectorAll("#members .member .name")].map((e) => e.textContent)`
	join(ann, "ann")
	join(bob, "bob")
	waitFor(t, ann, "bob in ann's member list", members+`.length === 2`)
	if got := eval[[]string](t, ann, members); !slices.Equal(got, []string{"ann (you)", "bob"}) {
		t.Errorf("ann's members: %q; want ann (you) and bob", got)
	}

	say := func(ctx context.Context, text string) {
		do(t, ctx,
			chromedp.SetValue(chromedp.ID("say"), text),
			chromedp.Click(chromedp.CSS("#say-form button[type=submit]")),
		)
	}
	others := `[...document.querySelectorAll("#messages .msg:not(.system):not(.mine)")].map((e) => e.querySelector(".meta b").textContent + ": " + e.querySelector(".bubble").textContent)`
	mine := `[...document.querySelectorAll("#messages .msg.mine .bubble")].map((e) => e.textContent)`

	say(ann, "Hallo Bob, grüß dich!")
	waitFor(t, bob, "ann's message at bob's", others+`.length === 1`)
	if got := eval[[]string](t, bob, others); got[0] != "ann: Hallo Bob, grüß dich!" {
		t.Errorf("bob sees %q; want ann's message", got)
	}
	waitFor(t, ann, "ann's own message", mine+`.length === 1`)

	say(bob, "Hi Ann! Two tabs, one room, one bidi stream each.")
	waitFor(t, ann, "bob's answer at ann's", others+`.length === 1`)
	if got := eval[[]string](t, ann, others); got[0] != "bob: Hi Ann! Two tabs, one room, one bidi stream each." {
		t.Errorf("ann sees %q; want bob's answer", got)
	}
	say(ann, "Works on a phone too.")
	waitFor(t, bob, "ann's second message", others+`.length === 2`)

	// The other cards, so that the screenshot shows them at work.
	do(t, ann, chromedp.Click(chromedp.CSS("#echo-form button[type=submit]")))
	waitFor(t, ann, "the unary answer", `document.getElementById("echo-out").className === "out ok"`)
	do(t, ann, chromedp.Click(chromedp.ID("upload-start")))
	waitFor(t, ann, "the upload's count", `document.getElementById("upload-out").textContent.startsWith("the server counted 100 messages")`)
	do(t, ann, chromedp.Click(chromedp.ID("ticker-start")))
	waitFor(t, ann, "the ticker", `document.getElementById("ticker-out").textContent.startsWith("tick 3 of")`)
	screenshots(t, ann, "chat")

	// Bob leaves: his stream is cancelled at the backend, ann sees him go.
	do(t, bob, chromedp.Click(chromedp.ID("leave")))
	waitFor(t, ann, "bob gone from ann's list", members+`.length === 1`)
	waitFor(t, ann, "the note that bob left", `[...document.querySelectorAll("#messages .msg.system")].some((e) => e.textContent === "bob left")`)
	waitFor(t, bob, "the form again at bob's", `!document.getElementById("join-view").hidden`)
	screenshots(t, bob, "join")
	call, err := s.backend.WaitCall(backendContext(t), "/examples.chat.v1.ChatService/Chat")
	if err != nil {
		t.Fatal(err)
	}
	if status.Code(call.Err) != codes.Canceled {
		t.Errorf("bob's Chat ended at the backend with %v; want CANCELED", call.Err)
	}
}

// The chat comes back by itself when its stream ends with an error worth
// retrying, here the bridge's bound on a stream's duration: a new stream
// joins again, and what the user says goes up the new one.
func TestBrowserChatReconnect(t *testing.T) {
	t.Parallel()
	s := newSite(t, bridge.WithMaxStreamDuration(2*time.Second))
	ctx := newTab(t, 30*time.Second)
	open(t, ctx, s.url+"/#reconnect")
	do(t, ctx,
		chromedp.SetValue(chromedp.ID("nickname"), "cat"),
		chromedp.Click(chromedp.CSS("#join-form button[type=submit]")),
	)
	waitFor(t, ctx, "cat in the room", `document.getElementById("status").textContent === "live"`)
	notes := `[...document.querySelectorAll("#messages .msg.system .bubble")].map((e) => e.textContent)`
	waitFor(t, ctx, "the reconnect", notes+`.includes("reconnected")`)
	lost := eval[[]string](t, ctx, notes+`.filter((n) => n.startsWith("connection lost"))`)
	if len(lost) != 1 || !strings.HasPrefix(lost[0], "connection lost (DEADLINE_EXCEEDED") {
		t.Errorf("notes of the lost connection: %q; want one, DEADLINE_EXCEEDED", lost)
	}
	do(t, ctx,
		chromedp.SetValue(chromedp.ID("say"), "still here"),
		chromedp.Click(chromedp.CSS("#say-form button[type=submit]")),
	)
	waitFor(t, ctx, "the message after the reconnect", `[...document.querySelectorAll("#messages .msg.mine .bubble")].some((e) => e.textContent === "still here")`)

	call, err := s.backend.WaitCall(backendContext(t), "/examples.chat.v1.ChatService/Chat")
	if err != nil {
		t.Fatal(err)
	}
	if !call.HasDeadline {
		t.Error("the first Chat at the backend had no deadline")
	}
}

// screenshots saves the page at desktop and phone sizes, into
// $GRPCWS_SCREENSHOTS when set, and checks that the phone layout does not
// scroll sideways.
func screenshots(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir, keep := os.LookupEnv("GRPCWS_SCREENSHOTS")
	if !keep {
		dir = t.TempDir()
	}
	for _, v := range []struct {
		name          string
		width, height int64
		opts          []chromedp.EmulateViewportOption
	}{
		{"desktop", 1280, 860, nil},
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch}},
	} {
		do(t, ctx, chromedp.EmulateViewport(v.width, v.height, v.opts...))
		waitFor(t, ctx, "the layout at "+v.name+" size", fmt.Sprintf(`innerWidth === %d`, v.width))
		if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > int(v.width) {
			t.Errorf("%s: the page is %d px wide in a %d px viewport", v.name, w, v.width)
		}
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if len(png) < 10_000 {
			t.Errorf("%s screenshot: %d bytes; want a real picture", v.name, len(png))
		}
		path := filepath.Join(dir, "demo-"+name+"-"+v.name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		if keep {
			t.Logf("screenshot: %s", path)
		}
	}
	do(t, ctx, chromedp.EmulateViewport(1280, 800))
}

// Every RPC kind through the TypeScript client, in both encodings, with
// metadata both ways.
func TestBrowserRPCKinds(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ctx := newTab(t, 30*time.Second)
	open(t, ctx, s.url+"/")

	type result struct {
		Unary, UnaryHeader, UnaryTrailer string
		Ticks                            []int
		TickerHeader                     string
		Upload                           []int
		Bidi                             []string
		BidiEnded                        bool
		JSON                             []string
	}
	got := eval[result](t, ctx, `(async () => {
		const { echo, createClient, createGrpcwsTransport, createWritableIterable, EchoService } = grpcws;
		const headers = { "x-echo-from": "chromium" };
		const out = {};

		let hd, tr;
		const res = await echo.echo({ message: "grüß dich ✓" }, { headers, onHeader: (h) => (hd = h), onTrailer: (t) => (tr = t) });
		out.Unary = res.message;
		out.UnaryHeader = hd.get("x-echo-from");
		out.UnaryTrailer = tr.get("x-echo-from");

		let th;
		out.Ticks = [];
		for await (const m of echo.ticker({ message: "t", count: 4 }, { headers, onHeader: (h) => (th = h) })) out.Ticks.push(m.index);
		out.TickerHeader = th.get("x-echo-from");

		const sum = await echo.upload((async function* () {
			for (let i = 1; i <= 5; i++) yield { chunk: new Uint8Array(i) };
		})());
		out.Upload = [Number(sum.messages), Number(sum.bytes)];

		// Push-style: write a message, read its answer, then the next.
		const requests = createWritableIterable();
		const bidi = echo.bidi(requests)[Symbol.asyncIterator]();
		out.Bidi = [];
		for (const m of ["one", "two", "three 👋"]) {
			await requests.write({ message: m });
			const r = await bidi.next();
			out.Bidi.push(r.value.message + "#" + r.value.index);
		}
		requests.close();
		out.BidiEnded = (await bidi.next()).done;

		const json = createClient(EchoService, createGrpcwsTransport({ baseUrl: location.href, useBinaryFormat: false }));
		out.JSON = [(await json.echo({ message: "json" })).message];
		const ab = (async function* () { yield { message: "a" }; yield { message: "b" }; })();
		for await (const r of json.bidi(ab)) out.JSON.push(r.message + "#" + r.index);
		return out;
	})()`)

	want := result{
		Unary: "grüß dich ✓", UnaryHeader: "chromium", UnaryTrailer: "chromium",
		Ticks: []int{1, 2, 3, 4}, TickerHeader: "chromium",
		Upload: []int{5, 15},
		Bidi:   []string{"one#1", "two#2", "three 👋#3"}, BidiEnded: true,
		JSON: []string{"json", "a#1", "b#2"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if err := s.backend.WaitIdle(backendContext(t)); err != nil {
		t.Error(err)
	}
	methods := map[string]int{}
	for _, c := range s.backend.Calls() {
		methods[c.Method]++
		if c.Err != nil {
			t.Errorf("%s ended with %v at the backend; want OK", c.Method, c.Err)
		}
	}
	for m, n := range map[string]int{"Echo": 2, "Ticker": 1, "Upload": 1, "Bidi": 2} {
		if got := methods["/examples.echo.v1.EchoService/"+m]; got != n {
			t.Errorf("%d calls to %s at the backend; want %d", got, m, n)
		}
	}
}

// A status from the backend surfaces as a ConnectError with its code, its
// message, non-ASCII included, and its details, through the client and
// through the page.
func TestBrowserErrorStatus(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ctx := newTab(t, 30*time.Second)
	open(t, ctx, s.url+"/")

	const msg = "nicht gefunden: Straße ✗ 見つかりません"
	type failure struct {
		Code    int
		Message string
	}
	type errResult struct {
		IsConnectError, IsError bool
		Name, RawMessage        string
		Message                 string
		Code                    int
		CodeName                string
		CloseCode               *int
		Details                 []failure
	}
	got := eval[errResult](t, ctx, fmt.Sprintf(`(async () => {
		try {
			await grpcws.echo.echo({ fail: { code: grpcws.Code.NotFound, message: %q } });
			return {};
		} catch (e) {
			return { IsConnectError: e instanceof grpcws.ConnectError, IsError: e instanceof Error, Name: e.name,
				RawMessage: e.rawMessage, Message: e.message, Code: e.code, CodeName: grpcws.codeToString(e.code),
				CloseCode: grpcws.closeCodeOf(e) ?? null,
				Details: e.findDetails(grpcws.FailureSchema).map((d) => ({ Code: d.code, Message: d.message })) };
		}
	})()`, msg))
	want := errResult{IsConnectError: true, IsError: true, Name: "ConnectError", RawMessage: msg, Message: "[not_found] " + msg,
		Code: 5, CodeName: "not_found", Details: []failure{{Code: 5, Message: msg}}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	// A status that ends a stream after messages: the messages, then the error.
	type streamResult struct {
		Ticks   []int
		Code    int
		Details []failure
	}
	sr := eval[streamResult](t, ctx, `(async () => {
		const out = { Ticks: [] };
		try {
			for await (const m of grpcws.echo.ticker({ count: 2, fail: { code: 9, message: "à la fin" } })) out.Ticks.push(m.index);
		} catch (e) {
			out.Code = e.code;
			out.Details = e.findDetails(grpcws.FailureSchema).map((d) => ({ Code: d.code, Message: d.message }));
		}
		return out;
	})()`)
	if !slices.Equal(sr.Ticks, []int{1, 2}) || sr.Code != int(codes.FailedPrecondition) ||
		!slices.Equal(sr.Details, []failure{{Code: 9, Message: "à la fin"}}) {
		t.Errorf("ticker that fails: %+v; want ticks 1, 2 then FAILED_PRECONDITION with its Failure", sr)
	}

	// The page's unary card shows the typed error.
	do(t, ctx,
		chromedp.SetValue(chromedp.ID("echo-fail"), "5"),
		chromedp.Click(chromedp.CSS("#echo-form button[type=submit]")),
	)
	waitFor(t, ctx, "the error in the unary card", `document.getElementById("echo-out").textContent.startsWith("ConnectError")`)
	if got := eval[string](t, ctx, `document.getElementById("echo-out").textContent`); got != "ConnectError NOT_FOUND: nicht gefunden: no such greeting ✗" {
		t.Errorf("the page shows %q", got)
	}
}

// Cancelling in the page reaches the backend: the Cancel button of the
// ticker card, and aborting a bidi stream after its first answer (both an
// AbortSignal: connect-es does not cancel a call whose loop is left early).
func TestBrowserCancel(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ctx := newTab(t, 30*time.Second)
	open(t, ctx, s.url+"/")

	do(t, ctx, chromedp.Click(chromedp.ID("ticker-start")))
	waitFor(t, ctx, "the second tick", `document.getElementById("ticker-out").textContent.startsWith("tick 2 of")`)
	do(t, ctx, chromedp.Click(chromedp.ID("ticker-stop")))
	waitFor(t, ctx, "the cancel in the page", `document.getElementById("ticker-out").textContent.startsWith("canceled")`)
	call, err := s.backend.WaitCall(backendContext(t), "/examples.echo.v1.EchoService/Ticker")
	if err != nil {
		t.Fatal(err)
	}
	if status.Code(call.Err) != codes.Canceled || !errors.Is(call.CtxErr, context.Canceled) {
		t.Errorf("Ticker at the backend: ended with %v, context %v; want CANCELED, context canceled", call.Err, call.CtxErr)
	}

	code := eval[int](t, ctx, `(async () => {
		const ctl = new AbortController();
		const requests = grpcws.createWritableIterable();
		void requests.write({ message: "first" });
		const bidi = grpcws.echo.bidi(requests, { signal: ctl.signal })[Symbol.asyncIterator]();
		await bidi.next();
		ctl.abort(); // cancels the RPC
		try { await bidi.next(); } catch (e) { return e.code; }
		return -1;
	})()`)
	if code != int(codes.Canceled) {
		t.Errorf("the stream aborted after its first answer ended with code %d; want CANCELED", code)
	}
	call, err = s.backend.WaitCall(backendContext(t), "/examples.echo.v1.EchoService/Bidi")
	if err != nil {
		t.Fatal(err)
	}
	if status.Code(call.Err) != codes.Canceled {
		t.Errorf("Bidi at the backend: ended with %v; want CANCELED", call.Err)
	}
}

// A page from another origin is refused with 4007 before anything reaches
// the backend, unless the bridge allows that origin.
func TestBrowserCrossOrigin(t *testing.T) {
	t.Parallel()
	other := httptest.NewServer(demo.Handler()) // the same page, on another port: another origin
	t.Cleanup(other.Close)
	otherHost := strings.TrimPrefix(other.URL, "http://")
	refusing := newSite(t)
	allowing := newSite(t, bridge.WithOriginPatterns(otherHost))

	ctx := newTab(t, 30*time.Second)
	open(t, ctx, other.URL+"/")
	type result struct {
		OK             bool
		IsConnectError bool
		Code           int
		CloseCode      int
		RawMessage     string
	}
	call := func(host string) result {
		return eval[result](t, ctx, fmt.Sprintf(`(async () => {
			const client = grpcws.createClient(grpcws.EchoService, grpcws.createGrpcwsTransport({ baseUrl: "ws://%s/" }));
			try {
				await client.echo({ message: "from elsewhere" });
				return { OK: true };
			} catch (e) {
				return { IsConnectError: e instanceof grpcws.ConnectError, Code: e.code, CloseCode: grpcws.closeCodeOf(e),
					RawMessage: e.rawMessage };
			}
		})()`, host))
	}

	got := call(refusing.host)
	want := result{IsConnectError: true, Code: int(codes.PermissionDenied), CloseCode: 4007,
		RawMessage: fmt.Sprintf("grpcws: origin %q not allowed", other.URL)}
	if got != want {
		t.Errorf("cross-origin call: %+v\nwant %+v", got, want)
	}
	if n := len(refusing.backend.Calls()); n != 0 {
		t.Errorf("the backend saw %d calls from the refused origin; want none", n)
	}

	if got := call(allowing.host); !got.OK {
		t.Errorf("call from an allowed origin: %+v; want OK", got)
	}
}

// A 1 MiB message each way: echoed, counted by a client-streaming upload,
// generated by the backend, and through a bidi stream.
func TestBrowserLargeMessage(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ctx := newTab(t, 30*time.Second)
	open(t, ctx, s.url+"/")

	type result struct {
		EchoSame     bool
		EchoLen      int
		UploadBytes  int
		Generated    int
		BidiSame     []bool
		DigestBefore string
		DigestAfter  string
	}
	got := eval[result](t, ctx, `(async () => {
		const big = new Uint8Array(1 << 20);
		for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
		const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
		const hex = async (b) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", b))].map((x) => x.toString(16).padStart(2, "0")).join("");
		const { echo } = grpcws;
		const out = {};

		const res = await echo.echo({ payload: big });
		out.EchoSame = same(res.payload, big);
		out.EchoLen = res.payload.length;
		out.DigestBefore = await hex(big);
		out.DigestAfter = await hex(res.payload);

		const times = async function* (n, m) { for (let i = 0; i < n; i++) yield m; };
		out.UploadBytes = Number((await echo.upload(times(1, { chunk: big }))).bytes);

		out.Generated = (await echo.echo({ responseSize: 1 << 20 })).payload.length;

		out.BidiSame = [];
		for await (const r of echo.bidi(times(2, { payload: big }))) out.BidiSame.push(same(r.payload, big));
		return out;
	})()`)
	if !got.EchoSame || got.EchoLen != 1<<20 || got.DigestBefore != got.DigestAfter {
		t.Errorf("echo of 1 MiB: same %v, %d bytes, sha-256 %s -> %s", got.EchoSame, got.EchoLen, got.DigestBefore, got.DigestAfter)
	}
	if got.UploadBytes != 1<<20 {
		t.Errorf("upload of 1 MiB: the backend counted %d bytes", got.UploadBytes)
	}
	if got.Generated != 1<<20 {
		t.Errorf("1 MiB from the backend: got %d bytes", got.Generated)
	}
	if !slices.Equal(got.BidiSame, []bool{true, true}) {
		t.Errorf("bidi of 2 × 1 MiB: %v; want both echoed intact", got.BidiSame)
	}
}

// countSockets wraps the page's WebSocket before its script runs, so that
// a test can read every WebSocket the page made: globalThis.sockets.
const countSockets = `(() => {
	const Native = globalThis.WebSocket;
	const sockets = [];
	globalThis.sockets = sockets;
	globalThis.WebSocket = class extends Native {
		constructor(url, protocols) {
			super(url, protocols);
			sockets.push({ url: String(url), protocols: protocols === undefined ? [] : [].concat(protocols) });
		}
	};
})()`

// openCounting opens the demo page with its WebSockets counted.
func openCounting(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	do(t, ctx, chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: countSockets})
		return err
	}))
	open(t, ctx, url)
	if got := eval[int](t, ctx, `globalThis.sockets.length`); got != 0 {
		t.Fatalf("%d WebSockets before any call; want none", got)
	}
}

// The demo page makes all its calls over one WebSocket (grpcws.mux.v1):
// the chat, every RPC kind from its cards and from the console, cancels
// that reach the backend, and a server stream whose reader stalls, which
// does not slow the chat.
func TestBrowserOneWebSocket(t *testing.T) {
	t.Parallel()
	s := newSite(t)
	ctx := newTab(t, 40*time.Second)
	openCounting(t, ctx, s.url+"/#one-socket")

	// The chat, through the page's form.
	do(t, ctx,
		chromedp.SetValue(chromedp.ID("nickname"), "ann"),
		chromedp.Click(chromedp.CSS("#join-form button[type=submit]")),
	)
	waitFor(t, ctx, "ann in the room", `document.getElementById("status").textContent === "live"`)

	// The cards: unary, client-streaming, and a server stream cancelled
	// with its button.
	do(t, ctx, chromedp.Click(chromedp.CSS("#echo-form button[type=submit]")))
	waitFor(t, ctx, "the unary answer", `document.getElementById("echo-out").className === "out ok"`)
	do(t, ctx, chromedp.Click(chromedp.ID("upload-start")))
	waitFor(t, ctx, "the upload's count", `document.getElementById("upload-out").textContent.startsWith("the server counted 100 messages")`)
	do(t, ctx, chromedp.Click(chromedp.ID("ticker-start")))
	waitFor(t, ctx, "the second tick", `document.getElementById("ticker-out").textContent.startsWith("tick 2 of")`)
	do(t, ctx, chromedp.Click(chromedp.ID("ticker-stop")))
	waitFor(t, ctx, "the cancel in the page", `document.getElementById("ticker-out").textContent.startsWith("canceled")`)

	// Every kind from the console, at once, and a bidi stream cancelled
	// after its first answer.
	type kinds struct {
		Unary    string
		Ticks    int
		Upload   int
		Bidi     []string
		Canceled int
	}
	got := eval[kinds](t, ctx, `(async () => {
		const { echo, createWritableIterable } = grpcws;
		const headers = { "x-echo-from": "one-socket" };
		const out = {};
		await Promise.all([
			echo.echo({ message: "hi" }, { headers }).then((r) => (out.Unary = r.message)),
			(async () => { out.Ticks = 0; for await (const _ of echo.ticker({ count: 3 }, { headers })) out.Ticks++; })(),
			echo.upload((async function* () { for (let i = 1; i <= 4; i++) yield { chunk: new Uint8Array(i) }; })(), { headers })
				.then((r) => (out.Upload = Number(r.bytes))),
			(async () => { out.Bidi = []; for await (const r of echo.bidi((async function* () { yield { message: "a" }; yield { message: "b" }; })(), { headers })) out.Bidi.push(r.message); })(),
		]);
		const ctl = new AbortController();
		const requests = createWritableIterable();
		void requests.write({ message: "first" });
		const bidi = echo.bidi(requests, { signal: ctl.signal, headers: { "x-echo-from": "cancel-me" } })[Symbol.asyncIterator]();
		await bidi.next();
		ctl.abort();
		try { await bidi.next(); out.Canceled = -1; } catch (e) { out.Canceled = e.code; }
		return out;
	})()`)
	if want := (kinds{Unary: "hi", Ticks: 3, Upload: 10, Bidi: []string{"a", "b"}, Canceled: int(codes.Canceled)}); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("every kind: %+v; want %+v", got, want)
	}

	// A server stream of 16 KiB messages, every millisecond, read once and
	// then not at all: the bridge stops at its window. Meanwhile a second
	// member on the same transport, so on the same socket, ping-pongs in
	// ann's room, and ann's page shows what it says.
	type pingPong struct {
		Rounds  int
		Slowest float64
		Total   float64
	}
	pp := eval[pingPong](t, ctx, `(async () => {
		const { echo, chat, createWritableIterable } = grpcws;
		globalThis.stall = new AbortController();
		const stalled = echo.ticker({ message: "x".repeat(16384), count: 0, interval: { seconds: 0n, nanos: 1000000 } },
			{ signal: globalThis.stall.signal, headers: { "x-echo-from": "stalled" } })[Symbol.asyncIterator]();
		await stalled.next();
		await new Promise((r) => setTimeout(r, 300)); // its window fills, and stays full
		globalThis.stalled = stalled;

		const requests = createWritableIterable();
		const bob = chat.chat(requests)[Symbol.asyncIterator]();
		await requests.write({ kind: { case: "join", value: { room: "one-socket", nickname: "bob" } } });
		const mine = async (text) => {
			for (;;) {
				const r = await bob.next();
				if (r.value.kind.case === "message" && r.value.kind.value.nickname === "bob" && r.value.kind.value.text === text) return;
			}
		};
		let slowest = 0;
		const start = performance.now();
		const rounds = 30;
		for (let i = 0; i < rounds; i++) {
			const t = performance.now();
			const text = "ping " + i;
			await requests.write({ kind: { case: "say", value: { text } } });
			await mine(text);
			slowest = Math.max(slowest, performance.now() - t);
		}
		const total = performance.now() - start;
		requests.close();
		while (!(await bob.next()).done) {}
		return { Rounds: rounds, Slowest: slowest, Total: total };
	})()`)
	t.Logf("30 chat ping-pongs beside a stalled stream: the slowest %.0f ms, all %.0f ms", pp.Slowest, pp.Total)
	if pp.Rounds != 30 || pp.Slowest > 500 || pp.Total > 3000 {
		t.Errorf("30 chat ping-pongs beside a stalled stream: the slowest %.0f ms, all %.0f ms; want each under 500 ms", pp.Slowest, pp.Total)
	}
	waitFor(t, ctx, "bob's pings in ann's page", `[...document.querySelectorAll("#messages .msg:not(.mine) .bubble")].some((e) => e.textContent === "ping 29")`)

	// The stalled stream goes on when read again; abort it.
	if got := eval[int](t, ctx, `(async () => {
		for (let i = 2; i <= 20; i++) if ((await globalThis.stalled.next()).value.index !== i) return -i;
		globalThis.stall.abort();
		try { await globalThis.stalled.next(); return -1; } catch (e) { return e.code; }
	})()`); got != int(codes.Canceled) {
		t.Errorf("the stalled stream, read again then aborted: %d; want ticks 2 to 20, then CANCELED", got)
	}

	type socket struct {
		URL       string
		Protocols []string
	}
	if got := eval[[]socket](t, ctx, `globalThis.sockets`); len(got) != 1 || !slices.Equal(got[0].Protocols, []string{bridge.Multiplexed}) {
		t.Errorf("the page opened %+v; want one WebSocket, grpcws.mux.v1", got)
	}

	// The cancels reached the backend: the ticker card's, the bidi's, the
	// stalled stream's, and ann's chat when she leaves.
	do(t, ctx, chromedp.Click(chromedp.ID("leave")))
	if err := s.backend.WaitIdle(backendContext(t)); err != nil {
		t.Error(err)
	}
	canceled := map[string]int{}
	for _, c := range s.backend.Calls() {
		if status.Code(c.Err) == codes.Canceled && c.Method != "/examples.chat.v1.ChatService/Chat" {
			from := strings.Join(c.MD.Get("x-echo-from"), ",")
			canceled[strings.TrimPrefix(c.Method, "/examples.echo.v1.EchoService/")+" "+from]++
		}
	}
	if want := map[string]int{"Ticker ": 1, "Bidi cancel-me": 1, "Ticker stalled": 1}; fmt.Sprint(canceled) != fmt.Sprint(want) {
		t.Errorf("calls canceled at the backend: %v; want %v", canceled, want)
	}
	var chats []codes.Code // ann's, then bob's
	for _, c := range s.backend.Calls() {
		if c.Method == "/examples.chat.v1.ChatService/Chat" {
			chats = append(chats, status.Code(c.Err))
		}
	}
	if !slices.Equal(chats, []codes.Code{codes.Canceled, codes.OK}) {
		t.Errorf("the Chat calls ended at the backend with %v; want ann's CANCELED (she left), bob's OK", chats)
	}
}
