package bridge_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/reflect/protoreflect"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/reflection"
	v1alphagrpc "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/grpcws/grpcws/bridge"
	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
	"github.com/grpcws/grpcws/internal/demobackend"
	"github.com/grpcws/grpcws/internal/testbackend"
)

func serviceNames(services []protoreflect.ServiceDescriptor) []string {
	var names []string
	for _, s := range services {
		names = append(names, string(s.FullName()))
	}
	return names
}

// chatNames returns the subprotocol names of the chat method a Handler
// built from services serves.
func chatNames(t *testing.T, services []protoreflect.ServiceDescriptor) []string {
	t.Helper()
	var svcs []bridge.Service
	for _, d := range services {
		svcs = append(svcs, bridge.Service{Desc: d, Conn: testbackend.NopConn{}})
	}
	h, err := bridge.NewHandler(svcs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range h.Routes() {
		if r.Method == "/examples.chat.v1.ChatService/Chat" {
			return r.Names
		}
	}
	t.Fatalf("no chat route in %v", h.Routes())
	return nil
}

func TestReflect(t *testing.T) {
	t.Parallel()
	b := testbackend.Start(t)
	ctx := testContext(t)
	services, err := bridge.Reflect(ctx, b.Conn)
	if err != nil {
		t.Fatal(err)
	}
	names := serviceNames(services)
	for _, want := range []string{"examples.chat.v1.ChatService", "examples.echo.v1.EchoService", "grpc.testing.TestService"} {
		if !slices.Contains(names, want) {
			t.Errorf("services %v; want %s among them", names, want)
		}
	}
	for _, n := range names {
		if n == "grpc.reflection.v1.ServerReflection" || n == "grpc.reflection.v1alpha.ServerReflection" {
			t.Errorf("services %v include reflection itself", names)
		}
	}
	// The alias is read from descriptors built at run time.
	if got := chatNames(t, services); !slices.Equal(got, []string{"examples.chat.v1.ChatService.Chat", "chat.v1"}) {
		t.Errorf("chat names %v; want the default and chat.v1", got)
	}
}

func TestReflectUnavailable(t *testing.T) {
	t.Parallel()
	b := testbackend.Start(t)
	b.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := bridge.Reflect(ctx, b.Conn); err == nil {
		t.Fatal("Reflect against a stopped backend succeeded")
	}
}

func TestReadDescriptorSet(t *testing.T) {
	t.Parallel()
	path := testbackend.WriteDescriptorSet(t, chatv1.File_examples_chat_v1_chat_proto)
	services, err := bridge.ReadDescriptorSet(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := serviceNames(services); !slices.Equal(got, []string{"examples.chat.v1.ChatService"}) {
		t.Fatalf("services %v; want the chat service", got)
	}
	if got := chatNames(t, services); !slices.Equal(got, []string{"examples.chat.v1.ChatService.Chat", "chat.v1"}) {
		t.Errorf("chat names %v; want the default and chat.v1", got)
	}

	if _, err := bridge.ReadDescriptorSet(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file gave no error")
	}
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("not a descriptor set"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := bridge.ReadDescriptorSet(junk); err == nil {
		t.Error("junk gave no error")
	}
}

func TestReflectV1Alpha(t *testing.T) {
	t.Parallel()
	// A backend that has only the older reflection API.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	echov1.RegisterEchoServiceServer(s, &demobackend.EchoServer{})
	v1alphagrpc.RegisterServerReflectionServer(s, reflection.NewServer(reflection.ServerOptions{Services: s}))
	go s.Serve(lis)
	defer s.Stop()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	services, err := bridge.Reflect(testContext(t), cc)
	if err != nil {
		t.Fatal(err)
	}
	if got := serviceNames(services); !slices.Equal(got, []string{"examples.echo.v1.EchoService"}) {
		t.Errorf("services %v; want the echo service", got)
	}
}
