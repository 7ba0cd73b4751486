package bridge

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/grpcheader"
	"github.com/grpcws/grpcws/internal/peer"
)

const (
	bearerPrefix         = "base64url.bearer."
	metadataHeaderPrefix = "grpc-metadata-"
)

// offer is what the client offered in Sec-WebSocket-Protocol, less tokens.
type offer struct {
	names []string // in order, bearer tokens removed
	token string   // decoded bearer token, "" if none
}

// parseOffer splits the Sec-WebSocket-Protocol headers of r. On a bad
// token it still returns the names, so the refusal can echo one.
func parseOffer(r *http.Request) (offer, error) {
	var o offer
	var tokenErr error
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			p = strings.TrimSpace(p)
			if p == "" {
				continue
			}
			enc, ok := strings.CutPrefix(p, tokenPrefix)
			if !ok {
				// Tokens of other schemes (base64url.bearer.authorization.k8s.io.…)
				// are never route names: never echo or log them.
				if !strings.HasPrefix(p, bearerPrefix) {
					o.names = append(o.names, p)
				}
				continue
			}
			tok, err := decodeToken(enc)
			if err != nil {
				tokenErr = err
				continue
			}
			o.token = tok
		}
	}
	if tokenErr != nil {
		o.token = ""
	}
	return o, tokenErr
}

// decodeToken decodes a base64url bearer token from the subprotocol list.
// The error never holds the token.
func decodeToken(enc string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return "", fmt.Errorf("grpcws: bearer token in the subprotocol list is not base64url")
	}
	if len(b) == 0 || !grpcheader.Printable(string(b)) {
		return "", fmt.Errorf("grpcws: bearer token in the subprotocol list is empty or not printable ASCII")
	}
	return string(b), nil
}

// requestMetadata collects the request metadata and the timeout (zero for
// none) of an upgrade request. forwardedFor is the x-forwarded-for value, ""
// for none. See docs/protocol.md, section 2.
func requestMetadata(r *http.Request, cfg *config, token, forwardedFor string) (metadata.MD, time.Duration, error) {
	md := metadata.MD{}
	var timeout string
	for name, values := range r.Header {
		name = lower(name)
		var key string
		switch {
		case name == grpcheader.TimeoutKey:
			timeout = values[0]
			continue
		case strings.HasPrefix(name, metadataHeaderPrefix):
			key = name[len(metadataHeaderPrefix):]
			if err := checkAllowed(cfg.metadataAllow, key); err != nil {
				return nil, 0, err
			}
		case cfg.metadataHeaders[name], name == "traceparent", name == "tracestate":
			key = name
		default:
			continue
		}
		for _, v := range values {
			if err := grpcheader.Append(md, key, v); err != nil {
				return nil, 0, err
			}
		}
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, 0, fmt.Errorf("grpcws: malformed query: %w", err)
	}
	for name, values := range query {
		key := lower(name)
		if key == grpcheader.TimeoutKey {
			timeout = values[0]
			continue
		}
		if err := checkAllowed(cfg.metadataAllow, key); err != nil {
			return nil, 0, err
		}
		for _, v := range values {
			if err := grpcheader.Append(md, key, v); err != nil {
				return nil, 0, err
			}
		}
	}
	if len(cfg.metadataCookies) > 0 {
		var kept []string
		for _, c := range r.Cookies() {
			if slices.Contains(cfg.metadataCookies, c.Name) {
				kept = append(kept, c.Name+"="+c.Value)
			}
		}
		if len(kept) > 0 {
			md.Set("cookie", strings.Join(kept, "; "))
		}
	}
	if token != "" {
		md.Set("authorization", "Bearer "+token)
	}
	if cfg.forwardFor && forwardedFor != "" {
		md.Set("x-forwarded-for", forwardedFor)
	}
	var d time.Duration
	if timeout != "" {
		if d, err = grpcheader.ParseTimeout(timeout); err != nil {
			return nil, 0, err
		}
	}
	return md, d, nil
}

// checkAllowed refuses a key the client set that is not in allow, unless
// allow is nil.
func checkAllowed(allow map[string]bool, key string) error {
	if allow == nil || allow[key] {
		return nil
	}
	return fmt.Errorf("grpcws: metadata key %q is not allowed", key)
}

// toMetadata converts gRPC metadata to its control-frame form.
func toMetadata(md metadata.MD) *grpcwsv1.Metadata {
	m := &grpcwsv1.Metadata{Entries: make(map[string]*grpcwsv1.MetadataValues, len(md))}
	for k, vs := range md {
		out := make([]string, len(vs))
		for i, v := range vs {
			if strings.HasSuffix(k, "-bin") {
				v = base64.StdEncoding.EncodeToString([]byte(v))
			}
			out[i] = v
		}
		m.Entries[k] = &grpcwsv1.MetadataValues{Values: out}
	}
	return m
}

// originAllowed reports whether r may upgrade, and its Origin. See
// WithOriginPatterns.
func originAllowed(r *http.Request, patterns []string) (bool, string) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true, ""
	}
	return peer.OriginAllowed(origin, r.Host, patterns), origin
}

func lower(s string) string { return strings.ToLower(s) }
