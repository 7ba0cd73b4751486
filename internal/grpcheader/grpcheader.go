// Package grpcheader holds gRPC's rules for a call's metadata, deadline and
// status in HTTP header fields (gRPC over HTTP/2, gRPC-Web's header blocks,
// and protocol v1's upgrade request): which keys a client may set, how
// binary values and status messages are encoded, and the grpc-timeout
// format. The bridge, the HTTP gateway and the Go client use it, so that
// each rule is written once.
package grpcheader

import (
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// TimeoutKey is the header, and the query parameter of protocol v1, that
// carries a call's deadline.
const TimeoutKey = "grpc-timeout"

// ParseTimeout parses a grpc-timeout value: 1 to 8 digits and a unit (H M
// S m u n). A value longer than a time.Duration holds is its maximum.
func ParseTimeout(s string) (time.Duration, error) {
	bad := fmt.Errorf("grpcws: grpc-timeout %q is not 1 to 8 digits and a unit (H M S m u n)", s)
	if len(s) < 2 || len(s) > 9 {
		return 0, bad
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 64)
	if err != nil || n == 0 {
		return 0, bad
	}
	var unit time.Duration
	for _, u := range timeoutUnits {
		if u.name == s[len(s)-1] {
			unit = u.unit
		}
	}
	if unit == 0 {
		return 0, bad
	}
	if n > uint64(math.MaxInt64/unit) {
		return math.MaxInt64, nil // 99999999H is longer than a Duration holds
	}
	return time.Duration(n) * unit, nil
}

// EncodeTimeout writes d in the grpc-timeout format: at most 8 digits and
// the finest unit that fits, rounded up; at least 1n.
func EncodeTimeout(d time.Duration) string {
	const maxValue = 99999999
	for _, u := range timeoutUnits {
		v := d / u.unit // rounded up below, without the overflow of d+unit-1
		if d%u.unit != 0 {
			v++
		}
		if v <= maxValue {
			return strconv.FormatInt(int64(max(v, 1)), 10) + string(u.name)
		}
	}
	return strconv.Itoa(maxValue) + "H"
}

// timeoutUnits are grpc-timeout's units, finest first.
var timeoutUnits = []struct {
	unit time.Duration
	name byte
}{
	{time.Nanosecond, 'n'}, {time.Microsecond, 'u'}, {time.Millisecond, 'm'},
	{time.Second, 'S'}, {time.Minute, 'M'}, {time.Hour, 'H'},
}

// reservedKeys are metadata keys that gRPC or HTTP keep for themselves,
// besides every key that starts with "grpc-".
var reservedKeys = map[string]bool{
	"content-type": true, "te": true, "connection": true, "host": true,
	"keep-alive": true, "proxy-connection": true, "transfer-encoding": true, "upgrade": true,
}

// CheckKey refuses a metadata key that a client may not set: empty, with
// characters other than 0-9 a-z _ . -, or reserved.
func CheckKey(key string) error {
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

// Append checks a key and a value from the client and appends them to md.
// Values of -bin keys arrive in base64 and are stored decoded, as
// metadata.MD holds them; other values must be printable ASCII. The error
// names the key, never the value.
func Append(md metadata.MD, key, value string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if strings.HasSuffix(key, "-bin") {
		b, err := DecodeBinary(value)
		if err != nil {
			return fmt.Errorf("grpcws: metadata %q: value is not base64", key)
		}
		md.Append(key, string(b))
		return nil
	}
	if !Printable(value) {
		return fmt.Errorf("grpcws: metadata %q: value is not printable ASCII", key)
	}
	md.Append(key, value)
	return nil
}

// DecodeBinary decodes the value of a -bin key: base64 in the standard or
// the URL alphabet, padded or not.
func DecodeBinary(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// EncodeBinary encodes the value of a -bin key, unpadded, as gRPC emits it.
func EncodeBinary(v string) string {
	return base64.RawStdEncoding.EncodeToString([]byte(v))
}

// Printable reports whether s is printable ASCII, as the values of other
// keys must be.
func Printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// EncodeMessage percent-encodes a status message for grpc-message: bytes
// outside printable ASCII, and '%', become %XX.
func EncodeMessage(msg string) string {
	i := 0
	for i < len(msg) && msg[i] >= ' ' && msg[i] <= '~' && msg[i] != '%' {
		i++
	}
	if i == len(msg) {
		return msg
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, i, len(msg)+8)
	copy(b, msg)
	for ; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// Status returns the header fields of a final status, in order:
// grpc-status, grpc-message when there is one, and
// grpc-status-details-bin when the status has details.
func Status(st *status.Status) [][2]string {
	out := [][2]string{{"grpc-status", strconv.Itoa(int(st.Code()))}}
	if m := st.Message(); m != "" {
		out = append(out, [2]string{"grpc-message", EncodeMessage(m)})
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			out = append(out, [2]string{"grpc-status-details-bin", base64.RawStdEncoding.EncodeToString(b)})
		}
	}
	return out
}

// Reserved reports whether a key of the backend's headers or trailers is
// gRPC's own (grpc-status, grpc-message, …) or HTTP/2's (":status"), and so
// not metadata to pass on to a client.
func Reserved(key string) bool {
	return key == "" || strings.HasPrefix(key, "grpc-") || strings.HasPrefix(key, ":")
}
