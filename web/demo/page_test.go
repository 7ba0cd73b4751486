package demo_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/grpcws/grpcws/web/demo"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestHandler(t *testing.T) {
	t.Parallel()
	h := demo.Handler()

	res := get(t, h, http.MethodGet, "/")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %d; want 200", res.StatusCode)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /: Content-Type %q; want text/html", ct)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("GET /: Content-Security-Policy %q; want default-src 'self'", csp)
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("GET /: Cache-Control %q; want no-cache", cc)
	}

	// The page names its script and style sheet by content hash; both are
	// served, with a long cache lifetime.
	assets := regexp.MustCompile(`(?:src|href)="(main-[A-Z0-9]+\.(?:js|css))"`).FindAllStringSubmatch(string(body), -1)
	if len(assets) != 2 {
		t.Fatalf("index.html names %d assets; want a script and a style sheet:\n%s", len(assets), body)
	}
	for _, a := range assets {
		res := get(t, h, http.MethodGet, "/"+a[1])
		if res.StatusCode != http.StatusOK {
			t.Errorf("GET /%s: %d; want 200", a[1], res.StatusCode)
		}
		if cc := res.Header.Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Errorf("GET /%s: Cache-Control %q; want immutable", a[1], cc)
		}
		want := "text/javascript"
		if strings.HasSuffix(a[1], ".css") {
			want = "text/css"
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, want) {
			t.Errorf("GET /%s: Content-Type %q; want %s", a[1], ct, want)
		}
		if n := res.Header.Get("X-Content-Type-Options"); n != "nosniff" {
			t.Errorf("GET /%s: X-Content-Type-Options %q; want nosniff", a[1], n)
		}
	}

	for _, tc := range []struct {
		name, method, path string
		code               int
	}{
		{"HEAD", http.MethodHead, "/", http.StatusOK},
		{"unknown file", http.MethodGet, "/nope.js", http.StatusNotFound},
		{"outside the tree", http.MethodGet, "/../embed.go", http.StatusNotFound},
		{"POST", http.MethodPost, "/", http.StatusMethodNotAllowed},
		{"index.html", http.MethodGet, "/index.html", http.StatusMovedPermanently},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if res := get(t, h, tc.method, tc.path); res.StatusCode != tc.code {
				t.Errorf("%s %s: %d; want %d", tc.method, tc.path, res.StatusCode, tc.code)
			}
		})
	}
}
