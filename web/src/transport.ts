import type {
  BinaryReadOptions,
  BinaryWriteOptions,
  DescMessage,
  DescMethodStreaming,
  DescMethodUnary,
  JsonReadOptions,
  JsonWriteOptions,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import type { ContextValues, Interceptor, StreamResponse, Transport, UnaryRequest, UnaryResponse } from "@connectrpc/connect";
import { createClientMethodSerializers, runStreamingCall, runUnaryCall } from "@connectrpc/connect/protocol";
import { v1Engine } from "./call.js";
import type { WebSocketConstructor } from "./call.js";
import { MuxPool } from "./mux.js";
import { jsonSuffix, routeName, webSocketURL } from "./protocol.js";
import type { Engine, RpcStream } from "./stream.js";

/**
 * The options of createGrpcwsTransport. Those that createConnectTransport
 * also has mean the same thing there.
 */
export interface GrpcwsTransportOptions {
  /**
   * The bridge's URL: "wss://api.example.com/", or "/" in a page served
   * from the bridge's host (http and https turn into ws and wss). Each
   * method's route goes in the subprotocol, not in the path, so this is
   * the path the bridge serves WebSockets on.
   */
  baseUrl: string;
  /** Interceptors for every call, as createConnectTransport's. */
  interceptors?: Interceptor[];
  /**
   * Binary protobuf in binary frames (true, the default) or protobuf JSON
   * in text frames (false: the "+json" route, readable in the network
   * panel). The default differs from createConnectTransport's, which is
   * JSON: binary is smaller and faster, and the bridge has no HTTP caches
   * to be friendly to.
   */
  useBinaryFormat?: boolean;
  /** Options for the JSON format, for example a registry for google.protobuf.Any. */
  jsonOptions?: Partial<JsonReadOptions & JsonWriteOptions>;
  /** Options for the binary format. */
  binaryOptions?: Partial<BinaryReadOptions & BinaryWriteOptions>;
  /**
   * The timeout of a call that sets none, in milliseconds. A call's own
   * timeoutMs wins; zero or less there means none.
   */
  defaultTimeoutMs?: number;
  /**
   * The WebSocket implementation. Default: the global WebSocket, which
   * browsers and Node 22 have. In Node 20 pass the ws package's:
   * `import { WebSocket } from "ws"`.
   */
  WebSocket?: WebSocketConstructor;
  /**
   * A bearer token for every call, or a function that returns the current
   * one (or undefined for none), read as each call starts: a long-lived
   * page can refresh its token without making a new transport. The bridge
   * sends it to the backend as "authorization: Bearer <token>". A call's
   * own authorization header wins. It travels in the subprotocol list,
   * never in the URL, and the bridge never logs it.
   */
  token?: string | (() => string | undefined | Promise<string | undefined>);
  /**
   * One WebSocket per transport, every call a stream of it (true, the
   * default: grpcws.mux.v1, docs/protocol-mux.md), or one WebSocket per
   * call (false: protocol v1, docs/protocol.md), for bridges older than
   * grpcws.mux.v1. The shared socket opens with the first call, closes
   * 5 s after the last call ended (so a Node program can exit), and is
   * opened again by the next call, as it is after a drop or a drain.
   */
  multiplex?: boolean;
}

/**
 * While more than this many bytes of a call wait to be sent, the transport
 * stops reading its request iterable, so a large upload keeps a bounded
 * amount in memory.
 */
const sendHighWaterMark = 1 << 20;

/**
 * createGrpcwsTransport returns a Transport of @connectrpc/connect that
 * calls through a grpcws bridge, so that a client made with createClient
 * runs every kind of method, client-streaming and bidi included, in
 * browsers and in Node:
 *
 * ```ts
 * const transport = createGrpcwsTransport({ baseUrl: "wss://api.example.com/" });
 * const client = createClient(ChatService, transport);
 * ```
 *
 * By default every call is a stream of one WebSocket the transport shares
 * (grpcws.mux.v1): request headers travel in the stream's OPEN frame, the
 * bearer token in the handshake's subprotocol list and, when it changes,
 * in a TOKEN frame. With multiplex: false each call has a WebSocket of its
 * own (protocol v1): the token in the subprotocol list, every other header
 * in the URL's query string. Errors are ConnectErrors; one that came from
 * a WebSocket close rather than the backend's status has a WebSocketClose
 * as its cause (see closeCodeOf).
 *
 * Make one transport and share it: its calls share its connection.
 */
export function createGrpcwsTransport(options: GrpcwsTransportOptions): Transport {
  const WebSocket = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (WebSocket === undefined) {
    throw new TypeError(
      'grpcws: no WebSocket implementation: pass one as the WebSocket option (in Node 20: import { WebSocket } from "ws")',
    );
  }
  const url = webSocketURL(options.baseUrl, []); // throws now on a URL no call could use
  const useBinaryFormat = options.useBinaryFormat ?? true;

  const timeoutOf = (timeoutMs: number | undefined): number | undefined =>
    timeoutMs === undefined ? options.defaultTimeoutMs : timeoutMs <= 0 ? undefined : timeoutMs;

  const headerOf = async (header: HeadersInit | undefined): Promise<Headers> => {
    const h = new Headers(header);
    if (!h.has("authorization") && options.token !== undefined) {
      let token: string | undefined;
      try {
        token = typeof options.token === "function" ? await options.token() : options.token;
      } catch (e) {
        throw ConnectError.from(e, Code.Unauthenticated);
      }
      if (token !== undefined && token !== "") {
        h.set("authorization", `Bearer ${token}`);
      }
    }
    return h;
  };

  const engine: Engine = (options.multiplex ?? true) ? new MuxPool(WebSocket) : v1Engine(WebSocket);

  /** start starts one call, from the request as the interceptors left it. */
  const start = <O>(
    method: DescMethodUnary | DescMethodStreaming,
    req: { readonly url: string; readonly header: Headers; readonly signal: AbortSignal },
    timeoutMs: number | undefined,
    parse: (data: Uint8Array) => O,
  ): RpcStream<O> =>
    engine.start({
      url: req.url,
      header: req.header,
      route: routeName(method) + (useBinaryFormat ? "" : jsonSuffix),
      timeoutMs,
      methodName: method.name,
      streamingOutput: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      json: !useBinaryFormat,
      parse,
      signal: req.signal,
    });

  return {
    async unary<I extends DescMessage, O extends DescMessage>(
      method: DescMethodUnary<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      message: MessageInitShape<I>,
      contextValues?: ContextValues,
    ): Promise<UnaryResponse<I, O>> {
      const { serialize, parse } = createClientMethodSerializers(method, useBinaryFormat, options.jsonOptions, options.binaryOptions);
      timeoutMs = timeoutOf(timeoutMs);
      const reqHeader = await headerOf(header);
      const [callSignal, stopFollowing] = followSignal(signal);
      return await runUnaryCall<I, O>({
        ...runOptions(options.interceptors, callSignal, timeoutMs),
        req: {
          stream: false,
          service: method.parent,
          method,
          requestMethod: "GET",
          url,
          header: reqHeader,
          contextValues: contextValues ?? createContextValues(),
          message,
        },
        next: async (req: UnaryRequest<I, O>): Promise<UnaryResponse<I, O>> => {
          const request = serialize(req.message); // first: a request that cannot be serialized opens no socket
          const call = start(method, req, timeoutMs, parse);
          call.sendOnly(request);
          const [header, message, trailer] = await Promise.all([call.header, call.response, call.trailer]);
          return { stream: false, service: method.parent, method, header, message, trailer };
        },
      }).finally(stopFollowing);
    },

    async stream<I extends DescMessage, O extends DescMessage>(
      method: DescMethodStreaming<I, O>,
      signal: AbortSignal | undefined,
      timeoutMs: number | undefined,
      header: HeadersInit | undefined,
      input: AsyncIterable<MessageInitShape<I>>,
      contextValues?: ContextValues,
    ): Promise<StreamResponse<I, O>> {
      const { serialize, parse } = createClientMethodSerializers(method, useBinaryFormat, options.jsonOptions, options.binaryOptions);
      timeoutMs = timeoutOf(timeoutMs);
      const reqHeader = await headerOf(header);
      const [callSignal, stopFollowing] = followSignal(signal);
      return runStreamingCall<I, O>({
        ...runOptions(options.interceptors, callSignal, timeoutMs),
        req: {
          stream: true,
          service: method.parent,
          method,
          requestMethod: "GET",
          url,
          header: reqHeader,
          contextValues: contextValues ?? createContextValues(),
          message: input,
        },
        next: async (req) => {
          const call = start(method, req, timeoutMs, parse);
          void call.trailer.then(stopFollowing, stopFollowing);
          void pump(call, req.message, serialize, method.methodKind === "server_streaming");
          const trailer = new Headers();
          const header = await call.header;
          const end = async (): Promise<void> => {
            (await call.trailer).forEach((v, k) => {
              trailer.append(k, v);
            });
          };
          // The one response of a client-streaming method comes at the
          // end, when its status is known; the others as they arrive.
          const message: AsyncIterable<MessageShape<O>> =
            method.methodKind === "client_streaming"
              ? (async function* () {
                  const m = await call.response;
                  await end();
                  yield m;
                })()
              : {
                  [Symbol.asyncIterator]: () => ({
                    next: async () => {
                      const r = await call.next();
                      if (r.done === true) {
                        await end();
                      }
                      return r;
                    },
                  }),
                };
          return { stream: true, service: method.parent, method, header, trailer, message };
        },
      }).catch((e: unknown) => {
        stopFollowing();
        throw e;
      });
    },
  };
}

/**
 * runOptions are the optional parts of runUnaryCall's and
 * runStreamingCall's options, present only when set.
 */
function runOptions(
  interceptors: Interceptor[] | undefined,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
): { interceptors?: Interceptor[]; signal?: AbortSignal; timeoutMs?: number } {
  return {
    ...(interceptors !== undefined ? { interceptors } : {}),
    ...(signal !== undefined ? { signal } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  };
}

/**
 * followSignal returns a signal that follows the caller's, but aborts with
 * DeadlineExceeded where the caller's aborts with a TimeoutError
 * (AbortSignal.timeout), which runUnaryCall and runStreamingCall would
 * turn into Canceled. Call stop once the call is over, so that a
 * long-lived signal does not collect a listener per call.
 */
function followSignal(signal: AbortSignal | undefined): [AbortSignal | undefined, () => void] {
  if (signal === undefined) {
    return [undefined, () => undefined];
  }
  const ctl = new AbortController();
  const onAbort = (): void => {
    const reason: unknown = signal.reason;
    const timedOut = typeof reason === "object" && reason !== null && (reason as { name?: unknown }).name === "TimeoutError";
    ctl.abort(timedOut ? new ConnectError("the operation timed out", Code.DeadlineExceeded, undefined, undefined, reason) : reason);
  };
  if (signal.aborted) {
    onAbort();
  } else {
    signal.addEventListener("abort", onAbort, { once: true });
  }
  const stop = (): void => {
    signal.removeEventListener("abort", onAbort);
  };
  return [ctl.signal, stop];
}

/**
 * pump sends the request messages as the iterable yields them, then the
 * end of send; for a server-streaming method the one request is the whole
 * of it. It waits while the call's unsent bytes are over the high-water
 * mark, and stops when the call ends. An iterable that throws ends the
 * call with the error.
 */
async function pump<I extends DescMessage>(
  call: RpcStream<unknown>,
  input: AsyncIterable<MessageShape<I>>,
  serialize: (m: MessageShape<I>) => Uint8Array,
  single: boolean,
): Promise<void> {
  try {
    let sent = 0;
    for await (const m of input) {
      if (call.ended) {
        return;
      }
      if (single) {
        if (sent > 0) {
          throw new ConnectError(`protocol error: more than one request for a server-streaming method`, Code.Internal);
        }
        call.sendOnly(serialize(m));
      } else {
        call.send(serialize(m));
      }
      sent++;
      while (call.bufferedAmount > sendHighWaterMark && !call.ended) {
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    if (single && sent === 0) {
      throw new ConnectError("protocol error: missing request message", Code.Internal);
    }
    call.closeSend();
  } catch (e) {
    call.fail(ConnectError.from(e, Code.Internal));
  }
}
