package client_test

import (
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func newListener() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func insecureCreds() grpc.DialOption {
	return grpc.WithTransportCredentials(insecure.NewCredentials())
}
