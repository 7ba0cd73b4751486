/**
 * @grpcws/client: typed gRPC calls of every kind, from a browser or Node,
 * through a grpcws bridge. One WebSocket per RPC; messages from
 * protobuf-es v2. See README.md and docs/protocol.md.
 *
 * @packageDocumentation
 */

export { createClient } from "./client.js";
export type {
  BidiStream,
  BidiStreamingFn,
  CallOptions,
  Client,
  ClientOptions,
  ClientStream,
  ClientStreamingFn,
  MethodFn,
  SendStream,
  ServerStream,
  ServerStreamingFn,
  StreamCall,
  UnaryFn,
} from "./client.js";
export type { WebSocketConstructor, WebSocketLike } from "./call.js";
export { Code, codeName } from "./code.js";
export { GrpcWsError, errorFromClose } from "./error.js";
export type { GrpcWsErrorInit, StatusDetail } from "./error.js";
export { decodeBase64, encodeBase64 } from "./metadata.js";
export type { MetadataInit, MetadataValue } from "./metadata.js";
export { backoffDelay, isRetryable, withReconnect } from "./reconnect.js";
export type { Attempt, ReconnectOptions } from "./reconnect.js";
export { CloseCode, routeName } from "./protocol.js";
