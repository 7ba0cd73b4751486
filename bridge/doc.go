// Package bridge serves gRPC to WebSocket clients: browsers, and anything
// else that speaks WebSocket and protobuf.
//
// A [Handler] is an [http.Handler]. Each WebSocket connection it accepts
// carries one RPC, of any kind (unary, server-streaming, client-streaming or
// bidi), to an unmodified gRPC backend. The connection's subprotocol names
// the method; every binary frame is one protobuf message; text frames that
// start with '#' carry the response headers, the final status and trailers,
// and the client's half-close. The wire protocol is specified in
// docs/protocol.md, which is enough to write a client in any language.
//
// The Handler also speaks grpcwebproxy's "grpc-websockets" protocol, chosen
// by that subprotocol, for clients such as @improbable-eng/grpc-web's
// WebsocketTransport: the route comes from the URL path and messages are
// gRPC-Web frames (docs/grpc-websockets.md). With [WithHTTPProtocols] it
// serves gRPC-Web, Connect and gRPC over HTTP too, through
// connectrpc.com/vanguard. Every protocol shares the Handler's routes,
// origins, limits, metadata rules, observer, log and shutdown: one policy
// for every front door.
//
// # Glossary
//
//   - client: the WebSocket side, typically a browser.
//   - backend: the gRPC server the bridge forwards to.
//   - route: a method the bridge serves, and the subprotocol names that
//     select it: the method's full name with a dot for the slash
//     ("examples.echo.v1.EchoService.Echo"), and a name given with the
//     grpcws.v1.subprotocol method option ("chat.v1"). A "+json" suffix
//     selects the JSON encoding.
//
// # Descriptors
//
// The bridge needs each service's descriptor: from compiled-in Go types
// (echov1.File_examples_echo_v1_echo_proto.Services()), from a descriptor
// set file ([ReadDescriptorSet]), or from the backend's server reflection
// ([Reflect]). In the binary encoding it forwards message bytes without
// decoding them.
//
// # Errors
//
// Text a client can read (a status message, a close reason) starts with
// "grpcws:"; errors of the Go API start with "bridge:".
//
// # Concurrency
//
// A Handler is safe for concurrent use. The goroutine that serves a
// connection or a call owns it: it runs two pumps, upstream (client to
// backend) and downstream (backend to client), and returns only when both
// have. Either
// side's end cancels the other: a client that closes or vanishes cancels
// the backend stream at once, and the backend's status closes the
// connection. Each pump waits for the other side to take a message before
// it reads the next, so a slow side never grows the bridge's memory.
//
// [http.Server.Shutdown] does not track upgraded connections: call
// [Handler.Shutdown] (graceful: open RPCs may finish) or [Handler.Close]
// as well. The Handler never closes the backend connections it was given.
package bridge
