/**
 * @grpcws/client: a Transport of @connectrpc/connect for a grpcws bridge,
 * so that a client made with createClient runs every kind of method,
 * client-streaming and bidi included, in browsers and in Node. All the
 * calls of a transport share one WebSocket (docs/protocol-mux.md), or with
 * multiplex: false each has its own (docs/protocol.md). See README.md.
 *
 * @packageDocumentation
 */

export { createGrpcwsTransport } from "./transport.js";
export type { GrpcwsTransportOptions } from "./transport.js";
export type { WebSocketConstructor, WebSocketLike } from "./call.js";
export { WebSocketClose, closeCodeOf } from "./errors.js";
export { backoffDelay, isRetryable, withReconnect } from "./reconnect.js";
export type { Attempt, ReconnectOptions } from "./reconnect.js";
export { CloseCode, routeName } from "./protocol.js";
