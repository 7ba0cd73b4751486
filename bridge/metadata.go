package bridge

import (
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/peer"
)

const (
	bearerPrefix         = "base64url.bearer."
	metadataHeaderPrefix = "grpc-metadata-"
	timeoutKey           = "grpc-timeout"
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
	if len(b) == 0 || !printable(string(b)) {
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
		case name == timeoutKey:
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
			if err := addMetadata(md, key, v); err != nil {
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
		if key == timeoutKey {
			timeout = values[0]
			continue
		}
		if err := checkAllowed(cfg.metadataAllow, key); err != nil {
			return nil, 0, err
		}
		for _, v := range values {
			if err := addMetadata(md, key, v); err != nil {
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
		if d, err = parseTimeout(timeout); err != nil {
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

// addMetadata validates one key and value and appends it to md. Values of
// -bin keys arrive in base64 and are stored decoded, as metadata.MD holds
// them.
func addMetadata(md metadata.MD, key, value string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if strings.HasSuffix(key, "-bin") {
		b, err := decodeBase64(value)
		if err != nil {
			return fmt.Errorf("grpcws: metadata %q: value is not base64", key)
		}
		md.Append(key, string(b))
		return nil
	}
	if !printable(value) {
		return fmt.Errorf("grpcws: metadata %q: value is not printable ASCII", key)
	}
	md.Append(key, value)
	return nil
}

// reservedKeys are metadata keys gRPC or HTTP/2 keeps for themselves.
var reservedKeys = map[string]bool{
	"content-type": true, "te": true, "connection": true, "host": true,
	"keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("grpcws: empty metadata key")
	}
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("grpcws: metadata key %q has characters other than 0-9 a-z _ . -", key)
		}
	}
	if reservedKeys[key] || strings.HasPrefix(key, "grpc-") {
		return fmt.Errorf("grpcws: metadata key %q is reserved", key)
	}
	return nil
}

// decodeBase64 accepts the standard and URL alphabets, padded or not.
func decodeBase64(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// parseTimeout parses a grpc-timeout value: 1 to 8 digits and a unit.
func parseTimeout(s string) (time.Duration, error) {
	bad := fmt.Errorf("grpcws: grpc-timeout %q is not 1 to 8 digits and a unit (H M S m u n)", s)
	if len(s) < 2 || len(s) > 9 {
		return 0, bad
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil {
		return 0, bad
	}
	var unit time.Duration
	switch s[len(s)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, bad
	}
	if n == 0 {
		return 0, bad
	}
	if n > uint64(math.MaxInt64/unit) {
		return math.MaxInt64, nil // 99999999H is longer than a Duration holds
	}
	return time.Duration(n) * unit, nil
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

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

func lower(s string) string { return strings.ToLower(s) }
