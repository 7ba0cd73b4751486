package bridge

import (
	"context"
	"errors"

	"google.golang.org/grpc"
)

// nopConn is a backend connection for tests that never reach a backend.
type nopConn struct{}

func (nopConn) Invoke(context.Context, string, any, any, ...grpc.CallOption) error {
	return errors.New("nopConn")
}

func (nopConn) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, errors.New("nopConn")
}
