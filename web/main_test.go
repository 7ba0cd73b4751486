package web_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// The browser is started once, on first use, and shared: each test runs in
// tabs of its own.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	dir    string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel() // stops chromium and waits for it
		os.RemoveAll(browser.dir)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startBrowser starts headless chromium with the flags of a clean,
// quiet, offline browser.
func startBrowser() {
	dir, err := os.MkdirTemp("", "grpcws-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	browser.dir = dir
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.UserDataDir(dir),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// The TLS tests' certificates come from a CA made in the test.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 800),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	browser.ctx = ctx
	browser.cancel = func() {
		cancelCtx()
		cancelAlloc()
	}
	// The first Run starts the browser; it lives as long as ctx.
	browser.err = chromedp.Do(ctx)
}

// newTab opens a tab in the shared browser, closed when the test ends, and
// returns its context with a deadline of d. Without chromium the test is
// skipped, unless CI is set: CI must run the browser tests.
func newTab(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing and CI is set: install it (apt-get install chromium)", chromiumPath)
		}
		t.Skipf("skipping the browser test: %s is missing (apt-get install chromium)", chromiumPath)
	}
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatalf("starting chromium: %v", browser.err)
	}
	tab, closeTab := chromedp.NewContext(browser.ctx)
	ctx, cancel := context.WithTimeout(tab, d)
	t.Cleanup(func() {
		cancel()
		closeTab()
	})
	return ctx
}
