package grpcheader

import (
	"strconv"
	"testing"
	"time"
)

func FuzzParseTimeout(f *testing.F) {
	for _, s := range []string{"1S", "99999999H", "0m", "100000000S", "5", "-1S", "1x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseTimeout(s)
		if err == nil && d <= 0 {
			t.Fatalf("ParseTimeout(%q) = %v; want a positive duration", s, d)
		}
	})
}

func TestParseTimeout(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"1S", "1s", true}, {"500m", "500ms", true}, {"3M", "3m0s", true}, {"2H", "2h0m0s", true},
		{"7u", "7µs", true}, {"9n", "9ns", true}, {"12345678m", "3h25m45.678s", true},
		{"123456789m", "", false}, {"0S", "", false}, {"S", "", false}, {"1s", "", false}, {"+1S", "", false},
	}
	for _, tt := range tests {
		d, err := ParseTimeout(tt.in)
		if (err == nil) != tt.ok || (tt.ok && d.String() != tt.want) {
			t.Errorf("ParseTimeout(%q) = %v, %v; want %s, ok %v", tt.in, d, err, tt.want, tt.ok)
		}
	}
}

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
			if got := EncodeTimeout(tt.d); got != tt.want {
				t.Errorf("EncodeTimeout(%v) = %q; want %q", tt.d, got, tt.want)
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
		s := EncodeTimeout(d)
		unit, ok := units[s[len(s)-1]]
		v, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
		if !ok || err != nil || len(s)-1 > 8 {
			t.Fatalf("EncodeTimeout(%v) = %q: not gRPC's format", d, s)
		}
		if got := time.Duration(v) * unit; got < d || got-d >= unit {
			t.Fatalf("EncodeTimeout(%v) = %q = %v; want at least %v and less than one %v more", d, s, got, d, unit)
		}
	}
}

func TestEncodeMessage(t *testing.T) {
	for in, want := range map[string]string{
		"":             "",
		"plain text":   "plain text",
		"100%":         "100%25",
		"grüß\n":       "gr%C3%BC%C3%9F%0A",
		"tab\tand\x7f": "tab%09and%7F",
	} {
		if got := EncodeMessage(in); got != want {
			t.Errorf("EncodeMessage(%q) = %q; want %q", in, got, want)
		}
	}
}
