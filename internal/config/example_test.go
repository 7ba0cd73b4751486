package config_test

import (
	"fmt"

	"github.com/grpcws/grpcws/internal/config"
)

func ExampleParse() {
	doc := []byte(`backends:
  - name: orders
    target: dns:///orders.${NAMESPACE}.svc:9090
routes:
  - backend: orders
    services: [orders.v1.OrderService]
limits:
  max_message_size: 8MiB
`)
	env := map[string]string{"NAMESPACE": "shop"}
	cfg, err := config.Parse(doc, "grpcws.yaml", func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	maxMsg, idle, _ := cfg.Routes[0].Effective(cfg.Limits)
	fmt.Println(cfg.Backends[0].Target, cfg.Listen.Address, maxMsg, idle)
	// Output:
	// dns:///orders.shop.svc:9090 :8080 8MiB 0s
}

func ExampleParse_errors() {
	doc := []byte(`listen:
  adress: ":8443"
backends:
  - name: orders
    target: ""
  - name: billing
    target: billing:${PORT}
limits:
  idle_timeout: 30
`)
	_, err := config.Parse(doc, "grpcws.yaml", func(string) (string, bool) { return "", false })
	fmt.Println(err)
	// Output:
	// grpcws.yaml:2: listen.adress: unknown key; the keys here are address, tls
	// grpcws.yaml:5: backends[0].target: "": must not be empty
	// grpcws.yaml:7: backends[1].target: "billing:${PORT}": environment variable PORT is not set
	// grpcws.yaml:9: limits.idle_timeout: "30": must be a duration with a unit, such as "30s", "5m" or "1h30m"
}

func ExampleConfig_Validate() {
	cfg := config.Default()
	cfg.Backends = append(cfg.Backends, config.NewBackend("orders", "orders:9090"))
	cfg.Routes = append(cfg.Routes, config.Route{Backend: "order", All: true})
	cfg.Limits.MaxMessageSize = 3 * config.GiB
	fmt.Println(cfg.Validate())
	// Output:
	// routes[0].backend: "order": no backend has this name
	// limits.max_message_size: "3GiB": must be at most 2GiB
}
