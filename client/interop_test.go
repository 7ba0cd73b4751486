package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/grpcws/grpcws/client"
)

// The interop scenarios report failure through grpclog's Fatal, which
// exits the process. interopLogger turns that into a panic the test
// recovers and reports.
type interopLogger struct{ grpclog.LoggerV2 }

type interopFailure string

func (interopLogger) Fatal(args ...any)   { panic(interopFailure(fmt.Sprint(args...))) }
func (interopLogger) Fatalln(args ...any) { panic(interopFailure(fmt.Sprintln(args...))) }
func (interopLogger) Fatalf(format string, args ...any) {
	panic(interopFailure(fmt.Sprintf(format, args...)))
}

func init() {
	// Before any gRPC code runs, as grpclog requires.
	grpclog.SetLoggerV2(interopLogger{grpclog.NewLoggerV2(discard{}, discard{}, discard{})})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestInterop runs grpc-go's interop scenarios through the bridge, with the
// Go client standing in for a gRPC channel, against grpc-go's interop
// server.
// It runs once per protocol: the scenarios must pass alike on one
// WebSocket per RPC and on one shared by all.
func TestInterop(t *testing.T) { forEachProtocol(t, testInterop) }

func testInterop(t *testing.T, opts ...client.Option) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("grpc.testing.TestService")
	if err != nil {
		t.Fatal(err)
	}
	_, conn := start(t, []protoreflect.ServiceDescriptor{d.(protoreflect.ServiceDescriptor)}, opts...)
	tc := testgrpc.NewTestServiceClient(conn)

	scenarios := []struct {
		name string
		run  func(ctx context.Context)
	}{
		{"empty_unary", func(ctx context.Context) { interop.DoEmptyUnaryCall(ctx, tc) }},
		{"large_unary", func(ctx context.Context) { interop.DoLargeUnaryCall(ctx, tc) }},
		{"client_streaming", func(ctx context.Context) { interop.DoClientStreaming(ctx, tc) }},
		{"server_streaming", func(ctx context.Context) { interop.DoServerStreaming(ctx, tc) }},
		{"ping_pong", func(ctx context.Context) { interop.DoPingPong(ctx, tc) }},
		{"empty_stream", func(ctx context.Context) { interop.DoEmptyStream(ctx, tc) }},
		{"custom_metadata", func(ctx context.Context) { interop.DoCustomMetadata(ctx, tc) }},
		{"status_code_and_message", func(ctx context.Context) { interop.DoStatusCodeAndMessage(ctx, tc) }},
		{"special_status_message", func(ctx context.Context) { interop.DoSpecialStatusMessage(ctx, tc) }},
		{"unimplemented_service", func(ctx context.Context) {
			interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(conn))
		}},
		{"unimplemented_method", func(ctx context.Context) {
			// interop.DoUnimplementedMethod takes a *grpc.ClientConn, not a
			// grpc.ClientConnInterface, so it cannot be handed a client.Conn:
			// this is its body, nil messages included, on the Go client.
			err := conn.Invoke(ctx, "/grpc.testing.TestService/UnimplementedCall", nil, nil)
			if status.Code(err) != codes.Unimplemented {
				panic(interopFailure(fmt.Sprintf("UnimplementedCall = %v; want UNIMPLEMENTED", err)))
			}
		}},
		{"cancel_after_begin", func(ctx context.Context) { interop.DoCancelAfterBegin(ctx, tc) }},
		{"cancel_after_first_response", func(ctx context.Context) { interop.DoCancelAfterFirstResponse(ctx, tc) }},
		{"timeout_on_sleeping_server", func(ctx context.Context) { interop.DoTimeoutOnSleepingServer(ctx, tc) }},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			defer func() {
				if r := recover(); r != nil {
					if f, ok := r.(interopFailure); ok {
						t.Fatalf("interop scenario failed: %s", f)
					}
					panic(r)
				}
			}()
			sc.run(ctx)
		})
	}
}
