package config

import (
	"flag"
	"io"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want ByteSize
		err  string
	}{
		{in: "0", want: 0},
		{in: "4194304", want: 4 * MiB},
		{in: "512KiB", want: 512 * 1024},
		{in: "4MiB", want: 4 << 20},
		{in: "4 MiB", want: 4 << 20},
		{in: " 1GiB ", want: 1 << 30},
		{in: "2TiB", want: 2 << 40},
		{in: "100KB", want: 100_000},
		{in: "1MB", want: 1_000_000},
		{in: "3GB", want: 3_000_000_000},
		{in: "1TB", want: 1_000_000_000_000},
		{in: "10B", want: 10},
		{in: "8388607TiB", want: 8388607 << 40},
		{in: "8388608TiB", err: "is too large"},
		{in: "9223372036854775807", want: 1<<63 - 1},
		{in: "9223372036854775808", err: "is too large"},
		{in: "-1", err: "must not be negative"},
		{in: "-4MiB", err: "must not be negative"},
		{in: "", err: errByteSize.Error()},
		{in: "MiB", err: errByteSize.Error()},
		{in: "4mib", err: errByteSize.Error()},
		{in: "4M", err: errByteSize.Error()},
		{in: "4 4MiB", err: errByteSize.Error()},
		{in: "1.5MiB", err: errByteSize.Error()},
		{in: "0x10", err: errByteSize.Error()},
		{in: "4iB", err: errByteSize.Error()},
	} {
		got, err := ParseByteSize(tt.in)
		switch {
		case tt.err != "":
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseByteSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.err)
			}
		case err != nil || got != tt.want:
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   ByteSize
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1KiB"},
		{4 * MiB, "4MiB"},
		{3 * GiB, "3GiB"},
		{2 * TiB, "2TiB"},
		{1536 * KiB, "1536KiB"},
		{100 * KB, "100KB"},
		{1000, "1KB"},
		{1001, "1001"},
		{-4 * MiB, "-4MiB"},
	} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q; want %q", int64(tt.in), got, tt.want)
		}
		if tt.in >= 0 {
			if back, err := ParseByteSize(tt.in.String()); err != nil || back != tt.in {
				t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in.String(), back, err, tt.in)
			}
		}
	}
}

func TestByteSizeFlag(t *testing.T) {
	t.Parallel()
	var b ByteSize
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Var(&b, "size", "")
	if err := fs.Parse([]string{"--size", "8MiB"}); err != nil || b != 8*MiB {
		t.Errorf("--size 8MiB: %d, %v; want %d", b, err, 8*MiB)
	}
	err := fs.Parse([]string{"--size", "8 megs"})
	want := `invalid value "8 megs" for flag -size: ` + errByteSize.Error()
	if err == nil || err.Error() != want {
		t.Errorf("--size 8 megs: %v; want %s", err, want)
	}
}

func TestByteSizeYAML(t *testing.T) {
	t.Parallel()
	var v struct {
		A, B ByteSize
	}
	if err := yaml.Unmarshal([]byte("a: 4MiB\nb: 1024\n"), &v); err != nil || v.A != 4*MiB || v.B != KiB {
		t.Errorf("yaml.Unmarshal = %+v, %v; want 4MiB, 1KiB", v, err)
	}
	if err := yaml.Unmarshal([]byte("a: [1]\n"), &v); err == nil {
		t.Errorf("yaml.Unmarshal(a list) = nil error")
	}
	if err := yaml.Unmarshal([]byte("a: 4 megs\n"), &v); err == nil {
		t.Errorf("yaml.Unmarshal(4 megs) = nil error")
	}
	out, err := yaml.Marshal(v)
	if err != nil || string(out) != "a: 4MiB\nb: 1KiB\n" {
		t.Errorf("yaml.Marshal = %q, %v; want %q", out, err, "a: 4MiB\nb: 1KiB\n")
	}
}

func TestDurations(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want string // Duration.String, or the error's problem
	}{
		{"30s", "30s"},
		{"5m", "5m0s"},
		{"1h30m", "1h30m0s"},
		{"1.5s", "1.5s"},
		{"250ms", "250ms"},
		{"0", "0s"},
		{"0s", "0s"},
		{`"45s"`, "45s"},
		{"30", `must be a duration with a unit, such as "30s", "5m" or "1h30m"`},
		{"1d", `must be a duration with a unit, such as "30s", "5m" or "1h30m"`},
		{"thirty seconds", `must be a duration with a unit, such as "30s", "5m" or "1h30m"`},
		{"-1s", "must not be negative"},
	} {
		cfg, err := parse([]byte("limits:\n  idle_timeout: "+tt.in+"\n"), "grpcws.yaml", env(nil), readFiles(nil))
		var got string
		if err != nil {
			es := err.(Errors)
			got = es[0].Problem
		} else {
			got = cfg.Limits.IdleTimeout.String()
		}
		if got != tt.want {
			t.Errorf("idle_timeout: %s = %s; want %s", tt.in, got, tt.want)
		}
	}
}
