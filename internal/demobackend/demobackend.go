// Package demobackend holds the backends that `grpcws --demo` serves: an echo
// service with one method of each RPC kind, and a multi-room chat.
package demobackend

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	chatv1 "github.com/grpcws/grpcws/gen/examples/chat/v1"
	echov1 "github.com/grpcws/grpcws/gen/examples/echo/v1"
)

// Register registers the echo and chat services on s, with gRPC health
// (SERVING) and server reflection.
func Register(s *grpc.Server) {
	echov1.RegisterEchoServiceServer(s, &EchoServer{})
	chatv1.RegisterChatServiceServer(s, NewChatServer())
	healthpb.RegisterHealthServer(s, health.NewServer())
	reflection.Register(s)
}
