package bridge

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/peer"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// The policy every front door applies before an RPC starts, whatever its
// protocol: who the client is, whether its origin may call, whether the
// limits admit it, and what of its request reaches the backend as
// metadata. It is the Handler's config, built once from the options; the
// protocols differ only in where they find these things in a request.

// origin reports whether r may call, and its Origin: requests without one
// (not browsers), same-origin requests, and the allowed patterns.
func (c *config) origin(r *http.Request) (ok bool, origin string) {
	origin = r.Header.Get("Origin")
	if origin == "" {
		return true, ""
	}
	return peer.OriginAllowed(origin, r.Host, c.originPatterns), origin
}

func errOrigin(origin string) *failure {
	return &failure{status: status.Newf(codes.PermissionDenied, "grpcws: origin %q not allowed", origin)}
}

// clientAddr returns the client's address and the x-forwarded-for value,
// behind the trusted proxies.
func (c *config) clientAddr(r *http.Request) (netip.Addr, string) {
	return peer.ClientAddr(r, c.trustedProxies)
}

// acquire takes a place in the limits for addr. The refusal's status holds
// the limiter's text; on a WebSocket it closes with 1013.
func (c *config) acquire(addr netip.Addr) (release func(), f *failure) {
	if c.limiter == nil {
		return func() {}, nil
	}
	release, err := c.limiter.Acquire(addr)
	if err != nil {
		return nil, &failure{status: status.New(codes.ResourceExhausted, err.Error()), code: v1wire.CloseTryAgainLater}
	}
	return release, nil
}

// metadataRules say what of a request becomes request metadata, on every
// protocol: keys the client sets itself, within the allowlist; headers the
// operator names; cookies; the bearer token; the client's address.
type metadataRules struct {
	headers    map[string]bool // header names forwarded as they are, lower-case
	cookies    []string        // cookie names forwarded in one "cookie" entry
	allow      map[string]bool // keys a client may set; nil: any
	forwardFor bool            // send x-forwarded-for
}

// A requestMD collects the metadata of one request under the rules.
type requestMD struct {
	rules   *metadataRules
	md      metadata.MD
	dropped []string // client keys outside the allowlist, for the log
}

func (m *metadataRules) start() *requestMD {
	return &requestMD{rules: m, md: metadata.MD{}}
}

// client adds a key and value the client set itself: checked, and dropped
// when the allowlist does not hold the key.
func (r *requestMD) client(key, value string) error {
	if err := grpcheader.CheckKey(key); err != nil {
		return err
	}
	if r.rules.allow != nil && !r.rules.allow[key] {
		if !slices.Contains(r.dropped, key) {
			r.dropped = append(r.dropped, key)
		}
		return nil
	}
	return grpcheader.Append(r.md, key, value)
}

// chosen adds a key the operator chose, or trace context: not limited by
// the allowlist.
func (r *requestMD) chosen(key, value string) error {
	return grpcheader.Append(r.md, key, value)
}

// isChosen reports whether a header, lower-case, is forwarded whatever the
// allowlist: one the operator named, or trace context. Cookie is the
// operator's to forward whole, in finish.
func (m *metadataRules) isChosen(name string) bool {
	return name != "cookie" && (m.headers[name] || name == "traceparent" || name == "tracestate")
}

// finish adds what the operator forwards from every request: the cookies,
// the bearer token as authorization (in place of any other), and the
// client's address.
func (r *requestMD) finish(req *http.Request, token, forwardedFor string) metadata.MD {
	switch {
	case r.rules.headers["cookie"]:
		if c := strings.Join(req.Header.Values("Cookie"), "; "); c != "" {
			r.md.Set("cookie", c)
		}
	case len(r.rules.cookies) > 0:
		var kept []string
		for _, c := range req.Cookies() {
			if slices.Contains(r.rules.cookies, c.Name) {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
		if len(kept) > 0 {
			r.md.Set("cookie", strings.Join(kept, "; "))
		}
	}
	if token != "" {
		r.md.Set("authorization", "Bearer "+token)
	}
	if r.rules.forwardFor && forwardedFor != "" {
		r.md.Set("x-forwarded-for", forwardedFor)
	}
	return r.md
}
