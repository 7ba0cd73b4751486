// The same calls through each real client of the browser's gRPC protocols:
// @improbable-eng/grpc-web (its WebSocket transport, grpcwebproxy's
// grpc-websockets protocol, and its HTTP transport, gRPC-Web), nice-grpc-web
// (the same two), Google's grpc-web (gRPC-Web, text and binary) and
// @connectrpc/connect-web (Connect and gRPC-Web). Every scenario returns a
// Result, so that one table of expectations (web/compat_test.go,
// web/test/compat.test.ts) holds for every client.

// @improbable-eng/grpc-web is CommonJS whose exports Node cannot name:
// take grpc from the default import, which works in bundles too.
import improbableGrpcWeb from "@improbable-eng/grpc-web";
import type { grpc as Grpc } from "@improbable-eng/grpc-web";
import { ClientError, createChannel, createClient as createNiceClient, Metadata, type WebsocketTransport } from "nice-grpc-web";
import { Code, ConnectError, createClient as createConnectClient, type Transport as ConnectTransport } from "@connectrpc/connect";
import { create, type DescMethodUnary } from "@bufbuild/protobuf";
import { GrpcWebClientBase, MethodDescriptor, MethodType, type RpcError } from "grpc-web";
import {
  EchoRequestSchema,
  EchoResponseSchema,
  EchoService as EchoServiceSchema,
  TickerRequestSchema,
} from "../src/gen/examples/echo/v1/echo_pb.js";
import {
  BidiRequest,
  EchoRequest,
  EchoResponse,
  EchoService,
  TickerRequest,
  TickerResponse,
  UploadRequest,
  type JspbClass,
  type JspbMessage,
} from "./echo_pb_service.js";
import type { DescMessage } from "@bufbuild/protobuf";

/** What one call saw, the same for every client. */
export interface Result {
  /** The gRPC status code; -1 when the call was cancelled before its end. */
  code: number;
  message: string;
  /** The responses: Echo's message, Ticker's index, Upload's "messages/bytes", Bidi's "message#index". */
  responses: string[];
  /** x-echo-from in the response headers and in the trailers, "" if absent. */
  header: string;
  trailer: string;
}

export interface Scenarios {
  unary(): Promise<Result>;
  serverStream(): Promise<Result>;
  /** Client-streaming and bidi exist only over WebSocket. */
  clientStream?(): Promise<Result>;
  bidi?(): Promise<Result>;
  fail(): Promise<Result>;
  failStream(): Promise<Result>;
  unknown(): Promise<Result>;
  /** An endless ticker, cancelled by the client after two messages. */
  cancel(): Promise<Result>;
  /** An Echo delayed by a minute, with a deadline of 300 ms. */
  deadline(): Promise<Result>;
}

export const failMessage = "nicht gefunden: Straße ✗ 見つかりません 100%";
const utf8 = new TextEncoder();

function result(): Result {
  return { code: -1, message: "", responses: [], header: "", trailer: "" };
}

/** format turns any response message of the echo service into a string. */
function format(m: { $typeName: string } & Record<string, unknown>): string {
  switch (m.$typeName) {
    case "examples.echo.v1.TickerResponse":
      return String(m["index"]);
    case "examples.echo.v1.UploadResponse":
      return `${m["messages"]}/${m["bytes"]}`;
    case "examples.echo.v1.BidiResponse":
      return `${m["message"]}#${m["index"]}`;
  }
  return String(m["message"]);
}

function formatJspb(m: JspbMessage<DescMessage>): string {
  return format(m.msg as unknown as { $typeName: string } & Record<string, unknown>);
}

/** A queue of results, for calls that must wait for one answer before the next request. */
class Waiter {
  private waiting: (() => void)[] = [];
  private count = 0;
  notify() {
    this.count++;
    this.waiting.shift()?.();
  }
  next(): Promise<void> {
    if (this.count > 0) {
      this.count--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(() => { this.count--; resolve(); }));
  }
}

// ---- @improbable-eng/grpc-web ----

const { grpc } = improbableGrpcWeb;

/** improbable-eng's transports: grpcwebproxy's WebSocket protocol, and gRPC-Web over fetch or XHR. */
export const improbableTransports = {
  websocket: (): Grpc.TransportFactory => grpc.WebsocketTransport(),
  http: (): Grpc.TransportFactory => grpc.CrossBrowserHttpTransport({ withCredentials: false }),
};

/**
 * Scenarios through @improbable-eng/grpc-web with transport, against host
 * ("http://127.0.0.1:PORT"). id goes in x-echo-from, which the backend
 * echoes in its headers and trailers, and in x-test-id.
 */
export function improbable(host: string, transport: Grpc.TransportFactory, id: string, streaming: boolean): Scenarios {
  const metadata = { "x-echo-from": id, "x-test-id": id };
  const first = (md: Grpc.Metadata) => md.get("x-echo-from")[0] ?? "";

  function invoke<M extends Grpc.MethodDefinition<Grpc.ProtobufMessage, Grpc.ProtobufMessage>>(
    desc: M, request: Grpc.ProtobufMessage, extra: Record<string, string> = {}, cancelAfter = 0,
  ): Promise<Result> {
    return new Promise((resolve) => {
      const r = result();
      const call = grpc.invoke(desc, {
        host, transport, request,
        metadata: { ...metadata, ...extra },
        onHeaders: (h) => { r.header = first(h); },
        onMessage: (m) => {
          r.responses.push(formatJspb(m as JspbMessage<DescMessage>));
          if (cancelAfter > 0 && r.responses.length === cancelAfter) {
            call.close();
            resolve({ ...r, responses: [...r.responses] });
          }
        },
        onEnd: (code, message, trailers) => {
          r.code = code;
          r.message = message;
          r.trailer = first(trailers);
          resolve(r);
        },
      });
    });
  }

  const s: Scenarios = {
    unary: () => new Promise((resolve) => {
      grpc.unary(EchoService.Echo, {
        host, transport, metadata,
        request: new EchoRequest({ message: "grüß dich ✓" }),
        onEnd: (out) => {
          const r = result();
          r.code = out.status;
          r.message = out.statusMessage;
          if (out.message) r.responses.push(formatJspb(out.message as JspbMessage<DescMessage>));
          r.header = first(out.headers);
          r.trailer = first(out.trailers);
          resolve(r);
        },
      });
    }),
    serverStream: () => invoke(EchoService.Ticker, new TickerRequest({ message: "t", count: 3 })),
    fail: () => invoke(EchoService.Echo, new EchoRequest({ fail: { code: 5, message: failMessage } })),
    failStream: () => invoke(EchoService.Ticker, new TickerRequest({ count: 2, fail: { code: 9, message: "à la fin" } })),
    unknown: () => invoke(EchoService.Nope, new EchoRequest({ message: "x" })),
    cancel: () => invoke(EchoService.Ticker, new TickerRequest({ count: 0, interval: { nanos: 20_000_000 } }), {}, 2),
    deadline: () => invoke(EchoService.Echo, new EchoRequest({ delay: { seconds: 60n } }), { "grpc-timeout": "300m" }),
  };
  if (!streaming) {
    return s;
  }

  // grpc.client: the API for client-streaming and bidi calls.
  function client<M extends Grpc.MethodDefinition<Grpc.ProtobufMessage, Grpc.ProtobufMessage>>(desc: M) {
    const r = result();
    const got = new Waiter();
    const c = grpc.client(desc, { host, transport });
    c.onHeaders((h) => { r.header = first(h); });
    c.onMessage((m) => {
      r.responses.push(formatJspb(m as JspbMessage<DescMessage>));
      got.notify();
    });
    const end = new Promise<Result>((resolve) => c.onEnd((code, message, trailers) => {
      r.code = code;
      r.message = message;
      r.trailer = first(trailers);
      resolve(r);
    }));
    c.start(metadata);
    return { c, got, end };
  }
  s.clientStream = () => {
    const { c, end } = client(EchoService.Upload);
    for (const chunk of ["a", "bb", "ccc"]) c.send(new UploadRequest({ chunk: utf8.encode(chunk) }));
    c.finishSend();
    return end;
  };
  s.bidi = async () => {
    const { c, got, end } = client(EchoService.Bidi);
    for (const m of ["one", "two 👋"]) {
      c.send(new BidiRequest({ message: m }));
      await got.next(); // each answer before the next request: a real conversation
    }
    c.finishSend();
    return end;
  };
  return s;
}

// ---- nice-grpc-web ----

type NiceTransport = ReturnType<typeof WebsocketTransport>;

/** Scenarios through nice-grpc-web with transport, against url. */
export function nice(url: string, transport: NiceTransport, id: string, streaming: boolean): Scenarios {
  const client = createNiceClient(EchoService, createChannel(url, transport));
  async function run(f: (r: Result, opts: { metadata: Metadata; onHeader(h: Metadata): void; onTrailer(t: Metadata): void }) => Promise<void>, extra: Record<string, string> = {}): Promise<Result> {
    const r = result();
    const opts = {
      metadata: Metadata({ "x-echo-from": id, "x-test-id": id, ...extra }),
      onHeader: (h: Metadata) => { r.header = h.get("x-echo-from") ?? ""; },
      onTrailer: (t: Metadata) => { r.trailer = t.get("x-echo-from") ?? ""; },
    };
    try {
      await f(r, opts);
      r.code = r.code === -1 && r.message === "cancelled" ? -1 : 0;
    } catch (e) {
      if (!(e instanceof ClientError)) throw e;
      r.code = e.code;
      r.message = e.details;
    }
    return r;
  }
  const s: Scenarios = {
    unary: () => run(async (r, opts) => {
      r.responses.push(formatJspb(await client.echo(new EchoRequest({ message: "grüß dich ✓" }), opts)));
    }),
    serverStream: () => run(async (r, opts) => {
      for await (const m of client.ticker(new TickerRequest({ message: "t", count: 3 }), opts)) r.responses.push(formatJspb(m));
    }),
    fail: () => run(async (r, opts) => {
      r.responses.push(formatJspb(await client.echo(new EchoRequest({ fail: { code: 5, message: failMessage } }), opts)));
    }),
    failStream: () => run(async (r, opts) => {
      for await (const m of client.ticker(new TickerRequest({ count: 2, fail: { code: 9, message: "à la fin" } }), opts)) r.responses.push(formatJspb(m));
    }),
    unknown: () => run(async (r, opts) => {
      r.responses.push(formatJspb(await client.nope(new EchoRequest({ message: "x" }), opts)));
    }),
    cancel: () => run(async (r, opts) => {
      // An AbortSignal cancels a call. (Leaving the loop early closes a
      // WebSocket, but leaves a fetch running.)
      const abort = new AbortController();
      try {
        for await (const m of client.ticker(new TickerRequest({ count: 0, interval: { nanos: 20_000_000 } }), { ...opts, signal: abort.signal })) {
          r.responses.push(formatJspb(m));
          if (r.responses.length === 2) {
            abort.abort(); // cancels the call; the break drops a message already buffered
            break;
          }
        }
      } catch (e) {
        if (!(e instanceof Error && e.name === "AbortError")) throw e;
      }
      r.message = "cancelled";
    }),
    deadline: () => run(async (r, opts) => {
      r.responses.push(formatJspb(await client.echo(new EchoRequest({ delay: { seconds: 60n } }), opts)));
    }, { "grpc-timeout": "300m" }),
  };
  if (streaming) {
    s.clientStream = () => run(async (r, opts) => {
      async function* chunks() {
        for (const c of ["a", "bb", "ccc"]) yield new UploadRequest({ chunk: utf8.encode(c) });
      }
      r.responses.push(formatJspb(await client.upload(chunks(), opts)));
    });
    s.bidi = () => run(async (r, opts) => {
      const got = new Waiter();
      async function* requests() {
        for (const m of ["one", "two 👋"]) {
          yield new BidiRequest({ message: m });
          await got.next(); // each answer before the next request
        }
      }
      for await (const m of client.bidi(requests(), opts)) {
        r.responses.push(formatJspb(m));
        got.notify();
      }
    });
  }
  return s;
}

// ---- @connectrpc/connect-web ----

/** Scenarios through @connectrpc/connect with a connect-web transport. */
export function connect(transport: ConnectTransport, id: string): Scenarios {
  const client = createConnectClient(EchoServiceSchema, transport);
  async function run(f: (r: Result, opts: { headers: Record<string, string>; onHeader(h: Headers): void; onTrailer(t: Headers): void; timeoutMs?: number }) => Promise<void>, timeoutMs?: number): Promise<Result> {
    const r = result();
    const opts = {
      headers: { "x-echo-from": id, "x-test-id": id },
      onHeader: (h: Headers) => { r.header = h.get("x-echo-from") ?? ""; },
      onTrailer: (t: Headers) => { r.trailer = t.get("x-echo-from") ?? ""; },
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    };
    try {
      await f(r, opts);
      r.code = r.message === "cancelled" ? -1 : 0;
    } catch (e) {
      const ce = ConnectError.from(e);
      r.code = ce.code;
      r.message = ce.rawMessage;
      // Errors carry the headers and the trailers as their metadata.
      r.trailer ||= ce.metadata.get("x-echo-from")?.split(", ")[0] ?? "";
    }
    return r;
  }
  // A method the service does not have: the real transport, a descriptor
  // made from Echo's with another name.
  const nope: DescMethodUnary<typeof EchoRequestSchema, typeof EchoResponseSchema> = { ...EchoServiceSchema.method.echo, name: "Nope" };
  return {
    unary: () => run(async (r, opts) => {
      r.responses.push(format(await client.echo({ message: "grüß dich ✓" }, opts)));
    }),
    serverStream: () => run(async (r, opts) => {
      for await (const m of client.ticker({ message: "t", count: 3 }, opts)) r.responses.push(format(m));
    }),
    fail: () => run(async (r, opts) => {
      r.responses.push(format(await client.echo({ fail: { code: 5, message: failMessage } }, opts)));
    }),
    failStream: () => run(async (r, opts) => {
      for await (const m of client.ticker({ count: 2, fail: { code: 9, message: "à la fin" } }, opts)) r.responses.push(format(m));
    }),
    unknown: () => run(async (r, opts) => {
      const res = await transport.unary(nope, undefined, undefined, opts.headers, create(EchoRequestSchema, { message: "x" }));
      r.responses.push(format(res.message));
    }),
    cancel: () => run(async (r, opts) => {
      const abort = new AbortController();
      try {
        for await (const m of client.ticker({ count: 0, interval: { nanos: 20_000_000 } }, { ...opts, signal: abort.signal })) {
          r.responses.push(format(m));
          if (r.responses.length === 2) {
            abort.abort(); // cancels the call; the break drops a message already buffered
            break;
          }
        }
      } catch (e) {
        if (ConnectError.from(e).code !== Code.Canceled) throw e;
      }
      r.message = "cancelled";
    }),
    deadline: () => run(async (r, opts) => {
      r.responses.push(format(await client.echo({ delay: { seconds: 60n } }, opts)));
    }, 300),
  };
}

// ---- grpc-web (Google's) ----

/**
 * Scenarios through Google's grpc-web client, in its "text" mode (base64,
 * the default of its code generator) or "binary" mode, with method
 * descriptors written as protoc-gen-grpc-web writes them.
 */
export function google(host: string, format: "text" | "binary", id: string): Scenarios {
  const client = new GrpcWebClientBase({ format });
  const metadata = { "x-echo-from": id, "x-test-id": id };
  function desc<Req extends DescMessage, Res extends DescMessage>(name: string, type: string, req: JspbClass<Req>, res: JspbClass<Res>) {
    return new MethodDescriptor<JspbMessage<Req>, JspbMessage<Res>>(
      `/examples.echo.v1.EchoService/${name}`, type,
      // Only used as the types' names: grpc-web calls the functions below.
      req as unknown as new (...args: unknown[]) => JspbMessage<Req>,
      res as unknown as new (...args: unknown[]) => JspbMessage<Res>,
      (m: JspbMessage<Req>) => m.serializeBinary(), res.deserializeBinary);
  }
  const echo = desc("Echo", MethodType.UNARY, EchoRequest, EchoResponse);
  const nope = desc("Nope", MethodType.UNARY, EchoRequest, EchoResponse);
  const ticker = desc("Ticker", MethodType.SERVER_STREAMING, TickerRequest, TickerResponse);

  function unary(d: typeof echo, req: JspbMessage<typeof EchoRequestSchema>, extra: Record<string, string> = {}): Promise<Result> {
    return new Promise((resolve) => {
      const r = result();
      const call = client.rpcCall(host + d.getName(), req, { ...metadata, ...extra }, d, (err: RpcError | null, res) => {
        if (err) {
          r.code = err.code;
          r.message = err.message;
          r.trailer ||= err.metadata?.["x-echo-from"] ?? "";
        } else {
          r.code = 0;
          r.responses.push(formatJspb(res as JspbMessage<DescMessage>));
        }
        setTimeout(() => resolve(r), 0); // after the status event
      });
      call.on("metadata", (h) => { r.header = h["x-echo-from"] ?? ""; });
      call.on("status", (st) => { r.trailer = st.metadata?.["x-echo-from"] ?? r.trailer; });
    });
  }
  function stream(req: JspbMessage<typeof TickerRequestSchema>, cancelAfter = 0): Promise<Result> {
    return new Promise((resolve) => {
      const r = result();
      const call = client.serverStreaming(host + ticker.getName(), req, metadata, ticker);
      call.on("metadata", (h) => { r.header = h["x-echo-from"] ?? ""; });
      call.on("data", (m) => {
        r.responses.push(formatJspb(m as JspbMessage<DescMessage>));
        if (cancelAfter > 0 && r.responses.length === cancelAfter) {
          call.cancel();
          resolve({ ...r, responses: [...r.responses] });
        }
      });
      call.on("status", (st) => {
        r.code = st.code;
        r.message = st.details;
        r.trailer = st.metadata?.["x-echo-from"] ?? "";
      });
      call.on("error", (err) => {
        r.code = err.code;
        r.message = err.message;
        resolve(r);
      });
      call.on("end", () => resolve(r));
    });
  }
  return {
    unary: () => unary(echo, new EchoRequest({ message: "grüß dich ✓" })),
    serverStream: () => stream(new TickerRequest({ message: "t", count: 3 })),
    fail: () => unary(echo, new EchoRequest({ fail: { code: 5, message: failMessage } })),
    failStream: () => stream(new TickerRequest({ count: 2, fail: { code: 9, message: "à la fin" } })),
    unknown: () => unary(nope, new EchoRequest({ message: "x" })),
    cancel: () => stream(new TickerRequest({ count: 0, interval: { nanos: 20_000_000 } }), 2),
    // grpc-web's own deadline: metadata "deadline", in ms since the epoch.
    deadline: () => unary(echo, new EchoRequest({ delay: { seconds: 60n } }), { deadline: String(Date.now() + 300) }),
  };
}
