package muxwire

import (
	"fmt"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	grpcwsv1 "github.com/grpcws/grpcws/gen/grpcws/v1"
	"github.com/grpcws/grpcws/internal/v1wire"
)

// Payloads are deterministic protobuf, so that equal frames are equal
// bytes (the test vectors rely on it).
var marshal = proto.MarshalOptions{Deterministic: true}

// Open returns the payload of an OPEN frame: the route, the stream's own
// metadata (-bin values as raw bytes) and its timeout in grpc-timeout
// format ("" for none).
func Open(route string, md metadata.MD, timeout string) ([]byte, error) {
	m := &grpcwsv1.MuxOpen{Route: route, Timeout: timeout}
	if len(md) > 0 {
		m.Metadata = v1wire.ToMetadata(md)
	}
	return marshal.Marshal(m)
}

// ParseOpen reads an OPEN frame's payload.
func ParseOpen(p []byte) (*grpcwsv1.MuxOpen, error) {
	var m grpcwsv1.MuxOpen
	if err := proto.Unmarshal(p, &m); err != nil {
		return nil, fmt.Errorf("grpcws: OPEN payload: %w", err)
	}
	return &m, nil
}

// Headers returns the payload of a HEADERS frame, without Content-Type.
func Headers(md metadata.MD) ([]byte, error) {
	return marshal.Marshal(v1wire.ToMetadata(md))
}

// ParseHeaders reads a HEADERS frame's payload.
func ParseHeaders(p []byte) (metadata.MD, error) {
	var m grpcwsv1.Metadata
	if err := proto.Unmarshal(p, &m); err != nil {
		return nil, fmt.Errorf("grpcws: HEADERS payload: %w", err)
	}
	return v1wire.FromMetadata(&m)
}

// End returns the payload of an END frame: the status and the trailers,
// without Content-Type.
func End(st *status.Status, trailers metadata.MD) ([]byte, error) {
	e := &grpcwsv1.End{Status: v1wire.FromStatus(st)}
	if len(trailers) > 0 {
		e.Trailers = v1wire.ToMetadata(trailers)
	}
	return marshal.Marshal(e)
}

// ParseEnd reads an END frame's payload.
func ParseEnd(p []byte) (*status.Status, metadata.MD, error) {
	var e grpcwsv1.End
	if err := proto.Unmarshal(p, &e); err != nil {
		return nil, nil, fmt.Errorf("grpcws: END payload: %w", err)
	}
	md, err := v1wire.FromMetadata(e.GetTrailers())
	if err != nil {
		return nil, nil, fmt.Errorf("grpcws: END payload: %w", err)
	}
	return v1wire.Status(e.GetStatus()), md, nil
}
