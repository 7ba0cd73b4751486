package peer

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.5/32")}
	for _, tt := range []struct {
		name, remote, xff string
		client, forwarded string
	}{
		{"no proxy", "203.0.113.9:4000", "", "203.0.113.9", "203.0.113.9"},
		{"untrusted peer's header is ignored", "203.0.113.9:4000", "198.51.100.1", "203.0.113.9", "203.0.113.9"},
		{"trusted proxy", "127.0.0.5:4000", "198.51.100.1", "198.51.100.1", "198.51.100.1, 127.0.0.5"},
		{"two trusted hops", "10.1.1.1:4000", "198.51.100.1, 10.2.2.2", "198.51.100.1", "198.51.100.1, 10.2.2.2, 10.1.1.1"},
		{"spoofed left part", "10.1.1.1:4000", "1.2.3.4, 198.51.100.1", "198.51.100.1", "1.2.3.4, 198.51.100.1, 10.1.1.1"},
		{"garbage stops the walk", "10.1.1.1:4000", "198.51.100.1, junk", "10.1.1.1", "198.51.100.1, junk, 10.1.1.1"},
		{"IPv4 in IPv6", "[::ffff:203.0.113.9]:4000", "", "203.0.113.9", "203.0.113.9"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			client, forwarded := ClientAddr(r, trusted)
			if client.String() != tt.client || forwarded != tt.forwarded {
				t.Errorf("ClientAddr = %s, %q; want %s, %q", client, forwarded, tt.client, tt.forwarded)
			}
		})
	}
}

func TestOriginAllowed(t *testing.T) {
	for _, tt := range []struct {
		origin, host string
		patterns     []string
		want         bool
	}{
		{"https://app.example.com", "app.example.com", nil, true},
		{"https://evil.example", "app.example.com", nil, false},
		{"https://a.example.com", "api.example.com", []string{"*.example.com"}, true},
		{"https://example.com.evil", "api.example.com", []string{"*.example.com"}, false},
		{"http://localhost:3000", "api", []string{"localhost:*"}, true},
		{"http://app.example.com", "api", []string{"https://app.example.com"}, false},
		{"https://APP.example.com", "api", []string{"https://app.example.com"}, true},
		{"null", "api", []string{"*"}, false},
		{"https://x.test", "api", []string{"*"}, true},
	} {
		if got := OriginAllowed(tt.origin, tt.host, tt.patterns); got != tt.want {
			t.Errorf("OriginAllowed(%q, %q, %q) = %v; want %v", tt.origin, tt.host, tt.patterns, got, tt.want)
		}
	}
}
