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
import { Call } from "./call.js";
import type { WebSocketConstructor } from "./call.js";
import { bearerSubprotocol, encodeTimeout, requestWire } from "./metadata.js";
import { jsonSuffix, routeName, webSocketURL } from "./protocol.js";

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
}

/**
 * While more than this many bytes wait to be sent on a call's socket, the
 * transport stops reading its request iterable, so a large upload keeps a
 * bounded amount in memory.
 */
const sendHighWaterMark = 1 << 20;

/**
 * createGrpcwsTransport returns a Transport of @connectrpc/connect that
 * calls through a grpcws bridge, one WebSocket per call, so that a client
 * made with createClient runs every kind of method, client-streaming and
 * bidi included, in browsers and in Node:
 *
 * ```ts
 * const transport = createGrpcwsTransport({ baseUrl: "wss://api.example.com/" });
 * const client = createClient(ChatService, transport);
 * ```
 *
 * Request headers travel as v1 metadata (docs/protocol.md, section 2): an
 * "authorization: Bearer" header in the subprotocol list, every other
 * header in the URL's query string. Errors are ConnectErrors; one that
 * came from the bridge's close code rather than the backend's status has
 * a WebSocketClose as its cause (see closeCodeOf).
 *
 * The transport holds no connection and no state: it is cheap, and safe
 * to share.
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

  /** start opens the WebSocket of one call, from the request as the interceptors left it. */
  const start = <O>(
    method: DescMethodUnary | DescMethodStreaming,
    req: { readonly url: string; readonly header: Headers; readonly signal: AbortSignal },
    timeoutMs: number | undefined,
    parse: (data: Uint8Array) => O,
  ): Call<O> => {
    const wire = requestWire(req.header);
    const query = wire.query;
    if (timeoutMs !== undefined) {
      query.push(["grpc-timeout", encodeTimeout(timeoutMs)]);
    }
    const protocols = [routeName(method) + (useBinaryFormat ? "" : jsonSuffix)];
    if (wire.token !== undefined && wire.token !== "") {
      protocols.push(bearerSubprotocol(wire.token));
    }
    return new Call({
      url: webSocketURL(req.url, query),
      protocols,
      WebSocket,
      methodName: method.name,
      streamingOutput: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      json: !useBinaryFormat,
      parse,
      signal: req.signal,
    });
  };

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
 * of it. It waits while the socket's send buffer is over the high-water
 * mark, and stops when the call ends. An iterable that throws ends the
 * call with the error.
 */
async function pump<I extends DescMessage>(
  call: Call<unknown>,
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
