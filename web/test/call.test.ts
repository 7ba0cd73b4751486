// The client's state machine of protocol v1 (multiplex: false) against a
// scripted WebSocket, through the transport and connect-es's createClient:
// the handshake, the order of frames, protocol errors, cancellation, what
// is sent when. mux.test.ts does the same for grpcws.mux.v1.

import assert from "node:assert/strict";
import { getEventListeners } from "node:events";
import { beforeEach, describe, it } from "node:test";
import { create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Interceptor } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { WebSocketClose, closeCodeOf, createGrpcwsTransport } from "../src/index.js";
import type { GrpcwsTransportOptions, WebSocketLike } from "../src/index.js";
import { bearerSubprotocol, encodeBase64 } from "../src/metadata.js";
import {
  BidiRequestSchema,
  BidiResponseSchema,
  EchoResponseSchema,
  EchoService,
  FailureSchema,
  TickerRequestSchema,
  TickerResponseSchema,
  UploadRequestSchema,
  UploadResponseSchema,
} from "../src/gen/examples/echo/v1/echo_pb.js";

interface Event {
  readonly data: unknown;
  readonly code: number;
  readonly reason: string;
}
type Listener = (event: Event) => void;

/** FakeSocket records what the client does and lets a test play the bridge. */
class FakeSocket implements WebSocketLike {
  static last: FakeSocket | undefined;
  binaryType = "blob";
  readyState = 0;
  bufferedAmount = 0;
  readonly sent: (string | Uint8Array)[] = [];
  closedWith: { code: number | undefined; reason: string | undefined } | undefined;
  private readonly listeners = new Map<string, Listener[]>();

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeSocket.last = this;
  }

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  send(data: string | Uint8Array): void {
    assert.equal(this.readyState, 1, "send before open");
    this.sent.push(data);
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }

  // The bridge's side.
  open(): void {
    this.readyState = 1;
    this.emit("open", {});
  }
  control(json: string): void {
    this.emit("message", { data: "#" + json });
  }
  binary(bytes: Uint8Array): void {
    const copy = bytes.slice().buffer;
    this.emit("message", { data: copy });
  }
  text(s: string): void {
    this.emit("message", { data: s });
  }
  end(code = 0, message = "", trailers = "{}"): void {
    this.control(`{"end":{"status":{"code":${String(code)},"message":${JSON.stringify(message)},"details":[]},"trailers":{"entries":${trailers}}}}`);
  }
  closed(code: number, reason = ""): void {
    this.readyState = 3;
    this.emit("close", { code, reason });
  }
  private emit(type: string, event: Partial<Event>): void {
    for (const l of this.listeners.get(type) ?? []) l({ data: undefined, code: 0, reason: "", ...event });
  }
}

/**
 * SlowSocket is a FakeSocket on a network slower than the client: what it
 * is given stays in bufferedAmount until the test drains it.
 */
class SlowSocket extends FakeSocket {
  override send(data: string | Uint8Array): void {
    super.send(data);
    this.bufferedAmount += data.length;
  }
  drain(): void {
    this.bufferedAmount = 0;
  }
}

const baseUrl = "http://bridge.example/api";

function transport(opts: Partial<GrpcwsTransportOptions> = {}) {
  return createGrpcwsTransport({ baseUrl, WebSocket: FakeSocket, multiplex: false, ...opts });
}

const client = createClient(EchoService, transport());

beforeEach(() => {
  FakeSocket.last = undefined;
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** until waits for cond to hold, and fails after two seconds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 2000; !cond(); ) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(1);
  }
}

/** socket waits for the call just started to open its WebSocket (the transport starts it a few ticks later). */
async function socket(): Promise<FakeSocket> {
  await until(() => FakeSocket.last !== undefined, "a socket");
  const s = FakeSocket.last;
  assert.ok(s);
  return s;
}

/** rejects asserts that p rejects with a ConnectError and returns it. */
async function rejects(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ConnectError, String(e));
    return e;
  }
  assert.fail("resolved; want a ConnectError");
}

/** collect reads a response stream to its end. */
async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

const endSend = '#{"endSend":{}}';

type BidiInit = MessageInitShape<typeof BidiRequestSchema>;
type UploadInit = MessageInitShape<typeof UploadRequestSchema>;

describe("the handshake", () => {
  it("offers the route and the token, puts headers and the deadline in the query", async () => {
    const p = createClient(EchoService, transport({ token: "tok" })).echo({}, { headers: { "X-Call": "2" }, timeoutMs: 1500 });
    const s = await socket();
    assert.equal(s.url, "ws://bridge.example/api?x-call=2&grpc-timeout=1500000u");
    assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo", "base64url.bearer.grpcws.dG9r"]);
    assert.equal(s.binaryType, "arraybuffer");
    s.closed(1006);
    assert.equal((await rejects(p)).code, Code.Unavailable);
  });

  it("offers no token entry without a token", async () => {
    const p = client.echo({});
    const s = await socket();
    assert.equal(s.url, "ws://bridge.example/api");
    assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo"]);
    s.closed(1006);
    await rejects(p);
  });

  it("an authorization: Bearer header travels in the subprotocol list, never in the URL, and wins over the token option", async () => {
    const c = createClient(EchoService, transport({ token: "from-option" }));
    const p = c.echo({}, { headers: { Authorization: "Bearer from-header", "x-a": "1" } });
    const s = await socket();
    assert.equal(s.url, "ws://bridge.example/api?x-a=1");
    assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo", bearerSubprotocol("from-header")]);
    s.closed(1006);
    await rejects(p);
  });

  it("a token function is read as each call starts", async () => {
    let current: string | undefined = "one";
    const c = createClient(EchoService, transport({ token: async () => current }));
    for (const [token, entries] of [
      ["one", [bearerSubprotocol("one")]],
      ["two", [bearerSubprotocol("two")]],
      [undefined, []],
    ] as const) {
      FakeSocket.last = undefined;
      current = token;
      const p = c.echo({});
      const s = await socket();
      assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo", ...entries], String(token));
      s.closed(1006);
      await rejects(p);
    }
  });

  it("refuses an authorization header that is not a bearer token, and opens no socket", async () => {
    const err = await rejects(client.echo({}, { headers: { authorization: "Basic dXNlcjpwdw==" } }));
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.message, /Bearer/);
    await sleep(5);
    assert.equal(FakeSocket.last, undefined);
  });

  it("defaultTimeoutMs is the deadline of a call that sets none; timeoutMs 0 means none", async () => {
    const c = createClient(EchoService, transport({ defaultTimeoutMs: 2000 }));
    const p1 = c.echo({});
    const s1 = await socket();
    assert.equal(s1.url, "ws://bridge.example/api?grpc-timeout=2000000u");
    s1.closed(1006);
    await rejects(p1);

    FakeSocket.last = undefined;
    const p2 = c.echo({}, { timeoutMs: 250 });
    const s2 = await socket();
    assert.equal(s2.url, "ws://bridge.example/api?grpc-timeout=250000u");
    s2.closed(1006);
    await rejects(p2);

    FakeSocket.last = undefined;
    const p3 = c.echo({}, { timeoutMs: 0 });
    const s3 = await socket();
    assert.equal(s3.url, "ws://bridge.example/api");
    s3.closed(1006);
    await rejects(p3);
  });

  it("offers +json without the binary format", async () => {
    const p = createClient(EchoService, transport({ useBinaryFormat: false })).echo({});
    const s = await socket();
    assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo+json"]);
    s.closed(1006);
    await rejects(p);
  });

  it("an aborted signal opens no socket", async () => {
    const ctl = new AbortController();
    ctl.abort();
    assert.equal((await rejects(client.echo({}, { signal: ctl.signal }))).code, Code.Canceled);
    await sleep(5);
    assert.equal(FakeSocket.last, undefined);
  });
});

describe("unary", () => {
  it("sends one binary frame after open and no endSend; resolves at the end frame", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const p = client.echo({ message: "hi" }, { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
    const s = await socket();
    assert.deepEqual(s.sent, [], "nothing before open");
    s.open();
    assert.equal(s.sent.length, 1);
    assert.deepEqual(s.sent[0], new Uint8Array([0x0a, 0x02, 0x68, 0x69]));
    s.control('{"headers":{"entries":{"x":{"values":["y"]}}}}');
    s.binary(toBinary(EchoResponseSchema, create(EchoResponseSchema, { message: "hi" })));
    s.end(0, "", '{"t":{"values":["1","2"]}}');
    assert.equal((await p).message, "hi");
    assert.equal(header?.get("x"), "y");
    assert.equal(trailer?.get("t"), "1, 2");
    assert.equal(s.closedWith, undefined, "the bridge closes, not the client");
    assert.equal(s.sent.length, 1, "no endSend");
  });

  it("an end with an error status wins over the close code", async () => {
    const detail = toBinary(FailureSchema, create(FailureSchema, { code: 5, message: "why" }));
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.control(
      `{"end":{"status":{"code":5,"message":"nicht gefunden ✗","details":[` +
        `{"typeUrl":"type.googleapis.com/a.B","value":"AQ=="},` +
        `{"typeUrl":"type.googleapis.com/examples.echo.v1.Failure","value":"${encodeBase64(detail)}"}` +
        `]},"trailers":{"entries":{"t":{"values":["1"]}}}}}`,
    );
    s.closed(4005, "nicht gefunden ✗");
    const err = await rejects(p);
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.rawMessage, "nicht gefunden ✗");
    assert.equal(err.message, "[not_found] nicht gefunden ✗");
    assert.equal(closeCodeOf(err), undefined);
    assert.equal(err.metadata.get("t"), "1");
    assert.deepEqual(err.details, [
      { type: "a.B", value: new Uint8Array([1]) },
      { type: "examples.echo.v1.Failure", value: detail },
    ]);
    const found = err.findDetails(FailureSchema);
    assert.equal(found.length, 1);
    assert.equal(found[0]?.message, "why");
    assert.equal(s.closedWith, undefined);
  });

  it("a close without an end frame maps the close code", async () => {
    const p = client.echo({});
    (await socket()).closed(4007, 'grpcws: origin "https://evil.example" not allowed');
    const err = await rejects(p);
    assert.equal(err.code, Code.PermissionDenied);
    assert.equal(err.rawMessage, 'grpcws: origin "https://evil.example" not allowed');
    assert.equal(closeCodeOf(err), 4007);
    assert.ok(err.cause instanceof WebSocketClose);
    assert.equal(err.cause.code, 4007);
    assert.equal(err.cause.reason, 'grpcws: origin "https://evil.example" not allowed');
  });

  it("a dropped connection is Unavailable with close code 1006", async () => {
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.closed(1006);
    const err = await rejects(p);
    assert.equal(err.code, Code.Unavailable);
    assert.equal(closeCodeOf(err), 1006);
  });

  it("OK without a response is a protocol error", async () => {
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.end(0, "", '{"t":{"values":["1"]}}');
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /protocol error: no response/);
    assert.equal(err.metadata.get("t"), "1");
    assert.equal(closeCodeOf(err), undefined);
  });

  it("two responses are a protocol error, and the client closes", async () => {
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.binary(new Uint8Array());
    s.binary(new Uint8Array());
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /a second response/);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("a text message in the binary format is a protocol error", async () => {
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.text('{"message":"hi"}');
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /protocol error/);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("a malformed control frame is a protocol error; an unknown one is skipped", async () => {
    const p = client.echo({});
    const s = await socket();
    s.open();
    s.control('{"later":{}}');
    s.binary(new Uint8Array());
    s.control("{nope");
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /bad control frame/);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("aborting closes the socket with 4001 and rejects with Canceled; later events change nothing", async () => {
    const ctl = new AbortController();
    const p = client.echo({}, { signal: ctl.signal });
    const s = await socket();
    s.open();
    ctl.abort(new Error("user left"));
    assert.equal(s.closedWith?.code, 4001);
    s.binary(toBinary(EchoResponseSchema, create(EchoResponseSchema, { message: "late" })));
    s.end();
    s.closed(1000);
    const err = await rejects(p);
    assert.equal(err.code, Code.Canceled);
    assert.equal((err.cause as Error).message, "user left");
  });

  it("AbortSignal.timeout gives DeadlineExceeded", async () => {
    const p = rejects(client.echo({}, { signal: AbortSignal.timeout(1) }));
    const s = await socket();
    assert.equal((await p).code, Code.DeadlineExceeded);
    assert.equal(s.closedWith?.code, 4004);
  });

  it("a long-lived signal keeps no listener of a call that ended", async () => {
    const page = new AbortController();
    const p = client.echo({}, { signal: page.signal });
    const s = await socket();
    assert.ok(getEventListeners(page.signal, "abort").length > 0);
    s.open();
    s.binary(toBinary(EchoResponseSchema, create(EchoResponseSchema, { message: "ok" })));
    s.end();
    await p;
    FakeSocket.last = undefined;
    const stream = client.ticker({}, { signal: page.signal });
    const s2 = await socket();
    s2.closed(4014, "down");
    await rejects(collect(stream));
    assert.equal(getEventListeners(page.signal, "abort").length, 0);
  });

  it("timeoutMs fails locally with DeadlineExceeded and closes with 4004", async () => {
    const p = client.echo({}, { timeoutMs: 5 });
    const s = await socket();
    assert.match(s.url, /[?&]grpc-timeout=5000000n$/);
    s.open();
    assert.equal((await rejects(p)).code, Code.DeadlineExceeded);
    assert.equal(s.closedWith?.code, 4004);
  });

  it("a request that cannot be serialized rejects, and opens no socket", async () => {
    const err = await rejects(client.echo({ fail: { code: 2 ** 40 } })); // not an int32
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /serialize/);
    await sleep(5);
    assert.equal(FakeSocket.last, undefined);
  });
});

describe("interceptors", () => {
  it("a header set by an interceptor goes in the query; one can read the response's header and trailer", async () => {
    const seen: (string | null)[] = [];
    const addHeader: Interceptor = (next) => (req) => {
      req.header.set("x-added", "by interceptor");
      return next(req);
    };
    const readResponse: Interceptor = (next) => async (req) => {
      const res = await next(req);
      if (!res.stream) {
        seen.push(res.header.get("h"), res.trailer.get("t"));
      }
      return res;
    };
    const c = createClient(EchoService, transport({ interceptors: [addHeader, readResponse] }));
    const p = c.echo({ message: "x" }, { headers: { "x-call": "1" } });
    const s = await socket();
    assert.equal(s.url, "ws://bridge.example/api?x-added=by+interceptor&x-call=1");
    s.open();
    s.control('{"headers":{"entries":{"h":{"values":["hv"]}}}}');
    s.binary(toBinary(EchoResponseSchema, create(EchoResponseSchema, { message: "x" })));
    s.end(0, "", '{"t":{"values":["tv"]}}');
    assert.equal((await p).message, "x");
    assert.deepEqual(seen, ["hv", "tv"]);
  });

  it("an interceptor that sets a non-Bearer authorization is refused", async () => {
    const basic: Interceptor = (next) => (req) => {
      req.header.set("authorization", "Basic x");
      return next(req);
    };
    const err = await rejects(createClient(EchoService, transport({ interceptors: [basic] })).echo({}));
    assert.equal(err.code, Code.InvalidArgument);
    await sleep(5);
    assert.equal(FakeSocket.last, undefined);
  });
});

describe("streams", () => {
  it("server-streaming: one request, messages, then the end; headers empty without a headers frame; the trailer fills", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    const stream = client.ticker({ count: 2 }, { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
    const s = await socket();
    s.open();
    await until(() => s.sent.length > 0, "the request");
    for (const index of [1, 2]) {
      s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index })));
    }
    s.end(0, "", '{"t":{"values":["x"]}}');
    s.closed(1000);
    const got = await collect(stream);
    assert.deepEqual(
      got.map((r) => r.index),
      [1, 2],
    );
    assert.equal(s.sent.length, 1, "the request and no endSend");
    assert.equal(fromBinary(TickerRequestSchema, s.sent[0] as Uint8Array).count, 2);
    assert.deepEqual([...(header ?? [["missing", ""]])], []);
    assert.equal(trailer?.get("t"), "x");
    assert.equal(s.closedWith, undefined);
  });

  it("server-streaming: messages arrive as they come after the headers", async () => {
    const it = client.ticker({})[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    s.control('{"headers":{"entries":{}}}');
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 1 })));
    assert.equal((await it.next()).value?.index, 1);
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 2 })));
    assert.equal((await it.next()).value?.index, 2);
    s.end();
    assert.equal((await it.next()).done, true);
  });

  it("a headers frame after a message is a protocol error", async () => {
    const stream = client.ticker({});
    const s = await socket();
    s.open();
    s.binary(new Uint8Array());
    s.control('{"headers":{}}');
    const err = await rejects(collect(stream));
    assert.equal(err.code, Code.Internal, "a protocol error drops what was received");
    assert.match(err.message, /headers frame/);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("a stream that fails before its headers calls neither onHeader nor onTrailer", async () => {
    let called = false;
    const stream = client.ticker({}, { onHeader: () => (called = true), onTrailer: () => (called = true) });
    (await socket()).closed(1001);
    const err = await rejects(collect(stream));
    assert.equal(err.code, Code.Unavailable);
    assert.equal(closeCodeOf(err), 1001);
    assert.equal(called, false);
  });

  it("a stream's error status comes after the messages that preceded it", async () => {
    const it = client.ticker({})[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    s.control('{"headers":{"entries":{}}}');
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 1 })));
    s.end(14, "backend gone", '{"t":{"values":["z"]}}');
    s.closed(4014, "backend gone");
    assert.equal((await it.next()).value?.index, 1);
    const err = await rejects(it.next());
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.metadata.get("t"), "z");
    assert.equal(closeCodeOf(err), undefined);
  });

  it("client-streaming: queues before open, sends endSend, resolves the response", async () => {
    let header: Headers | undefined;
    let trailer: Headers | undefined;
    async function* chunks(): AsyncIterable<UploadInit> {
      yield { chunk: new Uint8Array([1]) };
      yield { chunk: new Uint8Array([2, 3]) };
    }
    const p = client.upload(chunks(), { onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) });
    const s = await socket();
    await sleep(10); // the requests are read and queued; FakeSocket.send asserts that nothing is sent before open
    s.open();
    assert.deepEqual(s.sent, [new Uint8Array([0x0a, 0x01, 0x01]), new Uint8Array([0x0a, 0x02, 0x02, 0x03]), endSend]);
    s.control('{"headers":{"entries":{"h":{"values":["1"]}}}}');
    s.binary(toBinary(UploadResponseSchema, create(UploadResponseSchema, { messages: 2n, bytes: 3n })));
    s.end(0, "", '{"t":{"values":["2"]}}');
    const res = await p;
    assert.equal(res.messages, 2n);
    assert.equal(res.bytes, 3n);
    assert.equal(header?.get("h"), "1");
    assert.equal(trailer?.get("t"), "2");
  });

  it("client-streaming: a large stream respects backpressure", async () => {
    const chunk = new Uint8Array(256 * 1024);
    const total = 24;
    let pulled = 0;
    async function* requests(): AsyncIterable<UploadInit> {
      for (let i = 0; i < total; i++) {
        pulled++;
        yield { chunk };
      }
    }
    const p = createClient(EchoService, transport({ WebSocket: SlowSocket })).upload(requests());
    const s = (await socket()) as SlowSocket;
    // Over 1 MiB waits to be sent: before open in the client's queue,
    // after it in the socket's buffer. At most a few chunks are pulled
    // past the mark, whatever the time given.
    const bound = 6;
    await sleep(40);
    assert.ok(pulled >= 1 && pulled <= bound, `pulled ${String(pulled)} before open`);
    s.open();
    const atOpen = pulled;
    assert.equal(s.sent.length, atOpen, "the queue is sent at open");
    assert.ok(s.bufferedAmount > 1 << 20, String(s.bufferedAmount));
    await sleep(40);
    assert.equal(pulled, atOpen, "nothing more pulled while the socket's buffer is full");
    s.drain();
    await until(() => pulled > atOpen, "the stream to resume");
    await sleep(40);
    assert.ok(pulled - atOpen <= bound, `pulled ${String(pulled - atOpen)} after a drain`);
    assert.ok(s.bufferedAmount > 1 << 20, String(s.bufferedAmount));
    await until(() => {
      s.drain();
      return s.sent.at(-1) === endSend;
    }, "the whole stream");
    assert.equal(pulled, total);
    assert.equal(s.sent.length, total + 1);
    assert.ok(s.sent.slice(0, total).every((f) => f instanceof Uint8Array && f.length === chunk.length + 4));
    s.binary(toBinary(UploadResponseSchema, create(UploadResponseSchema, { messages: BigInt(total), bytes: BigInt(total * chunk.length) })));
    s.end();
    assert.equal((await p).messages, BigInt(total));
  });

  it("bidi: sends as it goes, reads as it comes, ends with endSend", async () => {
    const requests = createWritableIterable<BidiInit>();
    const it = client.bidi(requests)[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    await requests.write({ message: "a" });
    assert.equal(s.sent.length, 1);
    assert.equal(fromBinary(BidiRequestSchema, s.sent[0] as Uint8Array).message, "a");
    s.control('{"headers":{"entries":{}}}');
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "a", index: 1n })));
    assert.equal((await it.next()).value?.message, "a");
    await requests.write({ message: "b" });
    assert.equal(fromBinary(BidiRequestSchema, s.sent[1] as Uint8Array).message, "b");
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "b", index: 2n })));
    assert.equal((await it.next()).value?.index, 2n);
    requests.close();
    await until(() => s.sent.length === 3, "endSend");
    assert.equal(s.sent[2], endSend);
    s.end();
    s.closed(1000);
    assert.equal((await it.next()).done, true);
    assert.equal(s.closedWith, undefined);
  });

  it("bidi: aborting the signal closes with 4001 (leaving the loop does not)", async () => {
    const ctl = new AbortController();
    const requests = createWritableIterable<BidiInit>();
    const stream = client.bidi(requests, { signal: ctl.signal });
    const s = await socket();
    s.open();
    await requests.write({ message: "a" });
    s.control('{"headers":{"entries":{}}}');
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "a", index: 1n })));
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "b", index: 2n })));
    for await (const r of stream) {
      assert.equal(r.message, "a");
      break;
    }
    // connect-es's response iterable has no return(): the call goes on
    // until its signal is aborted.
    assert.equal(s.closedWith?.code, undefined);
    ctl.abort();
    assert.equal(s.closedWith?.code, 4001);
    const err = await rejects(stream[Symbol.asyncIterator]().next());
    assert.equal(err.code, Code.Canceled);
    await assert.rejects(requests.write({ message: "dropped" }));
    assert.equal(s.sent.length, 1);
  });

  it("bidi in JSON: text frames both ways", async () => {
    const c = createClient(EchoService, transport({ useBinaryFormat: false }));
    async function* requests(): AsyncIterable<BidiInit> {
      yield { message: "hi", payload: new Uint8Array([1]) };
    }
    const stream = c.bidi(requests());
    const s = await socket();
    s.open();
    await until(() => s.sent.length === 2, "the request and endSend");
    assert.deepEqual(s.sent, ['{"message":"hi","payload":"AQ=="}', endSend]);
    s.text(toJsonString(BidiResponseSchema, create(BidiResponseSchema, { message: "hi", index: 1n })));
    s.text('{"message":"x","index":"2","fieldFromTheFuture":1}');
    s.end();
    const got = await collect(stream);
    assert.deepEqual(
      got.map((r) => `${r.message}${String(r.index)}`),
      ["hi1", "x2"],
    );
  });

  it("a stream whose AbortSignal.timeout fires ends with DeadlineExceeded", async () => {
    const stream = client.ticker({}, { signal: AbortSignal.timeout(100) });
    const s = await socket();
    s.open();
    s.control('{"headers":{"entries":{}}}');
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 1 })));
    const got: number[] = [];
    const alive = setTimeout(() => undefined, 5000); // the timer of AbortSignal.timeout does not keep Node running; a real socket would
    const err = await rejects(
      (async () => {
        for await (const r of stream) got.push(r.index);
      })(),
    );
    clearTimeout(alive);
    assert.deepEqual(got, [1]);
    assert.equal(err.code, Code.DeadlineExceeded);
    assert.equal(s.closedWith?.code, 4004);
  });

  it("a binary message in the JSON format is a protocol error", async () => {
    const c = createClient(EchoService, transport({ useBinaryFormat: false }));
    const stream = c.ticker({});
    const s = await socket();
    s.open();
    s.binary(new Uint8Array([1]));
    assert.equal((await rejects(collect(stream))).code, Code.Internal);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("a request iterable that throws ends the call with its error", async () => {
    async function* failing(): AsyncIterable<UploadInit> {
      yield { chunk: new Uint8Array([1]) };
      throw new ConnectError("disk gone", Code.DataLoss);
    }
    const p = rejects(client.upload(failing())); // it fails before open
    const s = await socket();
    const err = await p;
    assert.equal(err.code, Code.DataLoss);
    assert.equal(err.rawMessage, "disk gone");
    assert.equal(s.closedWith?.code, 4015);
    assert.ok(!s.sent.includes(endSend));
  });

  it("a request iterable that throws another error ends a bidi call with Internal", async () => {
    async function* failing(): AsyncIterable<BidiInit> {
      yield { message: "a" };
      await sleep(1);
      throw new Error("app bug");
    }
    const stream = client.bidi(failing());
    const s = await socket();
    s.open();
    const err = await rejects(collect(stream));
    assert.equal(err.code, Code.Internal);
    assert.equal(err.rawMessage, "app bug");
    assert.equal(s.closedWith?.code, 4013);
  });
});

describe("createGrpcwsTransport", () => {
  it("refuses a base URL no call could use", () => {
    assert.throws(() => createGrpcwsTransport({ baseUrl: "ftp://h/", WebSocket: FakeSocket }), /not ws:, wss:, http: or https:/);
    assert.throws(() => createGrpcwsTransport({ baseUrl: "ftp://h/", WebSocket: FakeSocket }), TypeError);
    assert.throws(() => createGrpcwsTransport({ baseUrl: "/relative", WebSocket: FakeSocket }), TypeError);
  });

  it("needs a WebSocket", () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      assert.throws(() => createGrpcwsTransport({ baseUrl: "ws://h/" }), TypeError);
      assert.throws(() => createGrpcwsTransport({ baseUrl: "ws://h/" }), /no WebSocket implementation/);
    } finally {
      if (saved !== undefined) g.WebSocket = saved;
    }
  });

  it("uses the global WebSocket when there is one", async () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    g.WebSocket = FakeSocket;
    try {
      const p = createClient(EchoService, createGrpcwsTransport({ baseUrl: "wss://h/" })).echo({});
      const s = await socket();
      assert.equal(s.url, "wss://h/");
      s.closed(1006);
      await rejects(p);
    } finally {
      if (saved === undefined) delete g.WebSocket;
      else g.WebSocket = saved;
    }
  });
});
