package client

import (
	"testing"
)

func TestRouteName(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, method, want string
	}{
		{"method", "/examples.echo.v1.EchoService/Echo", "examples.echo.v1.EchoService.Echo"},
		{"no package", "/Svc/M", "Svc.M"},
		{"no leading slash", "examples.echo.v1.EchoService/Echo", ""},
		{"no method", "/examples.echo.v1.EchoService/", ""},
		{"no service", "//Echo", ""},
		{"three parts", "/a/b/c", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := routeName(tt.method)
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Errorf("routeName(%q) = %q, %v; want %q", tt.method, got, err, tt.want)
			}
		})
	}
}
