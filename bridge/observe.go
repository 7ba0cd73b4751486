package bridge

import (
	"time"

	"google.golang.org/grpc/codes"
)

// A Refusal is why the Handler refused a WebSocket connection or an HTTP
// call.
type Refusal string

// The reasons for refusing a connection or a call. See docs/protocol.md,
// section 5, for the close code of each on a WebSocket; an HTTP call gets
// the status in its protocol.
const (
	RefusedUnknownRoute Refusal = "unknown_route"  // no subprotocol, or none names a route (4012)
	RefusedOrigin       Refusal = "origin_refused" // a cross-site Origin not allowed (4007)
	RefusedOverLimit    Refusal = "over_limit"     // a connection limit (1013)
	RefusedBadRequest   Refusal = "bad_request"    // bad token, metadata or deadline (4003), or a failed handshake
	RefusedShutdown     Refusal = "shutting_down"  // the Handler is shutting down (1001)
)

// A Protocol names the wire protocol an RPC came by, for an Observer: it
// is the Protocol of the Route that Observer.Accepted receives. The values
// are stable, fit for a metric label.
type Protocol string

// The protocols a Handler serves.
const (
	ProtocolV1             Protocol = "grpcws.v1"       // protocol v1 over WebSocket (docs/protocol.md)
	ProtocolMux            Protocol = "grpcws.mux.v1"   // many RPCs on one WebSocket (docs/protocol-mux.md)
	ProtocolGRPCWebsockets Protocol = "grpc-websockets" // grpcwebproxy's WebSocket protocol (docs/grpc-websockets.md)
	ProtocolGRPCWeb        Protocol = "grpc-web"        // gRPC-Web over HTTP, binary or text (WithHTTPProtocols)
	ProtocolConnect        Protocol = "connect"         // Connect over HTTP, unary or streaming (WithHTTPProtocols)
	ProtocolGRPC           Protocol = "grpc"            // gRPC over HTTP/2 (WithHTTPProtocols)
)

// An Observer is told what happens to every connection and call a Handler
// serves, for metrics. Its methods, and those of the StreamObservers it returns, are
// called from the connections' goroutines: they must be safe for concurrent
// use and must not block.
type Observer interface {
	// Refused is called once for each refused connection.
	Refused(why Refusal)
	// Accepted is called when an RPC starts, with its route; route.Protocol
	// is the protocol it came by. The StreamObserver it returns is told
	// about the RPC's messages and its end.
	Accepted(route Route) StreamObserver
}

// A StreamObserver is told about one RPC. Its methods are called from the
// RPC's goroutines, ClientMessage and ServerMessage possibly at once.
type StreamObserver interface {
	// ClientMessage is called for each message from the client that the
	// bridge forwards, with its size in bytes on the wire.
	ClientMessage(size int)
	// ServerMessage is called for each message from the backend written to
	// the client, with its size in bytes on the wire.
	ServerMessage(size int)
	// Ended is called once, when the RPC has ended with code.
	Ended(code codes.Code, duration time.Duration)
}

// A MuxObserver is an Observer that is also told about the connections of
// grpcws.mux.v1 (docs/protocol-mux.md). A Handler whose Observer
// implements it calls it; the RPCs of those connections reach Accepted as
// every RPC does, with ProtocolMux.
type MuxObserver interface {
	// MuxOpened is called when a multiplexed connection opens. The
	// MuxConnObserver it returns is told about that connection.
	MuxOpened() MuxConnObserver
}

// A MuxConnObserver is told about one multiplexed connection, from its
// goroutines: its methods must be safe for concurrent use.
type MuxConnObserver interface {
	// Stalled is called each time a stream's message waits for the
	// client to grant flow-control window.
	Stalled()
	// Closed is called once, when the connection has closed, with the
	// number of streams it carried.
	Closed(streams int)
}

type nopObserver struct{}

func (nopObserver) Refused(Refusal)                 {}
func (nopObserver) Accepted(Route) StreamObserver   { return nopObserver{} }
func (nopObserver) ClientMessage(int)               {}
func (nopObserver) ServerMessage(int)               {}
func (nopObserver) Ended(codes.Code, time.Duration) {}

func (nopObserver) MuxOpened() MuxConnObserver { return nopObserver{} }
func (nopObserver) Stalled()                   {}
func (nopObserver) Closed(int)                 {}
