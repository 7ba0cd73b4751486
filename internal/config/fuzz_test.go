package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	// Small seeds: the fuzzer minimizes what it finds, which is slow for
	// long inputs.
	data, err := os.ReadFile("../../examples/config/minimal.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(data))
	f.Add("listen: {address: \":1\", tls: {cert_file: /tls/tls.crt, key_file: /tls/tls.key}}\nbackends: [{name: a, target: \"${X}:1\", descriptors: {files: [/api.binpb]}}]\nroutes: [{backend: a, all: true, aliases: {a.B/C: d}}]\n")
	f.Add("limits: {max_message_size: 4MiB, idle_timeout: 1m}\norigins: [\"*\"]\ntrusted_proxies: [10.0.0.0/8]\ndrain: {timeout: 1s}\n")
	f.Add("a: &a [1]\nb: *a\n<<: {}\n")
	vars := map[string]string{"X": "x", "POD_NAMESPACE": "ns"}
	f.Fuzz(func(t *testing.T, doc string) {
		cfg, err := parse([]byte(doc), "grpcws.yaml", env(vars), readFiles(testFiles()))
		if err != nil {
			if cfg != nil {
				t.Fatal("a Config and an error")
			}
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %v is not a non-empty Errors", err)
			}
			for _, e := range errs {
				if e.File != "grpcws.yaml" || e.Line <= 0 && !strings.Contains(e.Problem, "unknown anchor") {
					t.Fatalf("error without a file and line: %#v", e)
				}
			}
			return
		}
		// What Parse accepts, Validate accepts.
		v := &validator{readFile: readFiles(testFiles())}
		v.config(cfg)
		if err := v.err(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
	})
}

func FuzzParseByteSize(f *testing.F) {
	for _, s := range []string{"0", "4MiB", "100 KB", "-1", "9223372036854775807", "8388608TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseByteSize(%q) = %d", s, n)
		}
		if back, err := ParseByteSize(n.String()); err != nil || back != n {
			t.Fatalf("ParseByteSize(%q) = %d; its String %q parses as %d, %v", s, n, n.String(), back, err)
		}
	})
}
