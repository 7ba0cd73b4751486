package main

import (
	"context"
	"log/slog"
	"net"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/benchmark"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	"github.com/grpcws/grpcws/bridge"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startBridge serves the bench's backend and an in-process bridge in front
// of it, and returns the bridge's host:port.
func startBridge(t *testing.T, opts ...bridge.Option) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := benchmark.StartServer(benchmark.ServerInfo{Type: "protobuf", Listener: lis})
	t.Cleanup(stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	h, err := bridge.NewHandler([]bridge.Service{{
		Desc: testgrpc.File_grpc_testing_benchmark_service_proto.Services().ByName("BenchmarkService"),
		Conn: cc,
	}}, append([]bridge.Option{bridge.WithLogger(slog.New(slog.DiscardHandler)), bridge.WithMuxLimits(200, 0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		srv.Close()
	})
	return srv.Listener.Addr().String()
}

// TestMuxPingPong runs ping-pong on many streams of one socket, with
// messages larger than the bridge's windows, so that the client sends only
// what the bridge's WINDOW frames allow: the bridge closes a socket that
// sends more.
func TestMuxPingPong(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		opts []bridge.Option
	}{
		{"default windows", nil},
		{"small windows", []bridge.Option{bridge.WithMuxWindows(8<<10, 32<<10)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := startBridge(t, tt.opts...)
			ctx := testContext(t)
			m, err := dialMux(ctx, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer m.close()
			var wg sync.WaitGroup
			for i, size := range []int{0, 64, 4096, 100 << 10, 1 << 20, 64, 4096, 64} {
				wg.Go(func() {
					req, err := proto.Marshal(request(size))
					if err != nil {
						t.Error(err)
						return
					}
					want, err := proto.Marshal(&testgrpc.SimpleResponse{Payload: &testgrpc.Payload{Body: make([]byte, size)}})
					if err != nil {
						t.Error(err)
						return
					}
					s, err := m.open(route, nil)
					if err != nil {
						t.Error(err)
						return
					}
					defer s.close()
					for range 5 {
						n, err := s.roundTrip(ctx, req)
						if err != nil {
							t.Errorf("stream %d, %d B: %v", i, size, err)
							return
						}
						if n != len(want) {
							t.Errorf("stream %d, %d B: response of %d bytes; want %d", i, size, n, len(want))
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

// TestMuxIsolation runs both isolation measurements briefly: they must
// finish, and the stalled stream must take exactly its window.
func TestMuxIsolation(t *testing.T) {
	t.Parallel()
	addr := startBridge(t)
	ctx := testContext(t)
	hol, err := headOfLine(ctx, addr, 1, 100*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(hol.alone) == 0 || len(hol.loaded) == 0 {
		t.Errorf("head of line: %d round trips alone, %d loaded; want some of each", len(hol.alone), len(hol.loaded))
	}
	st, err := stalledReader(ctx, addr, 1, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.alone) != 1 || st.alone[0] <= 0 || len(st.stalled) != 1 || st.stalled[0] <= 0 {
		t.Errorf("stalled reader: %v alone, %v stalled; want one rate above 0 each", st.alone, st.stalled)
	}
	if want := int64(muxClientSettings().StreamWindow); len(st.filled) != 1 || st.filled[0] != want {
		t.Errorf("the stalled stream took %v bytes; want %d, its window", st.filled, want)
	}
}
