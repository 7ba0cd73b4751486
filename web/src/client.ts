import type { DescMessage, DescMethod, DescService, MessageInitShape, MessageShape, Registry } from "@bufbuild/protobuf";
import { Call } from "./call.js";
import type { WebSocketConstructor } from "./call.js";
import { encodeTimeout, metadataEntries, bearerSubprotocol } from "./metadata.js";
import type { MetadataInit } from "./metadata.js";
import { jsonSuffix, routeName, webSocketURL } from "./protocol.js";

/** Options of a client, for every call it makes. */
export interface ClientOptions {
  /**
   * The WebSocket implementation. Default: the global WebSocket, which
   * browsers and Node 22 have. In Node 20 pass the ws package's:
   * `import { WebSocket } from "ws"`.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * The message encoding: "binary" (protobuf, the default) or "json"
   * (protobuf JSON in text frames, easier to read in the network panel).
   */
  encoding?: "binary" | "json";
  /** The registry for google.protobuf.Any and extensions in the JSON encoding. */
  registry?: Registry;
  /** Request metadata for every call, before the call's own. */
  metadata?: MetadataInit;
  /**
   * A bearer token for every call, or a function that returns the current
   * one (or undefined for none). The bridge sends it to the backend as
   * "authorization: Bearer <token>". It travels in the subprotocol list,
   * never in the URL, and the bridge never logs it.
   */
  token?: string | (() => string | undefined);
}

/** Options of one call. */
export interface CallOptions {
  /** Aborting the signal cancels the RPC: the call fails with Code.Canceled and the backend sees the cancellation. */
  signal?: AbortSignal;
  /**
   * The deadline, in milliseconds from now. The bridge and the backend
   * enforce it too (grpc-timeout); the call fails with
   * Code.DeadlineExceeded.
   */
  timeoutMs?: number;
  /** Request metadata, sent in the URL's query string after the client's. */
  metadata?: MetadataInit;
  /** A bearer token for this call, in place of the client's. */
  token?: string;
  /** Called with the response headers when they arrive. */
  onHeaders?: (headers: Headers) => void;
  /** Called with the trailers when the RPC ends with a status from the server. */
  onTrailers?: (trailers: Headers) => void;
}

/** What every streaming call has: its metadata and a way to stop it. */
export interface StreamCall {
  /**
   * The response headers. Rejects with the call's GrpcWsError when the RPC
   * failed before the server sent headers; resolves empty when it ended
   * with OK and none.
   */
  readonly headers: Promise<Headers>;
  /** The trailers when the RPC ends with OK; rejects with the call's GrpcWsError otherwise. */
  readonly trailers: Promise<Headers>;
  /** cancel ends the RPC with Code.Canceled, or with reason when it is a GrpcWsError. */
  cancel(reason?: unknown): void;
}

/**
 * ServerStream is a server-streaming call: iterate it for the responses.
 * The iteration ends when the RPC ends with OK, and throws its
 * GrpcWsError otherwise. Leaving the loop early cancels the RPC.
 */
export interface ServerStream<O extends DescMessage> extends StreamCall, AsyncIterable<MessageShape<O>> {
  /** receive returns the next response, or undefined at the end; an alternative to iteration. */
  receive(): Promise<MessageShape<O> | undefined>;
}

/** What a call with a streaming request side has. */
export interface SendStream<I extends DescMessage> {
  /**
   * send sends one request message, queued until the connection is open.
   * After the RPC ended it discards the message (its outcome is in the
   * responses and trailers); after closeSend it throws.
   */
  send(message: MessageInitShape<I>): void;
  /** closeSend half-closes the request stream: no more sends. Idempotent. */
  closeSend(): void;
  /** The bytes queued for sending but not yet sent: watch it to pace large uploads. */
  readonly bufferedAmount: number;
}

/**
 * ClientStream is a client-streaming call: send requests, closeSend, then
 * await response.
 */
export interface ClientStream<I extends DescMessage, O extends DescMessage> extends StreamCall, SendStream<I> {
  /** The one response; rejects with the call's GrpcWsError. */
  readonly response: Promise<MessageShape<O>>;
}

/**
 * BidiStream is a bidi-streaming call: send requests and iterate the
 * responses at the same time. Sending and receiving are independent: a
 * send never waits for a response.
 */
export interface BidiStream<I extends DescMessage, O extends DescMessage> extends ServerStream<O>, SendStream<I> {}

/** A unary method: one request, one response. */
export type UnaryFn<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => Promise<MessageShape<O>>;
/** A server-streaming method: one request, a stream of responses. */
export type ServerStreamingFn<I extends DescMessage, O extends DescMessage> = (
  request: MessageInitShape<I>,
  options?: CallOptions,
) => ServerStream<O>;
/** A client-streaming method: a stream of requests, one response. */
export type ClientStreamingFn<I extends DescMessage, O extends DescMessage> = (options?: CallOptions) => ClientStream<I, O>;
/** A bidi-streaming method: a stream each way. */
export type BidiStreamingFn<I extends DescMessage, O extends DescMessage> = (options?: CallOptions) => BidiStream<I, O>;

/** MethodFn is the typed function of one method. */
export type MethodFn<M> = M extends { methodKind: "unary"; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? UnaryFn<I, O>
  : M extends { methodKind: "server_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? ServerStreamingFn<I, O>
    : M extends { methodKind: "client_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
      ? ClientStreamingFn<I, O>
      : M extends { methodKind: "bidi_streaming"; input: infer I extends DescMessage; output: infer O extends DescMessage }
        ? BidiStreamingFn<I, O>
        : never;

/**
 * Client has one function per method of service S, named as the method's
 * localName: EchoService's Echo is client.echo.
 */
export type Client<S extends DescService> = {
  readonly [P in keyof S["method"]]: MethodFn<S["method"][P]>;
};

/**
 * createClient returns a client for service, made from its generated
 * descriptor (protoc-gen-es v2), that calls through the grpcws bridge at
 * baseUrl: "wss://api.example.com/", or "/" in a page served by the bridge's
 * host (http and https turn into ws and wss). Every call opens its own
 * WebSocket.
 *
 * The client holds no connection and no state: it is cheap, and safe to
 * share.
 */
export function createClient<S extends DescService>(service: S, baseUrl: string | URL, options: ClientOptions = {}): Client<S> {
  const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocket === undefined) {
    throw new TypeError(
      'grpcws: no WebSocket implementation: pass one as the WebSocket option (in Node 20: import { WebSocket } from "ws")',
    );
  }
  webSocketURL(baseUrl, []); // throws now on a URL no call could use
  const client: Record<string, unknown> = {};
  for (const method of service.methods) {
    const start = (opts: CallOptions = {}): Call<DescMessage, DescMessage> => {
      const query: [string, string][] = [...metadataEntries(options.metadata), ...metadataEntries(opts.metadata)];
      if (opts.timeoutMs !== undefined) {
        query.push(["grpc-timeout", encodeTimeout(opts.timeoutMs)]);
      }
      const protocols = [routeName(method) + (options.encoding === "json" ? jsonSuffix : "")];
      const token = opts.token ?? (typeof options.token === "function" ? options.token() : options.token);
      if (token !== undefined && token !== "") {
        protocols.push(bearerSubprotocol(token));
      }
      return new Call(
        {
          method,
          url: webSocketURL(baseUrl, query),
          protocols,
          WebSocket,
          json: options.encoding === "json",
          registry: options.registry,
          signal: opts.signal,
          timeoutMs: opts.timeoutMs,
          onHeaders: opts.onHeaders,
          onTrailers: opts.onTrailers,
        },
        method.input,
        method.output,
      );
    };
    client[method.localName] = methodFn(method, start);
  }
  return client as Client<S>;
}

type Start = (opts?: CallOptions) => Call<DescMessage, DescMessage>;

function methodFn(method: DescMethod, start: Start): unknown {
  // A Call has what every kind of stream has; the types above show each
  // kind only its part.
  switch (method.methodKind) {
    case "unary":
      return (request: MessageInitShape<DescMessage>, opts?: CallOptions) => {
        const call = start(opts);
        call.sendOnly(request);
        return call.response;
      };
    case "server_streaming":
      return (request: MessageInitShape<DescMessage>, opts?: CallOptions): ServerStream<DescMessage> => {
        const call = start(opts);
        call.sendOnly(request);
        return call;
      };
    case "client_streaming":
      return (opts?: CallOptions): ClientStream<DescMessage, DescMessage> => start(opts);
    case "bidi_streaming":
      return (opts?: CallOptions): BidiStream<DescMessage, DescMessage> => start(opts);
  }
}
