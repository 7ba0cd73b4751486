package server

import (
	"bytes"
	"context"
	"fmt"
	"html"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/v1test"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// Secrets that the test's clients send and the status page must not show.
const (
	secretToken    = "tok3n-that-must-not-show"
	secretMetadata = "m3tadata-that-must-not-show"
)

// statusFixture is a sidecar with two backends on one test backend: echo
// by server reflection, chat from a descriptor set.
type statusFixture struct {
	*running
	chatSet string
	backend string    // the test backend's address, both backends' target
	began   time.Time // before the server was made
	ready   time.Time // once /readyz answered 200
	base    string    // http://front
}

func newStatusFixture(t *testing.T) *statusFixture {
	t.Helper()
	tb := testbackend.Start(t)
	chatSet := testbackend.WriteDescriptorSet(t, chatv1.File_examples_chat_v1_chat_proto)
	cfg := testConfig(tb.Addr)
	chat := config.NewBackend("chat", tb.Addr)
	chat.Descriptors.Files = []string{chatSet}
	cfg.Backends = append(cfg.Backends, chat)
	cfg.Routes = []config.Route{
		{Backend: "echo", Services: []string{"examples.echo.v1.EchoService"}},
		{Backend: "chat", All: true},
	}
	f := &statusFixture{chatSet: chatSet, backend: tb.Addr, began: time.Now()}
	f.running = serve(t, Options{Config: cfg})
	f.waitReady(t)
	f.ready = time.Now()
	f.base = "http://" + f.Addr().String()
	return f
}

// traffic is the known traffic of the status tests. It returns with a
// bidi stream (protocol v1) and a ticker (gRPC-Web) still open, and every
// other call ended and counted.
//
// Echo: 3 calls in protocol v1, 2 in Connect that fail with NOT_FOUND, 1
// in gRPC-Web: 6 messages in, 4 out. Bidi: 4 messages each way, open.
// Ticker: 1 in, 1 out, open. One connection refused for an unknown route.
func (f *statusFixture) traffic(t *testing.T, ctx context.Context) {
	t.Helper()
	for range 3 {
		if code := callEcho(t, ctx, dialer{}, f.url); code != websocket.StatusNormalClosure {
			t.Fatalf("echo: close %d", code)
		}
	}
	h1, _ := httpClients(t)
	echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](h1, f.base+"/examples.echo.v1.EchoService/Echo")
	for range 2 {
		_, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Fail: &echov1.Failure{Code: 5}}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("failing echo over Connect: %v; want NotFound", err)
		}
	}
	echoWeb := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](h1, f.base+"/examples.echo.v1.EchoService/Echo", connect.WithGRPCWeb())
	if _, err := echoWeb.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Message: "web"})); err != nil {
		t.Fatalf("echo over gRPC-Web: %v", err)
	}

	// The bidi stream carries a bearer token and metadata.
	c, _, err := websocket.Dial(ctx, f.url, &websocket.DialOptions{
		Subprotocols: []string{bidiRoute, v1wire.TokenEntry(secretToken)},
		HTTPHeader:   http.Header{"Grpc-Metadata-X-Api-Key": {secretMetadata}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	for i := range 4 {
		v1test.Send(t, ctx, c, &echov1.BidiRequest{Message: fmt.Sprint("m", i)})
		v1test.Next(t, ctx, c)
	}

	ticker := connect.NewClient[echov1.TickerRequest, echov1.TickerResponse](h1, f.base+"/examples.echo.v1.EchoService/Ticker", connect.WithGRPCWeb())
	stream, err := ticker.CallServerStream(ctx, connect.NewRequest(&echov1.TickerRequest{Interval: durationpb.New(time.Hour)}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stream.Close() })
	if !stream.Receive() {
		t.Fatalf("ticker: %v", stream.Err())
	}

	refused := dialer{}.mustDial(t, ctx, f.url, "no.such.Route")
	if code, _ := v1test.CloseCode(ctx, refused); code != 4012 {
		t.Fatalf("unknown route: close %d; want 4012", code)
	}

	// The calls' ends reach the metrics just after their clients see them.
	waitFor(t, "every ended call counted", func() bool {
		_, body := f.get(t, "/metrics")
		for _, line := range []string{
			`grpcws_streams_total{code="OK",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Echo"} 3`,
			`grpcws_streams_total{code="NotFound",protocol="connect",route="/examples.echo.v1.EchoService/Echo"} 2`,
			`grpcws_streams_total{code="OK",protocol="grpc-web",route="/examples.echo.v1.EchoService/Echo"} 1`,
		} {
			if !strings.Contains(body, line) {
				return false
			}
		}
		return true
	})
}

// TestStatusPage checks what the page is, where, and what it does not
// show; TestStatusPageInChromium checks its numbers.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	f := newStatusFixture(t)
	ctx := testContext(t)
	f.traffic(t, ctx)

	res, err := http.Get(f.admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	// The text as read: <wbr> only says where a long name may break.
	body := html.UnescapeString(strings.ReplaceAll(readAll(t, res), "<wbr>", ""))
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET admin / = %s %q", res.Status, res.Header.Get("Content-Type"))
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q; want default-src 'none'", csp)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		"/examples.echo.v1.EchoService/Echo", "examples.chat.v1.ChatService.Chat+json", "chat.v1",
		"examples.chat.v1.ChatRequest", "server reflection", f.chatSet, "READY", "ready",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	token := v1wire.TokenEntry(secretToken)
	for _, secret := range []string{secretToken, token, strings.TrimPrefix(token, v1wire.TokenPrefix), secretMetadata} {
		if strings.Contains(body, secret) {
			t.Errorf("the page shows %q", secret)
		}
	}
	// The only addresses on the page are the two backends' target: no
	// client's, and not the listener's.
	if n := strings.Count(body, "127.0.0.1"); n != 2 || strings.Count(body, `<div class="mono">`+f.backend+`</div>`) != 2 {
		t.Errorf("the page has 127.0.0.1 %d times; want it twice, in the backends' targets", n)
	}
	// No external assets: nothing is loaded from elsewhere.
	for _, asset := range []string{"<script", "<link", "src=", "url(", "@import"} {
		if strings.Contains(body, asset) {
			t.Errorf("the page has %q", asset)
		}
	}
	if _, body := f.get(t, "/?refresh=0"); strings.Contains(body, `http-equiv="refresh"`) {
		t.Error("?refresh=0 still refreshes")
	}

	// Only on the admin listener: the front answers / as it always did.
	res, err = http.Get(f.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, res); res.StatusCode != http.StatusUpgradeRequired || strings.Contains(body, "<html") {
		t.Errorf("GET front / = %s; want 426 and no status page", res.Status)
	}
	if code, _ := f.get(t, "/other"); code != http.StatusNotFound {
		t.Errorf("GET admin /other = %d; want 404", code)
	}
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// newChromium starts a headless chromium for one test, with the flags of
// a clean, quiet, offline browser, and returns a tab's context. Without
// chromium the test is skipped, unless CI is set: CI must run it.
func newChromium(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing and CI is set: install it (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("skipping the browser test: %s is missing (apt-get install chromium)", chromiumPath)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(alloc)
	ctx, cancel := context.WithTimeout(tab, 60*time.Second)
	t.Cleanup(func() {
		cancel()
		cancelTab()
		cancelAlloc() // waits for chromium to exit
	})
	return ctx
}

// pageRoute is one row of the page's route table, as the browser shows it.
type pageRoute struct {
	Method   string
	Open     map[string]int
	Failures map[string]string
	In, Out  string // rates
	InTotal  string
	OutTotal string
}

// pageNumbers is what the page shows, read from the DOM.
type pageNumbers struct {
	State, Open, Failures, Refused, BackendsUp string
	RefusedWhy                                 []string
	Routes                                     []pageRoute
	Backends                                   map[string]string // name: state
	Sources                                    map[string]string // source: last read
	SourceErrors                               []string
}

const readPage = `(() => {
	const text = (e) => e ? e.textContent.trim() : "";
	const out = {
		State: text(document.getElementById("state")),
		Open: text(document.getElementById("open")),
		Failures: text(document.getElementById("failures")),
		Refused: text(document.getElementById("refused")),
		BackendsUp: text(document.getElementById("backends-up")),
		RefusedWhy: [...document.querySelectorAll("[data-reason]")].map(text),
		Routes: [], Backends: {}, Sources: {}, SourceErrors: [],
	};
	for (const tr of document.querySelectorAll("#routes tr.route")) {
		const r = { Method: tr.id.replace(/^route:/, ""), Open: {}, Failures: {} };
		for (const li of tr.querySelectorAll(".open li")) r.Open[li.dataset.protocol] = Number(text(li.querySelector("b")));
		for (const li of tr.querySelectorAll(".failures li")) r.Failures[li.dataset.code] = text(li);
		r.In = text(tr.querySelector(".in .rate"));
		r.Out = text(tr.querySelector(".out .rate"));
		r.InTotal = text(tr.querySelector(".in .total"));
		r.OutTotal = text(tr.querySelector(".out .total"));
		out.Routes.push(r);
	}
	for (const tr of document.querySelectorAll("#backends tbody tr")) out.Backends[tr.dataset.backend] = text(tr.querySelector(".state"));
	for (const tr of document.querySelectorAll("#sources tbody tr")) {
		out.Sources[text(tr.querySelector(".source"))] = text(tr.querySelector(".read"));
		if (tr.querySelector(".error .badge")) out.SourceErrors.push(text(tr.querySelector(".error")));
	}
	return out;
})()`

// TestStatusPageInChromium loads the status page in Chromium after known
// traffic: its numbers are the traffic's; it is readable at phone size;
// screenshots at desktop and phone sizes go to $GRPCWS_SCREENSHOTS when
// set.
func TestStatusPageInChromium(t *testing.T) {
	t.Parallel()
	f := newStatusFixture(t)
	f.traffic(t, testContext(t))
	sent := time.Now()
	ctx := newChromium(t)

	loadStart := time.Now()
	if _, err := chromedp.Run(ctx, chromedp.Navigate(f.admin+"/?refresh=0")); err != nil {
		t.Fatal(err)
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[pageNumbers](readPage))
	if err != nil {
		t.Fatal(err)
	}
	loadEnd := time.Now()

	if got.State != "ready" || got.Open != "2" || got.Failures != "2" || got.Refused != "1" || got.BackendsUp != "2 of 2" {
		t.Errorf("summary: state %q, open %q, failures %q, refused %q, backends %q; want ready, 2, 2, 1, 2 of 2",
			got.State, got.Open, got.Failures, got.Refused, got.BackendsUp)
	}
	if strings.Join(got.RefusedWhy, ",") != "unknown_route 1" {
		t.Errorf("refusals %q; want unknown_route 1", got.RefusedWhy)
	}
	want := map[string]struct {
		open     string
		failures string
		in, out  string // totals
	}{
		"/examples.echo.v1.EchoService/Echo":   {"", "NotFound=NotFound 2", "6", "4"},
		"/examples.echo.v1.EchoService/Bidi":   {"grpcws.v1=1", "", "4", "4"},
		"/examples.echo.v1.EchoService/Ticker": {"grpc-web=1", "", "1", "1"},
		"/examples.echo.v1.EchoService/Upload": {"", "", "0", "0"},
		"/examples.chat.v1.ChatService/Chat":   {"", "", "0", "0"},
	}
	if len(got.Routes) != len(want) {
		t.Errorf("%d routes on the page; want %d: %+v", len(got.Routes), len(want), got.Routes)
	}
	join := func(m map[string]int) string {
		var parts []string
		for k, v := range m {
			parts = append(parts, k+"="+strconv.Itoa(v))
		}
		return strings.Join(parts, ",")
	}
	joinS := func(m map[string]string) string {
		var parts []string
		for k, v := range m {
			parts = append(parts, k+"="+v)
		}
		return strings.Join(parts, ",")
	}
	for _, r := range got.Routes {
		w, ok := want[r.Method]
		if !ok {
			t.Errorf("unexpected route %s", r.Method)
			continue
		}
		if join(r.Open) != w.open || joinS(r.Failures) != w.failures || r.InTotal != w.in || r.OutTotal != w.out {
			t.Errorf("%s: open %q, failures %q, messages in %s out %s; want %q, %q, %s, %s",
				r.Method, join(r.Open), joinS(r.Failures), r.InTotal, r.OutTotal, w.open, w.failures, w.in, w.out)
		}
		// Rates over the time since the server started: the test knows
		// that to within its own steps, and the page rounds.
		for _, dir := range []struct{ name, total, rate string }{{"in", r.InTotal, r.In}, {"out", r.OutTotal, r.Out}} {
			total, _ := strconv.ParseFloat(dir.total, 64)
			rate, err := strconv.ParseFloat(dir.rate, 64)
			if err != nil {
				t.Errorf("%s: rate %s %q is not a number", r.Method, dir.name, dir.rate)
				continue
			}
			lo := total / loadEnd.Sub(f.began).Seconds()
			hi := total / loadStart.Sub(f.ready).Seconds()
			if rate < lo-roundedTo(lo) || rate > hi+roundedTo(hi) {
				t.Errorf("%s: %v messages %s at %v/s; want between %.3f and %.3f", r.Method, total, dir.name, rate, lo, hi)
			}
		}
	}
	if got.Backends["echo"] != "READY" || got.Backends["chat"] != "READY" {
		t.Errorf("backends %v; want echo and chat READY", got.Backends)
	}
	if read := got.Sources["server reflection"]; !strings.Contains(read, "UTC") {
		t.Errorf("server reflection last read %q; want a time", read)
	}
	if read := got.Sources[f.chatSet]; !strings.Contains(read, "UTC") {
		t.Errorf("%s last read %q; want a time", f.chatSet, read)
	}
	if len(got.SourceErrors) != 0 {
		t.Errorf("source errors %q; want none", got.SourceErrors)
	}
	if html, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML`)); err != nil {
		t.Fatal(err)
	} else if strings.Contains(html, secretToken) || strings.Contains(html, secretMetadata) {
		t.Error("the page shows a token or a metadata value")
	}
	statusScreenshots(t, ctx)
	t.Logf("traffic sent %v before the page loaded", loadStart.Sub(sent))
}

// roundedTo is half the last digit the page shows of a rate near r.
func roundedTo(r float64) float64 {
	switch {
	case r < 10:
		return 0.005
	case r < 100:
		return 0.05
	}
	return 0.5
}

// statusScreenshots saves the page at desktop and phone sizes, into
// $GRPCWS_SCREENSHOTS when set, and checks that the phone layout does not
// scroll sideways.
func statusScreenshots(t *testing.T, ctx context.Context) {
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
		{"desktop", 1280, 900, nil},
		{"phone", 390, 844, []chromedp.EmulateViewportOption{chromedp.EmulateScale(2), chromedp.EmulateMobile, chromedp.EmulateTouch}},
	} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(v.width, v.height, v.opts...)); err != nil {
			t.Fatal(err)
		}
		// The window has the new size at once; the page's layout follows.
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](fmt.Sprintf(`outerWidth === %d`, v.width),
			chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("the %s size: %v", v.name, err)
		}
		// A mobile browser widens its layout viewport to fit content that
		// does not fit: the page must fit in the device's width.
		widths, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`[innerWidth, document.documentElement.scrollWidth]`))
		if err != nil {
			t.Fatal(err)
		}
		if inner, scroll := widths[0], widths[1]; inner != int(v.width) || scroll > inner {
			// The innermost elements whose content overflows them.
			wide, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("body *")]
				.filter(e => e.scrollWidth > e.clientWidth && ![...e.children].some(c => c.scrollWidth > c.clientWidth))
				.map(e => e.tagName + "." + e.className + ": " + e.textContent.trim().slice(0, 60))`))
			t.Errorf("%s: the page is %d px wide in a %d px layout viewport, in a %d px window; too wide: %q %v",
				v.name, scroll, inner, v.width, wide, err)
		}
		shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.DecodeConfig(bytes.NewReader(shot))
		if err != nil {
			t.Fatalf("%s screenshot: %v", v.name, err)
		}
		if wantWidth := v.width * map[bool]int64{false: 1, true: 2}[v.opts != nil]; int64(img.Width) != wantWidth || img.Height < int(v.height) {
			t.Errorf("%s screenshot: %dx%d; want %d wide and the whole page", v.name, img.Width, img.Height, wantWidth)
		}
		path := filepath.Join(dir, "status-"+v.name+".png")
		if err := os.WriteFile(path, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		if keep {
			t.Logf("screenshot: %s", path)
		}
	}
}
