// Package demo serves the grpcws demo page: a chat on a bidi stream and a
// panel with the other RPC kinds, written with the TypeScript client of
// web/ (the npm package @grpcws/client).
//
// The page is built by `make web` (esbuild, pinned in package-lock.json)
// into dist and embedded in the binary, so `go run ./cmd/grpcws --demo`
// needs no Node. The page opens its WebSockets to the origin it was loaded
// from, so serve Handler and the bridge on the same host: plain GET
// requests to Handler, WebSocket upgrades to the bridge.
package demo

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed dist
var dist embed.FS

// Handler returns an http.Handler that serves the demo page: index.html at
// "/" (and at "/index.html"), and its script and style sheet, whose names
// carry a hash of their content and are cached for a year. It answers GET
// and HEAD only, and 404 for any other path. It is safe for concurrent use.
func Handler() http.Handler {
	files, err := fs.Sub(dist, "dist")
	if err != nil {
		panic("demo: " + err.Error()) // the embedded tree is fixed at build time
	}
	return &handler{files: files, server: http.FileServerFS(files)}
}

type handler struct {
	files  fs.FS
	server http.Handler
}

// contentSecurityPolicy allows the page's own script and style sheet and
// WebSockets to any host (the bridge may be on another one); nothing
// inline, no frames.
const contentSecurityPolicy = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "demo: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	if _, err := fs.Stat(h.files, name); err != nil {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if name == "index.html" {
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("Cache-Control", "no-cache")
		// Serve the file itself: FileServer redirects /index.html to /.
		http.ServeFileFS(w, r, h.files, name)
		return
	}
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	r2 := r.Clone(r.Context())
	r2.URL.Path = "/" + name
	h.server.ServeHTTP(w, r2)
}
