package bridge

import (
	"net/http/httptest"
	"testing"
)

func TestIsCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		url    string
		header map[string]string
		want   bool
	}{
		{"grpc-web", "POST", "/a.B/C", map[string]string{"Content-Type": "application/grpc-web+proto"}, true},
		{"grpc-web-text", "POST", "/a.B/C", map[string]string{"Content-Type": "application/grpc-web-text"}, true},
		{"grpc", "POST", "/a.B/C", map[string]string{"Content-Type": "application/grpc"}, true},
		{"connect streaming", "POST", "/a.B/C", map[string]string{"Content-Type": "application/connect+proto"}, true},
		{"connect unary", "POST", "/a.B/C", map[string]string{"Content-Type": "application/json", "Connect-Protocol-Version": "1"}, true},
		{"connect get", "GET", "/a.B/C?connect=v1&encoding=proto&message=", nil, true},
		{"preflight", "OPTIONS", "/a.B/C", map[string]string{"Access-Control-Request-Method": "POST"}, true},
		{"json without connect", "POST", "/api/form", map[string]string{"Content-Type": "application/json"}, false},
		{"page", "GET", "/", nil, false},
		{"websocket", "GET", "/a.B/C", map[string]string{"Upgrade": "websocket", "Content-Type": "application/grpc"}, false},
	} {
		r := httptest.NewRequest(tc.method, tc.url, nil)
		for k, v := range tc.header {
			r.Header.Set(k, v)
		}
		if got := isCall(r); got != tc.want {
			t.Errorf("%s: isCall = %v; want %v", tc.name, got, tc.want)
		}
	}
}
