// Package grafana_test checks the Grafana dashboard and the Prometheus
// rules beside it against a real sidecar: every metric and every label
// their queries name is in the sidecar's /metrics after traffic, the
// dashboard imports as it is, and the rules file is a Prometheus rules
// file holding the alerts that docs/metrics.md and docs/operations.md show.
package grafana_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"
	"time"

	"connectrpc.com/connect"
	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"

	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/config"
	"github.com/grpcws/grpcws/internal/server"
	"github.com/grpcws/grpcws/internal/testbackend"
	"github.com/grpcws/grpcws/internal/v1test"
)

const (
	dashboardFile = "grpcws-dashboard.json"
	rulesFile     = "grpcws.rules.yml"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// series maps each sample name of a scrape (histograms as their _bucket,
// _sum and _count) to the label names it has.
type series map[string]map[string]bool

// targetLabels are the labels that Prometheus adds to every series it
// scrapes (instance, job), and those that Kubernetes service discovery
// adds with the usual relabelling (pod, namespace): queries may use them
// though /metrics does not have them.
var targetLabels = []string{"instance", "job", "pod", "namespace"}

// scrapeAfterTraffic runs a sidecar in front of a real backend, sends it
// traffic that makes every metric appear (an RPC over WebSocket, a failing
// Connect call, a refused handshake), and returns its /metrics.
func scrapeAfterTraffic(t *testing.T) series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	tb := testbackend.Start(t)
	cfg := config.Default()
	cfg.Listen.Address = "127.0.0.1:0"
	cfg.Admin.Address = "127.0.0.1:0"
	cfg.Backends = []config.Backend{config.NewBackend("echo", tb.Addr)}
	cfg.Routes = []config.Route{{Backend: "echo", Services: []string{"examples.echo.v1.EchoService"}}}
	cfg.Drain.GracePeriod = 0
	cfg.Drain.Timeout = 5 * time.Second
	s, err := server.New(server.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	serving, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(serving) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	front, admin := s.Addr().String(), "http://"+s.AdminAddr().String()
	get := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b bytes.Buffer
		if _, err := b.ReadFrom(res.Body); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, b.String()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("%s: not before the deadline", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("ready", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })

	// Protocol v1: one Echo call, OK.
	c, _, err := websocket.Dial(ctx, "ws://"+front+"/", &websocket.DialOptions{Subprotocols: []string{"examples.echo.v1.EchoService.Echo"}})
	if err != nil {
		t.Fatal(err)
	}
	v1test.Send(t, ctx, c, &echov1.EchoRequest{Message: "hello"})
	if r := v1test.ReadAll(t, ctx, c); r.Code() != 0 || len(r.Binary) != 1 {
		t.Fatalf("Echo over protocol v1: code %d, %d messages; want 0 and 1", r.Code(), len(r.Binary))
	}
	// Connect: one Echo call that fails with NOT_FOUND.
	echo := connect.NewClient[echov1.EchoRequest, echov1.EchoResponse](http.DefaultClient, "http://"+front+"/examples.echo.v1.EchoService/Echo")
	if _, err := echo.CallUnary(ctx, connect.NewRequest(&echov1.EchoRequest{Fail: &echov1.Failure{Code: 5}})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("failing Echo over Connect: %v; want NotFound", err)
	}
	// A handshake refused for an unknown route.
	refused, _, err := websocket.Dial(ctx, "ws://"+front+"/", &websocket.DialOptions{Subprotocols: []string{"no.such.Route"}})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := v1test.CloseCode(ctx, refused); code != 4012 {
		t.Fatalf("unknown route: close %d; want 4012", code)
	}

	// The calls' ends reach the metrics just after the clients see them.
	var text string
	waitFor("both calls counted", func() bool {
		_, text = get("/metrics")
		return strings.Contains(text, `grpcws_streams_total{code="OK",protocol="grpcws.v1",route="/examples.echo.v1.EchoService/Echo"} 1`) &&
			strings.Contains(text, `grpcws_streams_total{code="NotFound",protocol="connect",route="/examples.echo.v1.EchoService/Echo"} 1`) &&
			strings.Contains(text, `grpcws_handshakes_total{outcome="unknown_route"} 1`)
	})
	return parseScrape(t, text)
}

// parseScrape reads the text format into the sample names that queries
// can select, with their label names.
func parseScrape(t *testing.T, text string) series {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	out := series{}
	add := func(name string, labels []*dto.LabelPair, extra ...string) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for _, l := range labels {
			out[name][l.GetName()] = true
		}
		for _, l := range extra {
			out[name][l] = true
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m.GetLabel(), "le")
				add(name+"_sum", m.GetLabel())
				add(name+"_count", m.GetLabel())
			case dto.MetricType_SUMMARY:
				add(name, m.GetLabel(), "quantile")
				add(name+"_sum", m.GetLabel())
				add(name+"_count", m.GetLabel())
			default:
				add(name, m.GetLabel())
			}
		}
	}
	return out
}

// PromQL, as far as checking names needs it.
var (
	promString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	promSelector = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promNumber   = regexp.MustCompile(`\b\d[0-9.eE+-]*\b`)
	labelValues  = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
)

// promKeywords are the words of PromQL that are neither metrics nor
// functions.
var promKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"Inf": true, "NaN": true, "inf": true, "nan": true,
}

// problems returns what in the query expr does not match the scrape s:
// metrics that /metrics does not have, label matchers and groupings on
// labels that the metrics do not have. A Grafana label_values(metric,
// label) query counts too.
func problems(expr string, s series) []string {
	var out []string
	if m := labelValues.FindStringSubmatch(strings.TrimSpace(expr)); m != nil {
		expr = m[1] + m[2]
		out = append(out, labelProblems([]string{m[3]}, []string{m[1]}, s, "label_values")...)
	}
	e := promString.ReplaceAllString(expr, `""`)
	e = promRange.ReplaceAllString(e, " ")

	// The selectors and their matchers.
	var names []string
	for _, m := range promSelector.FindAllStringSubmatch(e, -1) {
		var labels []string
		for _, l := range promMatcher.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, l[1])
		}
		if m[1] != "" {
			out = append(out, labelProblems(labels, []string{m[1]}, s, m[1]+"{…}")...)
		}
	}
	e = promSelector.ReplaceAllString(e, " $1 ")

	// The groupings, on the labels of the metrics around them.
	var groupings [][]string
	for _, m := range promGrouping.FindAllStringSubmatch(e, -1) {
		var labels []string
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
		groupings = append(groupings, labels)
	}
	e = promGrouping.ReplaceAllString(e, " ")
	e = promNumber.ReplaceAllString(e, " ")

	// What is left: functions, keywords and metric names.
	for _, m := range promIdent.FindAllStringSubmatch(e, -1) {
		name := m[0]
		if m[1] != "" || promKeywords[name] { // a function call, or a keyword
			continue
		}
		names = append(names, name)
		if s[name] == nil {
			why := "not in /metrics"
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if s[name+suffix] != nil {
					why = "a histogram: select its _bucket, _sum or _count"
				}
			}
			out = append(out, fmt.Sprintf("metric %s: %s", name, why))
		}
	}
	if len(names) == 0 {
		out = append(out, "no metric")
	}
	for _, labels := range groupings {
		out = append(out, labelProblems(labels, names, s, "grouping")...)
	}
	return out
}

// labelProblems reports the labels that none of the metrics has, unless
// none of the metrics is there: that is reported once, as such.
func labelProblems(labels, metrics []string, s series, where string) []string {
	if !slices.ContainsFunc(metrics, func(m string) bool { return s[m] != nil }) {
		return nil
	}
	var out []string
	for _, l := range labels {
		if slices.Contains(targetLabels, l) {
			continue
		}
		found := false
		for _, m := range metrics {
			found = found || s[m][l]
		}
		if !found {
			out = append(out, fmt.Sprintf("%s: label %s is on none of %v", where, l, metrics))
		}
	}
	return out
}

// A query is one PromQL expression of the dashboard or the rules, and
// where it is.
type query struct {
	where, expr string
}

// dashboard is the parts of the dashboard's JSON the test reads.
type dashboard struct {
	Inputs []struct {
		Name, Type, PluginID string
	} `json:"__inputs"`
	Requires []struct {
		Type, ID string
	} `json:"__requires"`
	ID            *int    `json:"id"`
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string
			Type       string
			Datasource *datasource
			Definition string
			Query      struct{ Query string }
		}
	}
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int
	Type       string
	Title      string
	GridPos    struct{ X, Y, W, H int }
	Datasource *datasource
	Targets    []struct {
		RefID      string `json:"refId"`
		Expr       string
		Datasource *datasource
	}
	Panels []panel // of a collapsed row
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	// Every datasource is the one asked for on import, but for Grafana's
	// own, of its built-in annotations.
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	walkDatasources(generic, "", func(path string, ds map[string]any) {
		if ds["uid"] != "${DS_PROMETHEUS}" && ds["uid"] != "-- Grafana --" {
			t.Errorf("%s: datasource %v; want uid ${DS_PROMETHEUS}", path, ds)
		}
	})
	return d
}

func walkDatasources(v any, path string, f func(string, map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, c := range v {
			if ds, ok := c.(map[string]any); ok && k == "datasource" {
				f(path+"."+k, ds)
				continue
			}
			walkDatasources(c, path+"."+k, f)
		}
	case []any:
		for i, c := range v {
			walkDatasources(c, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}

// queries returns the dashboard's PromQL: its panels' targets and its
// variables' queries. It checks, on the way, that each panel queries the
// dashboard's datasource and fits the grid.
func (d dashboard) queries(t *testing.T) []query {
	t.Helper()
	var out []query
	ids := map[int]string{}
	cells := map[[2]int]string{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			name := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if prev, ok := ids[p.ID]; ok || p.ID == 0 {
				t.Errorf("%s: id taken by %s", name, prev)
			}
			ids[p.ID] = name
			g := p.GridPos
			if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v; want it within the 24 columns", name, g)
			}
			for x := g.X; x < g.X+g.W; x++ {
				for y := g.Y; y < g.Y+g.H; y++ {
					if other, ok := cells[[2]int{x, y}]; ok {
						t.Errorf("%s overlaps %s at %d,%d", name, other, x, y)
					}
					cells[[2]int{x, y}] = name
				}
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" {
				t.Errorf("%s: datasource %+v; want prometheus", name, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no queries", name)
			}
			refs := map[string]bool{}
			for _, q := range p.Targets {
				if refs[q.RefID] || q.RefID == "" {
					t.Errorf("%s: refId %q empty or taken", name, q.RefID)
				}
				refs[q.RefID] = true
				out = append(out, query{name + " " + q.RefID, q.Expr})
			}
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		if v.Query.Query != v.Definition {
			t.Errorf("variable %s: query %q, definition %q; want the same", v.Name, v.Query.Query, v.Definition)
		}
		out = append(out, query{"variable " + v.Name, v.Query.Query})
	}
	return out
}

// TestDashboard checks that the dashboard imports as it is, with the
// Prometheus datasource chosen on import, and that every metric and label
// it queries is in a real sidecar's /metrics; and that it shows every
// metric the sidecar exports.
func TestDashboard(t *testing.T) {
	t.Parallel()
	d := loadDashboard(t)
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v; want the one datasource DS_PROMETHEUS, prometheus", d.Inputs)
	}
	if d.ID != nil || d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("id %v, uid %q, title %q, schemaVersion %d; want no id, a uid, a title and a schemaVersion of Grafana 9 or later",
			d.ID, d.UID, d.Title, d.SchemaVersion)
	}
	required := map[string]bool{}
	for _, r := range d.Requires {
		required[r.Type+"/"+r.ID] = true
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
	}
	for _, want := range []string{"route", "protocol"} {
		if !slices.Contains(vars, want) {
			t.Errorf("variables %v; want %s", vars, want)
		}
	}

	queries := d.queries(t)
	if len(queries) < 20 {
		t.Fatalf("%d queries; want the dashboard's, 20 at least", len(queries))
	}
	var types []string
	for _, p := range d.Panels {
		if p.Type != "row" && !slices.Contains(types, p.Type) {
			types = append(types, p.Type)
			if !required["panel/"+p.Type] {
				t.Errorf("panel type %s is not in __requires", p.Type)
			}
		}
	}

	s := scrapeAfterTraffic(t)
	used := map[string]bool{}
	for _, q := range queries {
		for _, p := range problems(q.expr, s) {
			t.Errorf("%s: %s\n\t%s", q.where, p, q.expr)
		}
		for _, m := range promIdent.FindAllString(promString.ReplaceAllString(q.expr, `""`), -1) {
			used[strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")] = true
		}
	}
	// Every metric of the sidecar has a panel.
	for _, name := range slices.Sorted(maps.Keys(s)) {
		family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if strings.HasPrefix(name, "grpcws_") && !used[family] {
			t.Errorf("%s is on no panel", family)
		}
	}
}

// TestProblems checks the checker: a renamed metric, a histogram without
// its suffix, a misspelt label are each found.
func TestProblems(t *testing.T) {
	t.Parallel()
	s := series{
		"grpcws_streams_total":                  {"route": true, "protocol": true, "code": true},
		"grpcws_stream_duration_seconds_bucket": {"route": true, "protocol": true, "le": true},
		"grpcws_stream_duration_seconds_sum":    {"route": true, "protocol": true},
		"grpcws_stream_duration_seconds_count":  {"route": true, "protocol": true},
	}
	for _, tt := range []struct {
		name, expr string
		want       string // in the one problem; "" for none
	}{
		{"good", `sum by (route) (rate(grpcws_streams_total{code!="OK", route=~"$route"}[$__rate_interval])) / sum by (route) (rate(grpcws_streams_total[5m])) > 0.05`, ""},
		{"quantile", `histogram_quantile(0.99, sum by (le, protocol) (rate(grpcws_stream_duration_seconds_bucket{instance=~"$instance"}[5m])))`, ""},
		{"names in strings", `grpcws_streams_total{route="grpcws_nothing", code=~'x|grpcws_y'}`, ""},
		{"variable", `label_values(grpcws_streams_total{instance=~"$instance"}, route)`, ""},
		{"renamed", `sum(rate(grpcws_stream_total[5m]))`, "metric grpcws_stream_total: not in /metrics"},
		{"histogram name", `rate(grpcws_stream_duration_seconds[5m])`, "a histogram"},
		{"wrong suffix", `grpcws_streams_total_count`, "not in /metrics"},
		{"matcher label", `grpcws_streams_total{protocl="grpc"}`, "label protocl"},
		{"grouping label", `sum by (backend) (grpcws_streams_total)`, "label backend"},
		{"variable label", `label_values(grpcws_streams_total, backend)`, "label backend"},
		{"no metric", `vector(1)`, "no metric"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := problems(tt.expr, s)
			switch {
			case tt.want == "" && len(got) != 0:
				t.Errorf("problems(%s) = %q; want none", tt.expr, got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("problems(%s) = %q; want one with %q", tt.expr, got, tt.want)
			}
		})
	}
}

// A rules file, as Prometheus reads it.
type rules struct {
	Groups []ruleGroup `yaml:"groups"`
}

type ruleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []rule `yaml:"rules"`
}

type rule struct {
	Alert         string            `yaml:"alert,omitempty"`
	Record        string            `yaml:"record,omitempty"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for,omitempty"`
	KeepFiringFor string            `yaml:"keep_firing_for,omitempty"`
	Labels        map[string]string `yaml:"labels,omitempty"`
	Annotations   map[string]string `yaml:"annotations,omitempty"`
}

// promDuration is Prometheus's duration: units from years to milliseconds,
// largest first.
var promDuration = regexp.MustCompile(`^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$`)

// decodeStrict decodes YAML into v, refusing fields v does not have.
func decodeStrict(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// TestRules checks the rules file: it is a Prometheus rules file, its
// templates parse, its metrics and labels are in a real sidecar's
// /metrics, and it holds the alerts the docs show, as they show them.
func TestRules(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var f rules
	if err := decodeStrict(b, &f); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no groups", rulesFile)
	}
	alerts := map[string]rule{}
	groups := map[string]bool{}
	var queries []query
	for _, g := range f.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q: empty or taken", g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("group %s: no rules", g.Name)
		}
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("group %s: a rule with alert %q and record %q; want one of the two", g.Name, r.Alert, r.Record)
				continue
			}
			if r.Record != "" {
				queries = append(queries, query{"record " + r.Record, r.Expr})
				continue
			}
			if _, ok := alerts[r.Alert]; ok {
				t.Errorf("alert %s twice", r.Alert)
			}
			alerts[r.Alert] = r
			queries = append(queries, query{"alert " + r.Alert, r.Expr})
			for _, d := range []string{r.For, r.KeepFiringFor} {
				if d != "" && !promDuration.MatchString(d) {
					t.Errorf("alert %s: duration %q", r.Alert, d)
				}
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s: no summary", r.Alert)
			}
			// Prometheus expands annotations as Go templates, with these
			// variables defined.
			for k, v := range r.Annotations {
				const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
				if _, err := template.New(k).Parse(defs + v); err != nil {
					t.Errorf("alert %s: annotation %s: %v", r.Alert, k, err)
				}
			}
		}
	}

	s := scrapeAfterTraffic(t)
	for _, q := range queries {
		for _, p := range problems(q.expr, s) {
			t.Errorf("%s: %s\n\t%s", q.where, p, q.expr)
		}
	}

	// The docs' alerts, and no others, as the docs write them.
	documented := docAlerts(t, "../../docs/metrics.md", "../../docs/operations.md")
	if len(documented) < 2 {
		t.Fatalf("%d alerts in the docs; want those of metrics.md and operations.md", len(documented))
	}
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for name, doc := range documented {
		r, ok := alerts[name]
		if !ok {
			t.Errorf("alert %s of %s is not in %s", name, doc.where, rulesFile)
			continue
		}
		if norm(r.Expr) != norm(doc.Expr) || r.For != doc.For || !maps.Equal(r.Annotations, doc.Annotations) || !maps.Equal(r.Labels, doc.Labels) {
			t.Errorf("alert %s differs from %s:\n%s: %+v\n%s: %+v", name, doc.where, rulesFile, r, doc.where, doc.rule)
		}
	}
	for name := range alerts {
		if _, ok := documented[name]; !ok {
			t.Errorf("alert %s of %s is in no doc", name, rulesFile)
		}
	}
}

type docAlert struct {
	rule
	where string
}

var yamlBlock = regexp.MustCompile("(?s)```yaml\n(.*?)```")

// docAlerts returns the alerts of the YAML blocks of the docs: a rules
// file, or a list of rules.
func docAlerts(t *testing.T, docs ...string) map[string]docAlert {
	t.Helper()
	out := map[string]docAlert{}
	for _, doc := range docs {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range yamlBlock.FindAllSubmatch(b, -1) {
			var list []rule
			var f rules
			if err := decodeStrict(m[1], &f); err == nil {
				for _, g := range f.Groups {
					list = append(list, g.Rules...)
				}
			} else if err := decodeStrict(m[1], &list); err != nil {
				continue // not rules
			}
			for _, r := range list {
				if r.Alert == "" {
					continue
				}
				if prev, ok := out[r.Alert]; ok {
					t.Errorf("alert %s in %s and %s", r.Alert, prev.where, doc)
				}
				out[r.Alert] = docAlert{r, doc}
			}
		}
	}
	return out
}
