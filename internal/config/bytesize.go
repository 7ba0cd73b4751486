package config

import (
	"errors"
	"math"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes. In YAML and on the command line it is an
// integer (bytes) or an integer with a unit: B; KB, MB, GB, TB (powers of
// 1000); KiB, MiB, GiB, TiB (powers of 1024). Units are case-sensitive and
// may follow a space: "512KiB", "4 MiB", "100KB", "4194304".
type ByteSize int64

// Units of ByteSize.
const (
	KB ByteSize = 1000
	MB          = 1000 * KB
	GB          = 1000 * MB
	TB          = 1000 * GB

	KiB ByteSize = 1 << 10
	MiB          = 1 << 20
	GiB          = 1 << 30
	TiB          = 1 << 40
)

// units, largest first within each family, as String tries them.
var units = []struct {
	name string
	size ByteSize
}{
	{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", TB}, {"GB", GB}, {"MB", MB}, {"KB", KB},
	{"B", 1},
}

var errByteSize = errors.New(`must be a size: bytes, or a whole number with a unit such as "512KiB", "4MiB" or "100KB"`)

// ParseByteSize parses a size as described on ByteSize. Negative sizes are
// an error.
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	digits := strings.TrimRight(s, "ABGKMTi ")
	unit := strings.TrimSpace(s[len(digits):])
	if strings.HasPrefix(digits, "-") {
		return 0, errors.New("must not be negative")
	}
	if digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, errByteSize
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil {
		return 0, errors.New("is too large")
	}
	mult := ByteSize(1)
	if unit != "" {
		found := false
		for _, u := range units {
			if u.name == unit {
				mult, found = u.size, true
				break
			}
		}
		if !found {
			return 0, errByteSize
		}
	}
	if n > int64(math.MaxInt64/mult) {
		return 0, errors.New("is too large")
	}
	return ByteSize(n) * mult, nil
}

// String formats b with the largest unit that divides it, binary units
// first ("4MiB", "100KB"), or as a number of bytes ("1023").
func (b ByteSize) String() string {
	if b != 0 {
		for _, u := range units[:len(units)-1] {
			if b%u.size == 0 {
				return strconv.FormatInt(int64(b/u.size), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Set parses s into b, for flag.Value.
func (b *ByteSize) Set(s string) error {
	n, err := ParseByteSize(s)
	if err != nil {
		return err
	}
	*b = n
	return nil
}

// UnmarshalYAML decodes a YAML integer or string, for yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errByteSize
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML encodes b as String does, for yaml.Marshaler.
func (b ByteSize) MarshalYAML() (any, error) {
	return b.String(), nil
}
