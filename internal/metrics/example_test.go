package metrics_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"

	"github.com/grpcws/grpcws/bridge"
	"github.com/grpcws/grpcws/internal/metrics"
)

func Example() {
	reg := prometheus.NewRegistry()
	m := metrics.New(reg) // pass m to the bridge as its Observer
	unwatch := m.WatchBackend("echo", func() connectivity.State { return connectivity.Ready })
	defer unwatch()

	// What the bridge does for one unary RPC.
	s := m.Accepted(bridge.Route{Method: "/echo.v1.Echo/Unary", Protocol: bridge.ProtocolConnect})
	s.ClientMessage(11)
	s.ServerMessage(13)
	s.Ended(codes.OK, 20*time.Millisecond)

	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "grpcws_backend_up") || strings.HasPrefix(line, "grpcws_streams_total") ||
			strings.HasPrefix(line, "grpcws_message_bytes_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// grpcws_backend_up{backend="echo"} 1
	// grpcws_message_bytes_total{direction="backend_to_client",protocol="connect",route="/echo.v1.Echo/Unary"} 13
	// grpcws_message_bytes_total{direction="client_to_backend",protocol="connect",route="/echo.v1.Echo/Unary"} 11
	// grpcws_streams_total{code="OK",protocol="connect",route="/echo.v1.Echo/Unary"} 1
}
