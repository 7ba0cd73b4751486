package server

import (
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/metrics"
	"github.com/grpcws/grpcws/internal/version"
)

// The status page's windows: messages per second over the last minute,
// failures and refusals over the last five, from snapshots of the
// metrics taken every sampleInterval.
const (
	rateWindow     = time.Minute
	failureWindow  = 5 * time.Minute
	sampleInterval = 5 * time.Second
	statusRefresh  = 5 // seconds between the page's own reloads
)

// protocols orders the protocols on the page.
var protocols = []bridge.Protocol{
	bridge.ProtocolV1, bridge.ProtocolGRPCWebsockets, bridge.ProtocolGRPCWeb, bridge.ProtocolConnect, bridge.ProtocolGRPC,
}

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{"breakable": breakable}).Parse(statusHTML))

// breakable lets a browser break a long name (a method, a subprotocol, a
// file name) after its dots and slashes rather than anywhere.
func breakable(s string) template.HTML {
	var b strings.Builder
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' || s[i] == '/' || s[i] == '_' {
			b.WriteString(template.HTMLEscapeString(s[start : i+1]))
			b.WriteString("<wbr>")
			start = i + 1
		}
	}
	b.WriteString(template.HTMLEscapeString(s[start:]))
	return template.HTML(b.String())
}

// sample adds a snapshot of the metrics to the history every
// sampleInterval until ctx is done.
func (s *Server) sample(ctx context.Context) {
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.history.Add(s.metrics.Snapshot())
		}
	}
}

// statusView is what the status page shows. It holds nothing secret: no
// metadata, no tokens, no client addresses.
type statusView struct {
	Version       string
	Now           string
	Started       string
	Uptime        string
	State         string // ready, not ready, draining
	StateClass    string // ok, warn, bad
	Problems      []string
	Refresh       int
	RateWindow    string
	FailureWindow string

	Open         int
	OpenBy       []count // by protocol
	InRate       string
	OutRate      string
	Failures     int
	Refused      []count // by reason, in the failure window
	RefusedTotal int64
	BackendsUp   string // "2 of 2"

	Routes   []routeView
	Gone     []routeView // no longer routed, with streams still open
	Backends []backendView
	Sources  []sourceView
}

type count struct {
	Name string
	N    int64
}

type routeView struct {
	RouteInfo
	Service, Name string // of Method
	Open          int64
	OpenBy        []count
	InRate        string // messages per second, client to backend
	OutRate       string
	InTotal       int64 // messages since the start
	OutTotal      int64
	Failures      []count // RPCs that ended with a code other than OK, by code
}

type backendView struct {
	Name, Target, State, StateClass string
	Required                        bool
	LoadBalancing                   string
	Descriptors                     string
}

type sourceView struct {
	Backend, Source string
	ReadAt, Ago     string // the last successful read
	TriedAt         string // the last attempt, when it failed
	Error           string
}

// serveStatus serves the status page, on the admin listener only. It
// reloads itself every statusRefresh seconds, or every ?refresh=N seconds
// (0: never, for reading it at leisure).
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	v := s.statusView(time.Now())
	if q := r.URL.Query().Get("refresh"); q != "" {
		if n, err := strconv.Atoi(q); err == nil && n >= 0 && n <= 3600 {
			v.Refresh = n
		}
	}
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, v); err != nil {
		s.log.Error("grpcws: status page", slog.Any("error", err))
		http.Error(w, "grpcws: the status page failed: see the log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Nothing but the page and its own styles: no scripts, no requests.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) statusView(now time.Time) statusView {
	v := statusView{
		Version:       version.Get().String(),
		Now:           now.UTC().Format(time.DateTime) + " UTC",
		Started:       s.started.UTC().Format(time.DateTime) + " UTC",
		Uptime:        ago(now.Sub(s.started)),
		Refresh:       statusRefresh,
		RateWindow:    "1 min",
		FailureWindow: "5 min",
	}
	v.Problems = s.ready()
	switch {
	case s.draining.Load():
		v.State, v.StateClass, v.Problems = "draining", "bad", nil
	case len(v.Problems) > 0:
		v.State, v.StateClass = "not ready", "warn"
	default:
		v.State, v.StateClass = "ready", "ok"
	}

	snap := s.metrics.Snapshot()
	var rates, recent map[metrics.Stream]metrics.Change
	var rateSpan time.Duration
	if base, ok := s.history.Since(now.Add(-rateWindow)); ok {
		rates, rateSpan = snap.Since(base)
		// Less than the window in the first minute, and up to a sample
		// interval less after: the page says which.
		v.RateWindow = seconds(rateSpan)
	}
	if base, ok := s.history.Since(now.Add(-failureWindow)); ok {
		recent, _ = snap.Since(base)
		refused := snap.RefusedSince(base)
		for _, why := range slices.Sorted(maps.Keys(refused)) {
			v.Refused = append(v.Refused, count{why, int64(refused[why])})
			v.RefusedTotal += int64(refused[why])
		}
	}

	// Routes, with their streams by protocol.
	g := s.front.Load()
	routed := map[string]bool{}
	var totalIn, totalOut float64
	openBy := map[string]int64{}
	view := func(info RouteInfo) routeView {
		rv := routeView{RouteInfo: info}
		rv.Service, rv.Name, _ = strings.Cut(strings.TrimPrefix(info.Method, "/"), "/")
		var in, out float64
		failures := map[string]int64{}
		for _, p := range protocols {
			k := metrics.Stream{Route: info.Method, Protocol: string(p)}
			c := snap.Streams[k]
			if n := int64(c.Open); n > 0 {
				rv.OpenBy = append(rv.OpenBy, count{string(p), n})
				rv.Open += n
				openBy[string(p)] += n
			}
			rv.InTotal += int64(c.ClientMessages)
			rv.OutTotal += int64(c.BackendMessages)
			in += rates[k].ClientMessages
			out += rates[k].BackendMessages
			for code, n := range recent[k].Ended {
				if code != "OK" {
					failures[code] += int64(n)
				}
			}
		}
		for _, code := range slices.Sorted(maps.Keys(failures)) {
			rv.Failures = append(rv.Failures, count{code, failures[code]})
			v.Failures += int(failures[code])
		}
		totalIn += in
		totalOut += out
		rv.InRate, rv.OutRate = rate(in, rateSpan, rates != nil), rate(out, rateSpan, rates != nil)
		return rv
	}
	if g != nil {
		for _, info := range g.routes {
			routed[info.Method] = true
			v.Routes = append(v.Routes, view(info))
		}
	}
	// Streams still open on routes that a reload or new descriptors took
	// away: they run until they end.
	gone := map[string]bool{}
	for k, c := range snap.Streams {
		if !routed[k.Route] && c.Open > 0 {
			gone[k.Route] = true
		}
	}
	for _, m := range slices.Sorted(maps.Keys(gone)) {
		v.Gone = append(v.Gone, view(RouteInfo{Method: m}))
	}
	for _, p := range protocols {
		if n := openBy[string(p)]; n > 0 {
			v.OpenBy = append(v.OpenBy, count{string(p), n})
			v.Open += int(n)
		}
	}
	v.InRate, v.OutRate = rate(totalIn, rateSpan, rates != nil), rate(totalOut, rateSpan, rates != nil)

	// Backends and where their descriptors come from.
	s.mu.Lock()
	cfg, backends := s.cfg, s.backends
	s.mu.Unlock()
	up := 0
	for _, bc := range cfg.Backends {
		b := backends[bc.Name]
		if b == nil {
			continue
		}
		st := b.cc.GetState().String()
		class := "warn"
		if st == "READY" {
			class = "ok"
			up++
		}
		src := b.sources()
		desc := reflectionOrigin
		if !usesReflection(bc) {
			desc = plural(len(bc.Descriptors.Files), "descriptor set")
		}
		if d := bc.Descriptors.RefreshInterval; d > 0 && usesReflection(bc) {
			desc += ", every " + d.String()
		}
		v.Backends = append(v.Backends, backendView{
			Name: bc.Name, Target: bc.Target, State: st, StateClass: class,
			Required: bc.IsRequired(), LoadBalancing: cmp.Or(bc.LoadBalancing, "pick_first"), Descriptors: desc,
		})
		for _, name := range src.names {
			sv := sourceView{Backend: bc.Name, Source: name, ReadAt: "not yet", Ago: ""}
			if !src.readAt.IsZero() {
				sv.ReadAt = src.readAt.UTC().Format(time.DateTime) + " UTC"
				sv.Ago = ago(now.Sub(src.readAt)) + " ago"
			}
			if src.err != nil {
				sv.Error = src.err.Error()
				sv.TriedAt = ago(now.Sub(src.triedAt)) + " ago"
			}
			v.Sources = append(v.Sources, sv)
		}
	}
	v.BackendsUp = fmt.Sprintf("%d of %d", up, len(v.Backends))
	return v
}

// rate formats n events over d as a rate per second, or "–" when unknown.
func rate(n float64, d time.Duration, known bool) string {
	if !known || d <= 0 {
		return "–"
	}
	r := n / d.Seconds()
	switch {
	case r == 0:
		return "0"
	case r < 10:
		return strconv.FormatFloat(r, 'f', 2, 64)
	case r < 100:
		return strconv.FormatFloat(r, 'f', 1, 64)
	}
	return strconv.FormatFloat(r, 'f', 0, 64)
}

// seconds formats a span of at most a few minutes in seconds, with a
// tenth under ten seconds.
func seconds(d time.Duration) string {
	if d < 10*time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 0, 64) + " s"
}

// ago formats a duration for people, to the second.
func ago(d time.Duration) string {
	d = d.Truncate(time.Second)
	if d < time.Second {
		return "0s"
	}
	return d.String()
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
