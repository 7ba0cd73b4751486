package client

import (
	"strconv"
	"testing"
	"time"
)

func TestEncodeTimeout(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		d    time.Duration
		want string
	}{
		{"one nanosecond", time.Nanosecond, "1n"},
		{"below a nanosecond rounds to one", 0, "1n"},
		{"eight digits of nanoseconds", 99999999 * time.Nanosecond, "99999999n"},
		{"nine digits move to microseconds, rounded up", 100000001 * time.Nanosecond, "100001u"},
		{"1.5 s fits in microseconds", 1500 * time.Millisecond, "1500000u"},
		{"two minutes", 2 * time.Minute, "120000m"},
		{"a day", 24 * time.Hour, "86400000m"},
		{"ten years", 10 * 365 * 24 * time.Hour, "5256000M"},
		{"the largest duration", time.Duration(1<<63 - 1), "2562048H"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := encodeTimeout(tt.d); got != tt.want {
				t.Errorf("encodeTimeout(%v) = %q; want %q", tt.d, got, tt.want)
			}
		})
	}
}

// TestEncodeTimeoutNeverShort checks that the encoded timeout is never
// shorter than the duration, and never more than one unit longer.
func TestEncodeTimeoutNeverShort(t *testing.T) {
	t.Parallel()
	units := map[byte]time.Duration{'n': time.Nanosecond, 'u': time.Microsecond, 'm': time.Millisecond, 'S': time.Second, 'M': time.Minute, 'H': time.Hour}
	for d := time.Duration(1); d > 0 && d < 1<<62; d = d*3 + 7 {
		s := encodeTimeout(d)
		unit, ok := units[s[len(s)-1]]
		v, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
		if !ok || err != nil || len(s)-1 > 8 {
			t.Fatalf("encodeTimeout(%v) = %q: not gRPC's format", d, s)
		}
		if got := time.Duration(v) * unit; got < d || got-d >= unit {
			t.Fatalf("encodeTimeout(%v) = %q = %v; want at least %v and less than one %v more", d, s, got, d, unit)
		}
	}
}

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
