// Package peer tells who a request comes from: the client's address behind
// trusted proxies, and whether its Origin may use the bridge.
package peer

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
)

// ClientAddr returns the address of the client of r, and the value for
// x-forwarded-for metadata: the X-Forwarded-For of trusted proxies, if any,
// and the peer's address. The client is the peer, unless the peer is a
// trusted proxy: then it is the last address in X-Forwarded-For that is not.
func ClientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, string) {
	peer := Addr(r.RemoteAddr)
	if !Trusted(peer, trusted) {
		return peer, peer.String()
	}
	// The peer is a trusted proxy: walk X-Forwarded-For from the right,
	// past every trusted proxy, to the first address it did not add.
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		for h := range strings.SplitSeq(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			break // garbage: believe nothing further left
		}
		client = a.Unmap()
		if !Trusted(client, trusted) {
			break
		}
	}
	return client, strings.Join(append(hops, peer.String()), ", ")
}

// Addr returns the address of a peer from its "host:port", or the zero
// Addr when it does not parse.
func Addr(remote string) netip.Addr {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// Trusted reports whether a is in one of the trusted prefixes.
func Trusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// OriginAllowed reports whether a browser page from origin may call a
// server reached as host: the same host, or a pattern matched
// case-insensitively with path.Match against the origin's host
// ("*.example.com", "localhost:*"), or against "scheme://host" when the
// pattern holds "://". The pattern "*" allows every origin.
func OriginAllowed(origin, host string, patterns []string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, host) {
		return true
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return true
		}
	}
	return false
}
