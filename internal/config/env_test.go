package config

import (
	"strings"
	"testing"
	"time"
)

func TestEnv(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"NS":     "prod7",
		"PORT":   "9090",
		"EMPTY":  "",
		"DOLLAR": "${NS}",
		"SECRET": "hunter2://not-a-target",
	}
	for _, tt := range []struct {
		name  string
		value string // backends[0].target, as written
		want  string // the target after expansion
		err   string // or the error
	}{
		{name: "whole", value: "${NS}:9090", want: "prod7:9090"},
		{name: "several", value: "dns:///orders.${NS}.svc:${PORT}", want: "dns:///orders.prod7.svc:9090"},
		{name: "quoted", value: `"orders-${NS}:${PORT}"`, want: "orders-prod7:9090"},
		{name: "single quoted", value: `'orders-${NS}:${PORT}'`, want: "orders-prod7:9090"},
		{name: "dollar escaped", value: "unix:///run/$$NS/${NS}.sock", want: "unix:///run/$NS/prod7.sock"},
		{name: "escaped reference", value: "unix:///run/$${NS}", want: "unix:///run/${NS}"},
		{name: "a value is not expanded again", value: "unix:///run/${DOLLAR}", want: "unix:///run/${NS}"},
		{
			name:  "unset",
			value: "${NS}.${MISSING}:9090",
			err:   `grpcws.yaml:3: backends[0].target: "${NS}.${MISSING}:9090": environment variable MISSING is not set`,
		},
		{
			name:  "empty",
			value: "${EMPTY}",
			err:   `grpcws.yaml:3: backends[0].target: "${EMPTY}": must not be empty`,
		},
		{
			name:  "the value is never printed",
			value: "${SECRET}",
			err:   `grpcws.yaml:3: backends[0].target: "${SECRET}": the scheme must be dns, unix, unix-abstract or passthrough`,
		},
		{
			name:  "bare dollar",
			value: "$NS:9090",
			err:   `grpcws.yaml:3: backends[0].target: "$NS:9090": "$" must start ${NAME}; write $$ for a dollar sign`,
		},
		{
			name:  "unclosed",
			value: "${NS:9090",
			err:   `grpcws.yaml:3: backends[0].target: "${NS:9090": "${" without a closing "}"; write $$ for a dollar sign`,
		},
		{
			name:  "not a name",
			value: "${NS:-shop}:9090",
			err:   `grpcws.yaml:3: backends[0].target: "${NS:-shop}:9090": "NS:-shop" is not a variable name; write ${NAME} with letters, digits and _, or $$ for a dollar sign`,
		},
		{
			name:  "empty name",
			value: "${}:9090",
			err:   `grpcws.yaml:3: backends[0].target: "${}:9090": "" is not a variable name; write ${NAME} with letters, digits and _, or $$ for a dollar sign`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			doc := "backends:\n  - name: orders\n    target: " + tt.value + "\n"
			cfg, err := parse([]byte(doc), "grpcws.yaml", env(vars), readFiles(testFiles()))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("Parse error = %v; want %s", err, tt.err)
				}
				for _, secret := range []string{"hunter2", "prod7"} {
					if err != nil && strings.Contains(err.Error(), secret) {
						t.Errorf("Parse error %q shows the value of a variable", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Backends[0].Target; got != tt.want {
				t.Errorf("target = %q; want %q", got, tt.want)
			}
		})
	}
}

// A variable's value is one string, whatever YAML it holds.
func TestEnvValueIsNotYAML(t *testing.T) {
	t.Parallel()
	value := "x\n  tls: {cert_file: /etc/passwd}\nlimits: [\n# ]"
	cfg, err := parse([]byte("tracing:\n  service_name: edge-${YAML}\n"), "grpcws.yaml", env(map[string]string{"YAML": value}), readFiles(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Tracing.ServiceName, "edge-"+value; got != want {
		t.Errorf("service_name = %q; want %q", got, want)
	}
	if cfg.Listen.TLS != nil || cfg.Limits != Default().Limits {
		t.Errorf("a variable's value changed other keys: %+v", cfg)
	}
}

// Every kind of value may come from the environment.
func TestEnvTypes(t *testing.T) {
	t.Parallel()
	vars := map[string]string{"CONNS": "250", "TIMEOUT": "45s", "SIZE": "8MiB", "BOOL": "true", "BAD": "hunter2"}
	cfg, err := parse([]byte(`limits:
  max_connections: ${CONNS}
  write_timeout: ${TIMEOUT}
  max_message_size: ${SIZE}
admin:
  pprof: ${BOOL}
`), "grpcws.yaml", env(vars), readFiles(nil))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Limits; l.MaxConnections != 250 || l.WriteTimeout != 45*time.Second || l.MaxMessageSize != 8*MiB || !cfg.Admin.Pprof {
		t.Errorf("Parse = %+v, pprof %v; want 250 connections, 45s, 8MiB, pprof", l, cfg.Admin.Pprof)
	}

	_, err = parse([]byte(`limits:
  max_connections: ${BAD}
  write_timeout: ${BAD}
  max_message_size: ${BAD}
admin:
  pprof: ${BAD}
`), "grpcws.yaml", env(vars), readFiles(nil))
	want := `grpcws.yaml:2: limits.max_connections: "${BAD}": must be a whole number
grpcws.yaml:3: limits.write_timeout: "${BAD}": must be a duration with a unit, such as "30s", "5m" or "1h30m"
grpcws.yaml:4: limits.max_message_size: "${BAD}": must be a size: bytes, or a whole number with a unit such as "512KiB", "4MiB" or "100KB"
grpcws.yaml:6: admin.pprof: "${BAD}": must be true or false`
	if err == nil || err.Error() != want {
		t.Errorf("Parse error =\n%v\nwant\n%s", err, want)
	}
}

// Keys are not expanded: ${NAME} in a key is an unknown key.
func TestEnvNotInKeys(t *testing.T) {
	t.Parallel()
	_, err := parse([]byte("${KEY}: 1\n"), "grpcws.yaml", env(map[string]string{"KEY": "listen"}), readFiles(nil))
	want := `grpcws.yaml:1: ${KEY}: unknown key; the keys here are ` + allKeys
	if err == nil || err.Error() != want {
		t.Errorf("Parse error = %v; want %s", err, want)
	}
}
