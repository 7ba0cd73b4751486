// The grpcws.mux.v1 client (the default, multiplex: true) against a
// scripted WebSocket that plays the bridge, through the transport and
// connect-es's createClient: what goes in which WebSocket message, flow
// control both ways, cancellation, GOAWAY, drops, TOKEN, and a bridge that
// breaks the protocol.

import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, it, mock } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { closeCodeOf, createGrpcwsTransport } from "../src/index.js";
import type { GrpcwsTransportOptions, WebSocketLike } from "../src/index.js";
import { bearerSubprotocol } from "../src/metadata.js";
import { idleTimeoutMs } from "../src/mux.js";
import {
  FrameType,
  defaultSettings,
  encodeFrame,
  endPayload,
  flagAck,
  flagEndMessage,
  goAwayPayload,
  headersPayload,
  parseOpen,
  parseToken,
  parseWindow,
  readFrames,
  settingsPayload,
} from "../src/muxwire.js";
import type { Frame, MuxSettings } from "../src/muxwire.js";
import {
  BidiRequestSchema,
  EchoRequestSchema,
  EchoResponseSchema,
  EchoService,
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

/** FakeBridge is a WebSocket that records what the client sends, and lets a test play the bridge. */
class FakeBridge implements WebSocketLike {
  static all: FakeBridge[] = [];
  binaryType = "blob";
  readyState = 0;
  bufferedAmount = 0;
  /** The WebSocket messages the client sent, as they came. */
  readonly messages: Uint8Array[] = [];
  closedWith: { code: number | undefined; reason: string | undefined } | undefined;
  private readonly listeners = new Map<string, Listener[]>();

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    FakeBridge.all.push(this);
  }

  addEventListener(type: string, listener: Listener): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  send(data: string | Uint8Array): void {
    assert.equal(this.readyState, 1, "send before open");
    assert.ok(data instanceof Uint8Array, "a text message");
    this.messages.push(data.slice());
  }

  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 2;
  }

  /** frames are the frames the client sent, across messages. */
  get frames(): Frame[] {
    return this.messages.flatMap((m) => readFrames(m));
  }

  /** sent lists the frames the client sent as [type, stream] pairs. */
  get sent(): [string, number][] {
    return this.frames.map((f) => [typeNames[f.type] ?? String(f.type), f.stream]);
  }

  /** dataBytes is the DATA the client sent on a stream. */
  dataBytes(stream: number): number {
    return this.frames.filter((f) => f.type === FrameType.Data && f.stream === stream).reduce((n, f) => n + f.payload.length, 0);
  }

  // The bridge's side.
  open(settings: Partial<MuxSettings> = {}): void {
    this.readyState = 1;
    this.emit("open", {});
    this.message(encodeFrame(FrameType.Settings, 0, 0, settingsPayload({ ...defaultSettings, ...settings })));
  }
  /** message sends the client one WebSocket message of frames. */
  message(...frames: Uint8Array[]): void {
    const b = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
    let off = 0;
    for (const f of frames) {
      b.set(f, off);
      off += f.length;
    }
    this.emit("message", { data: b.buffer });
  }
  text(s: string): void {
    this.emit("message", { data: s });
  }
  closed(code: number, reason = ""): void {
    this.readyState = 3;
    this.emit("close", { code, reason });
  }
  private emit(type: string, event: Partial<Event>): void {
    for (const l of this.listeners.get(type) ?? []) l({ data: undefined, code: 0, reason: "", ...event });
  }
}

const typeNames: Record<number, string> = Object.fromEntries(Object.entries(FrameType).map(([k, v]) => [v, k]));

// Frames from the bridge.
const headers = (stream: number, md: Record<string, string[]> = {}) => encodeFrame(FrameType.Headers, 0, stream, headersPayload(md));
const data = (stream: number, payload: Uint8Array, end = true) => encodeFrame(FrameType.Data, end ? flagEndMessage : 0, stream, payload);
const end = (stream: number, code = 0, message = "", trailers: Record<string, string[]> = {}) =>
  encodeFrame(FrameType.End, 0, stream, endPayload(code, message, trailers));
const window = (stream: number, n: number) => encodeFrame(FrameType.Window, 0, stream, new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]));

const baseUrl = "http://bridge.example/api";

function transport(opts: Partial<GrpcwsTransportOptions> = {}) {
  return createGrpcwsTransport({ baseUrl, WebSocket: FakeBridge, ...opts });
}

beforeEach(() => {
  FakeBridge.all = [];
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** until waits for cond to hold, and fails after two seconds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 2000; !cond(); ) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await sleep(1);
  }
}

/** socket waits for the n-th socket (from 0) of the test. */
async function socket(n = 0): Promise<FakeBridge> {
  await until(() => FakeBridge.all.length > n, `socket ${String(n)}`);
  return FakeBridge.all[n]!;
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

async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of stream) out.push(m);
  return out;
}

const echoResponse = (message: string) => toBinary(EchoResponseSchema, create(EchoResponseSchema, { message }));
const tick = (index: number, message = "") => toBinary(TickerResponseSchema, create(TickerResponseSchema, { index, message }));

type UploadInit = MessageInitShape<typeof UploadRequestSchema>;
type BidiInit = MessageInitShape<typeof BidiRequestSchema>;

describe("the connection", () => {
  it("offers grpcws.mux.v1 and the token; headers and the deadline travel in OPEN, not in the URL", async () => {
    const c = createClient(EchoService, transport({ token: "tok" }));
    const p = c.echo({ message: "hi" }, { headers: { "X-Call": "2", "x-b-bin": "AAE=" }, timeoutMs: 1500 });
    const s = await socket();
    assert.equal(s.url, "ws://bridge.example/api");
    assert.deepEqual(s.protocols, ["grpcws.mux.v1", bearerSubprotocol("tok")]);
    assert.equal(s.binaryType, "arraybuffer");
    s.readyState = 1;
    await sleep(5);
    assert.equal(s.messages.length, 0, "nothing before the bridge's SETTINGS");
    s.open();
    await until(() => s.messages.length > 0, "the OPEN");
    const [open, dataFrame, ...rest] = s.frames;
    assert.equal(rest.length, 0);
    assert.equal(open?.type, FrameType.Open);
    assert.equal(open?.stream, 1);
    const o = parseOpen(open!.payload);
    assert.equal(o.route, "examples.echo.v1.EchoService.Echo");
    assert.equal(o.timeout, "1500000u");
    assert.deepEqual(
      Object.fromEntries(Object.entries(o.metadata?.entries ?? {}).map(([k, v]) => [k, v.values])),
      { "x-call": ["2"], "x-b-bin": ["AAE="] },
    );
    assert.equal(dataFrame?.type, FrameType.Data);
    assert.equal(dataFrame?.flags, flagEndMessage);
    assert.equal(fromBinary(EchoRequestSchema, dataFrame!.payload).message, "hi");
    s.message(headers(1, { h: ["1"] }), data(1, echoResponse("hi")), end(1, 0, "", { t: ["2"] }));
    assert.equal((await p).message, "hi");
    assert.equal(s.closedWith, undefined, "the connection stays open");
  });

  it("the JSON format names the +json route and sends JSON in DATA", async () => {
    const p = createClient(EchoService, transport({ useBinaryFormat: false })).echo({ message: "j" });
    const s = await socket();
    s.open();
    await until(() => s.messages.length > 0, "the OPEN");
    const [open, d] = s.frames;
    assert.equal(parseOpen(open!.payload).route, "examples.echo.v1.EchoService.Echo+json");
    assert.equal(new TextDecoder().decode(d!.payload), '{"message":"j"}');
    s.message(data(1, new TextEncoder().encode('{"message":"back"}')), end(1));
    assert.equal((await p).message, "back");
  });

  it("the calls of a turn go out in one WebSocket message, with growing odd stream ids, on one socket", async () => {
    const c = createClient(EchoService, transport());
    const ps = [c.echo({ message: "a" }), c.echo({ message: "b" }), c.echo({ message: "c" })];
    const s = await socket();
    await sleep(5); // all three queued
    s.open();
    await until(() => s.messages.length > 0, "the batch");
    await sleep(5);
    assert.equal(s.messages.length, 1);
    assert.equal(s.messages[0]!.length, 3 * (9 + 35) + 3 * (9 + 3));
    assert.deepEqual(s.sent, [
      ["Open", 1],
      ["Open", 3],
      ["Open", 5],
      ["Data", 1],
      ["Data", 3],
      ["Data", 5],
    ]);
    s.message(...[1, 3, 5].flatMap((id) => [data(id, echoResponse(String(id))), end(id)]));
    assert.deepEqual((await Promise.all(ps)).map((r) => r.message), ["1", "3", "5"]);
    // A later call: the same socket, the next id.
    const p = c.echo({});
    await until(() => s.messages.length === 2, "the second batch");
    assert.deepEqual(s.sent.slice(6), [
      ["Open", 7],
      ["Data", 7],
    ]);
    s.message(data(7, echoResponse("")), end(7));
    await p;
    assert.equal(FakeBridge.all.length, 1);
  });

  it("a batch is at most the bridge's MAX_WS_MESSAGE, and a message larger than MAX_FRAME_SIZE goes in chunks", async () => {
    const p = createClient(EchoService, transport()).echo({ payload: new Uint8Array(10_000).fill(7) });
    const s = await socket();
    s.open({ maxFrameSize: 1024, maxWsMessage: 2500 });
    await until(() => s.dataBytes(1) > 10_000, "the request");
    for (const m of s.messages) {
      assert.ok(m.length <= 2500, `a message of ${String(m.length)} bytes`);
    }
    const chunks = s.frames.filter((f) => f.type === FrameType.Data);
    assert.ok(chunks.every((f) => f.payload.length <= 1024));
    assert.deepEqual(
      chunks.map((f) => f.flags),
      chunks.map((_, i) => (i === chunks.length - 1 ? flagEndMessage : 0)),
    );
    const sent = new Uint8Array(chunks.reduce((n, f) => n + f.payload.length, 0));
    let off = 0;
    for (const f of chunks) {
      sent.set(f.payload, off);
      off += f.payload.length;
    }
    assert.equal(fromBinary(EchoRequestSchema, sent).payload.length, 10_000);
    s.message(data(1, echoResponse("")), end(1));
    await p;
  });

  it("streams take turns a chunk at a time: a large message delays another stream's by one chunk", async () => {
    const c = createClient(EchoService, transport());
    async function* big(): AsyncIterable<UploadInit> {
      yield { chunk: new Uint8Array(100 << 10) };
    }
    async function* small(): AsyncIterable<UploadInit> {
      yield { chunk: new Uint8Array(10) };
    }
    const a = c.upload(big());
    const b = c.upload(small());
    const s = await socket();
    await sleep(10); // both read their requests and half-closed
    s.open();
    await until(() => s.sent.filter(([t]) => t === "EndSend").length === 2, "both uploads");
    assert.equal(s.messages.length, 1, "all of it in one message");
    const order = s.sent.map(([t, id]) => `${t}${String(id)}`);
    assert.deepEqual(order.slice(0, 6), ["Open1", "Open3", "Data1", "Data3", "Data1", "EndSend3"]);
    assert.deepEqual(order.slice(6), [...Array<string>(5).fill("Data1"), "EndSend1"]);
    assert.deepEqual(
      s.frames.filter((f) => f.stream === 1 && f.type === FrameType.Data).map((f) => f.payload.length),
      [16384, 16384, 16384, 16384, 16384, 16384, (100 << 10) + 4 - 6 * 16384],
    );
    s.message(data(3, toBinary(UploadResponseSchema, create(UploadResponseSchema, { bytes: 10n }))), end(3));
    s.message(data(1, toBinary(UploadResponseSchema, create(UploadResponseSchema, { bytes: 100n << 10n }))), end(1));
    assert.equal((await b).bytes, 10n);
    assert.equal((await a).bytes, 100n << 10n);
  });

  it("answers PING with a PING ACK of the same bytes, and ignores an ACK", async () => {
    const p = createClient(EchoService, transport()).echo({});
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPEN");
    const ping = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    s.message(encodeFrame(FrameType.Ping, 0, 0, ping), encodeFrame(FrameType.Ping, flagAck, 0, new Uint8Array(8)));
    await until(() => s.messages.length === 2, "the ACK");
    const [ack, ...rest] = readFrames(s.messages[1]!);
    assert.equal(rest.length, 0);
    assert.equal(ack?.type, FrameType.Ping);
    assert.equal(ack?.flags, flagAck);
    assert.deepEqual(ack?.payload, ping);
    s.message(data(1, echoResponse("")), end(1));
    await p;
  });
});

describe("flow control", () => {
  it("sends no more than the windows allow, and goes on as WINDOW frames come", async () => {
    const c = createClient(EchoService, transport());
    let pulled = 0;
    async function* requests(): AsyncIterable<UploadInit> {
      for (let i = 0; i < 3; i++) {
        pulled++;
        yield { chunk: new Uint8Array((1 << 20) - 4) }; // messages of 1 MiB: 4 bytes of tag and length
      }
    }
    const p = c.upload(requests());
    const s = await socket();
    s.open({ streamWindow: 20_000, connWindow: 30_000 });
    await until(() => s.dataBytes(1) === 20_000, "the stream's window");
    await sleep(20);
    assert.equal(s.dataBytes(1), 20_000, "the stream's window, and no more");
    assert.equal(pulled, 2, "the transport stops reading requests while more than 1 MiB waits to be sent");

    s.message(window(1, 50_000));
    await until(() => s.dataBytes(1) === 30_000, "the connection's window");
    await sleep(10);
    assert.equal(s.dataBytes(1), 30_000, "the connection's window, and no more");

    s.message(window(0, 1 << 30));
    await until(() => s.dataBytes(1) === 70_000, "the rest of the stream's window");
    await sleep(10);
    assert.equal(s.dataBytes(1), 70_000);

    s.message(window(1, 1 << 30));
    await until(() => s.sent.some(([t]) => t === "EndSend"), "the whole upload");
    assert.equal(pulled, 3);
    assert.equal(s.dataBytes(1), 3 << 20);
    s.message(data(1, toBinary(UploadResponseSchema, create(UploadResponseSchema, { messages: 3n }))), end(1));
    assert.equal((await p).messages, 3n);
  });

  it("an empty message needs no window", async () => {
    const p = createClient(EchoService, transport()).echo({});
    const s = await socket();
    s.open({ streamWindow: 0, connWindow: 0 });
    await until(() => s.sent.length === 2, "OPEN and DATA");
    assert.deepEqual(s.frames[1]?.payload, new Uint8Array());
    s.message(data(1, echoResponse("")), end(1));
    await p;
  });

  it("grants credit as the application reads: nothing for a stream nobody reads, half a window at a time", async () => {
    const c = createClient(EchoService, transport());
    const it = c.ticker({})[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPEN");
    const msg = tick(1, "x".repeat(16384 - 5)); // a DATA frame of 16 KiB, and a message
    assert.equal(msg.length, 16384);
    s.message(headers(1));
    for (let i = 0; i < 12; i++) s.message(data(1, msg));
    await sleep(10);
    assert.equal(s.messages.length, 1, "no WINDOW while nobody reads");

    const windows = () => s.frames.filter((f) => f.type === FrameType.Window).map((f) => [f.stream, parseWindow(f.payload)]);
    for (let i = 0; i < 7; i++) await it.next();
    await sleep(5);
    assert.deepEqual(windows(), [], "7 × 16 KiB read: under half the stream's window");
    await it.next();
    await sleep(5);
    assert.deepEqual(windows(), [[1, 8 * 16384]], "half the window read: granted on the stream");

    // The end: what is still queued is the connection's again; nothing
    // more for the stream, which is over.
    s.message(end(1));
    const rest = await collect({ [Symbol.asyncIterator]: () => it });
    assert.equal(rest.length, 4);
    assert.deepEqual(windows(), [[1, 8 * 16384]]);
  });

  it("a large message is read as it comes: credit flows while it is assembled", async () => {
    const p = createClient(EchoService, transport()).echo({});
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPEN");
    const big = echoResponse("y".repeat(600 << 10)); // more than twice the stream's window
    for (let off = 0; off < big.length; off += 16384) {
      s.message(data(1, big.subarray(off, off + 16384), off + 16384 >= big.length));
    }
    s.message(end(1));
    assert.equal((await p).message.length, 600 << 10);
    const granted = s.frames.filter((f) => f.type === FrameType.Window && f.stream === 1).reduce((n, f) => n + parseWindow(f.payload), 0);
    assert.ok(granted >= big.length - (128 << 10), `granted ${String(granted)} of ${String(big.length)}`);
  });

  it("grants the connection its window again at half of it, for streams read and streams gone", async () => {
    const c = createClient(EchoService, transport());
    const ctl = new AbortController();
    const it = c.ticker({}, { signal: ctl.signal })[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPEN");
    s.message(headers(1), data(1, tick(1)));
    await it.next();
    ctl.abort();
    await until(() => s.sent.some(([t]) => t === "Cancel"), "the CANCEL");
    // DATA already on the way when the bridge read CANCEL: ignored, but
    // its bytes count against the connection's window and come back.
    const chunk = new Uint8Array(16384);
    for (let i = 0; i < 512; i++) s.message(data(1, chunk, false));
    await sleep(10);
    const conn = s.frames.filter((f) => f.type === FrameType.Window && f.stream === 0).map((f) => parseWindow(f.payload));
    assert.deepEqual(conn, [(8 << 20) + 2], "half the window: the tick read, and 512 chunks ignored");
    assert.equal(s.closedWith, undefined);
  });
});

describe("cancellation", () => {
  it("aborting sends CANCEL and rejects with Canceled; the bridge's later frames for the stream are ignored", async () => {
    const c = createClient(EchoService, transport());
    const ctl = new AbortController();
    const stream = c.ticker({}, { signal: ctl.signal })[Symbol.asyncIterator]();
    const other = c.echo({ message: "other" });
    const s = await socket();
    s.open();
    await until(() => s.sent.length === 4, "both streams");
    s.message(headers(1), data(1, tick(1)));
    assert.equal((await stream.next()).value?.index, 1);
    ctl.abort(new Error("user left"));
    const err = await rejects(stream.next());
    assert.equal(err.code, Code.Canceled);
    await until(() => s.sent.some(([t]) => t === "Cancel"), "the CANCEL");
    assert.deepEqual(s.sent.at(-1), ["Cancel", 1]);
    s.message(data(1, tick(2)), end(1, 1, "canceled"), window(1, 100));
    s.message(data(3, echoResponse("other")), end(3));
    assert.equal((await other).message, "other", "the other stream goes on");
    assert.equal(s.closedWith, undefined);
  });

  it("a stream cancelled before its OPEN went out is never opened", async () => {
    const c = createClient(EchoService, transport());
    const ctl = new AbortController();
    const p = c.echo({}, { signal: ctl.signal });
    const q = c.echo({ message: "q" });
    const s = await socket();
    await sleep(5);
    ctl.abort();
    assert.equal((await rejects(p)).code, Code.Canceled);
    s.open();
    await until(() => s.sent.length === 2, "the other stream");
    await sleep(5);
    assert.deepEqual(s.sent, [
      ["Open", 3],
      ["Data", 3],
    ]);
    s.message(data(3, echoResponse("q")), end(3));
    assert.equal((await q).message, "q");
  });

  it("timeoutMs travels in OPEN, and fails locally with DeadlineExceeded and a CANCEL", async () => {
    const p = createClient(EchoService, transport()).echo({}, { timeoutMs: 30 });
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPEN");
    assert.equal(parseOpen(s.frames[0]!.payload).timeout, "30000000n");
    assert.equal((await rejects(p)).code, Code.DeadlineExceeded);
    await until(() => s.sent.some(([t]) => t === "Cancel"), "the CANCEL");
  });

  it("a bidi stream: messages go as the iterable yields them, END_SEND after the last", async () => {
    const reqs = createWritableIterable<BidiInit>();
    const it = createClient(EchoService, transport()).bidi(reqs)[Symbol.asyncIterator]();
    const s = await socket();
    s.open();
    await reqs.write({ message: "one" });
    await until(() => s.sent.length === 2, "the first message");
    assert.deepEqual(s.sent, [
      ["Open", 1],
      ["Data", 1],
    ]);
    s.message(headers(1), data(1, toBinary(BidiRequestSchema, create(BidiRequestSchema, { message: "one" }))));
    assert.equal((await it.next()).value?.message, "one");
    reqs.close();
    await until(() => s.sent.length === 3, "END_SEND");
    assert.deepEqual(s.sent.at(-1), ["EndSend", 1]);
    s.message(end(1));
    assert.equal((await it.next()).done, true);
  });
});

describe("tokens", () => {
  it("a token that differs from the connection's goes in a TOKEN frame before the OPEN", async () => {
    let token: string | undefined = "one";
    const c = createClient(EchoService, transport({ token: () => token }));
    const call = async (id: number, opts: { headers?: Record<string, string> } = {}) => {
      const p = c.echo({}, opts);
      const s = await socket();
      if (s.readyState === 0) s.open();
      await until(() => s.frames.some((f) => f.type === FrameType.Data && f.stream === id), `stream ${String(id)}`);
      s.message(data(id, echoResponse("")), end(id));
      await p;
    };
    await call(1);
    token = "two";
    await call(3);
    await call(5);
    token = undefined;
    await call(7);
    await call(9, { headers: { authorization: "Bearer own" } });
    const s = await socket();
    assert.equal(FakeBridge.all.length, 1);
    assert.deepEqual(s.protocols, ["grpcws.mux.v1", bearerSubprotocol("one")]);
    assert.deepEqual(
      s.frames.filter((f) => f.type === FrameType.Token || f.type === FrameType.Open).map((f) => (f.type === FrameType.Token ? `TOKEN ${parseToken(f.payload)}` : `OPEN ${String(f.stream)}`)),
      ["OPEN 1", "TOKEN two", "OPEN 3", "OPEN 5", "TOKEN ", "OPEN 7", "TOKEN own", "OPEN 9"],
    );
  });

  it("a token that is not printable ASCII is refused before it reaches the connection", async () => {
    const err = await rejects(createClient(EchoService, transport({ token: "tök" })).echo({}));
    assert.equal(err.code, Code.InvalidArgument);
    await sleep(5);
    assert.equal(FakeBridge.all.length, 0);
  });
});

describe("GOAWAY, drops and closes", () => {
  it("after GOAWAY new calls go on a new socket; the old one's streams finish, then it closes", async () => {
    const c = createClient(EchoService, transport());
    const old = c.ticker({})[Symbol.asyncIterator]();
    const a = await socket();
    a.open();
    await until(() => a.messages.length === 1, "the OPEN");
    a.message(headers(1), data(1, tick(1)));
    assert.equal((await old.next()).value?.index, 1);
    a.message(encodeFrame(FrameType.GoAway, 0, 0, goAwayPayload(1, "grpcws: bridge shutting down")));

    const p = c.echo({ message: "new" });
    const b = await socket(1);
    b.open();
    await until(() => b.messages.length === 1, "the OPEN on the new socket");
    assert.deepEqual(b.sent, [
      ["Open", 1],
      ["Data", 1],
    ]);
    b.message(data(1, echoResponse("new")), end(1));
    assert.equal((await p).message, "new");

    a.message(data(1, tick(2)), end(1));
    assert.deepEqual(
      (await collect({ [Symbol.asyncIterator]: () => old })).map((t) => t.index),
      [2],
    );
    assert.equal(a.closedWith?.code, 1000, "the drained socket closes once its last stream ended");
    assert.equal(b.closedWith, undefined);
  });

  it("a drop fails every stream with Unavailable, 1006; the next call opens a new socket", async () => {
    const c = createClient(EchoService, transport());
    const t = c.ticker({})[Symbol.asyncIterator]();
    const e = c.echo({});
    const a = await socket();
    a.open();
    a.message(headers(1), data(1, tick(1)), data(1, tick(2)));
    a.closed(1006);
    assert.equal((await t.next()).value?.index, 1, "what came before the drop is read first");
    assert.equal((await t.next()).value?.index, 2);
    for (const p of [t.next(), e]) {
      const err = await rejects(p);
      assert.equal(err.code, Code.Unavailable);
      assert.equal(closeCodeOf(err), 1006);
    }
    const p = c.echo({ message: "again" });
    const b = await socket(1);
    b.open();
    await until(() => b.messages.length === 1, "the OPEN");
    b.message(data(1, echoResponse("again")), end(1));
    assert.equal((await p).message, "again");
  });

  it("a refusal at the handshake fails the calls with the close code's status", async () => {
    const c = createClient(EchoService, transport());
    const p = c.echo({});
    const a = await socket();
    a.readyState = 1;
    a.closed(4007, 'grpcws: origin "https://evil.example" not allowed');
    const err = await rejects(p);
    assert.equal(err.code, Code.PermissionDenied);
    assert.equal(closeCodeOf(err), 4007);
  });

  it("a bridge older than grpcws.mux.v1 (4012 before SETTINGS): Unimplemented, and the message says multiplex: false", async () => {
    const p = createClient(EchoService, transport()).echo({});
    const a = await socket();
    a.readyState = 1;
    a.closed(4012, 'grpcws: no route named "grpcws.mux.v1"');
    const err = await rejects(p);
    assert.equal(err.code, Code.Unimplemented);
    assert.equal(closeCodeOf(err), 4012);
    assert.match(err.rawMessage, /^grpcws: no route named "grpcws.mux.v1" \(the bridge does not speak grpcws.mux.v1: .*multiplex: false/);
  });

  it("a stream over the bridge's MAX_CONCURRENT_STREAMS goes on another socket", async () => {
    const c = createClient(EchoService, transport());
    const first = c.echo({ message: "1" });
    const a = await socket();
    a.open({ maxStreams: 1 });
    await until(() => a.messages.length === 1, "the OPEN");
    const second = c.echo({ message: "2" });
    const b = await socket(1);
    b.open();
    await until(() => b.messages.length === 1, "the OPEN on the second socket");
    a.message(data(1, echoResponse("1")), end(1));
    b.message(data(1, echoResponse("2")), end(1));
    assert.deepEqual([(await first).message, (await second).message], ["1", "2"]);
    const third = c.echo({ message: "3" });
    await until(() => a.messages.length === 2, "the first socket, again");
    a.message(data(3, echoResponse("3")), end(3));
    assert.equal((await third).message, "3");
    assert.equal(FakeBridge.all.length, 2);
  });

  it(`a socket without streams closes after ${String(idleTimeoutMs)} ms; the next call opens another`, async () => {
    const c = createClient(EchoService, transport());
    const p = c.echo({});
    const a = await socket();
    a.open();
    await until(() => a.messages.length === 1, "the OPEN");
    mock.timers.enable({ apis: ["setTimeout"] });
    try {
      a.message(data(1, echoResponse("")), end(1));
      await p;
      mock.timers.tick(idleTimeoutMs - 1);
      assert.equal(a.closedWith, undefined);
      mock.timers.tick(1);
      assert.deepEqual(a.closedWith, { code: 1000, reason: "idle" });
    } finally {
      mock.timers.reset();
    }
    const q = c.echo({});
    const b = await socket(1);
    b.open();
    await until(() => b.messages.length === 1, "the OPEN");
    b.message(data(1, echoResponse("")), end(1));
    await q;
  });
});

describe("a bridge that breaks the protocol", () => {
  afterEach(() => {
    mock.timers.reset();
  });

  const cases: [string, (s: FakeBridge) => void, RegExp][] = [
    ["a frame cut short", (s) => s.message(new Uint8Array([0, 0, 9, 2, 1, 0, 0, 0, 1, 0])), /malformed frame/],
    ["an unknown frame type", (s) => s.message(encodeFrame(0x0b, 0, 0)), /unknown frame type 0x0b/],
    ["DATA on a stream never opened", (s) => s.message(data(99, new Uint8Array())), /stream 99, never opened/],
    ["DATA on stream 0", (s) => s.message(data(0, new Uint8Array())), /DATA on stream 0/],
    ["a text message", (s) => s.text("hello"), /text message/],
    ["a second SETTINGS", (s) => s.message(encodeFrame(FrameType.Settings, 0, 0)), /second SETTINGS/],
    ["a frame the bridge may not send", (s) => s.message(encodeFrame(FrameType.Cancel, 0, 1)), /may not send CANCEL/],
    ["a HEADERS that does not parse", (s) => s.message(encodeFrame(FrameType.Headers, 0, 1, new Uint8Array([0xff]))), /HEADERS payload/],
    ["a WINDOW of 0", (s) => s.message(window(0, 0)), /WINDOW increment 0/],
    [
      "DATA past the stream's window",
      (s) => {
        for (let i = 0; i < 17; i++) s.message(data(1, new Uint8Array(16384), false));
      },
      /window of stream 1 exceeded/,
    ],
    ["DATA over MAX_FRAME_SIZE", (s) => s.message(data(1, new Uint8Array(16385))), /over MAX_FRAME_SIZE/],
  ];
  for (const [name, act, why] of cases) {
    it(`${name}: every stream fails with Internal, the client closes, the next call opens a new socket`, async () => {
      const c = createClient(EchoService, transport());
      const t = collect(c.ticker({}));
      const e = c.echo({});
      const s = await socket();
      s.open();
      await until(() => s.messages.length === 1, "the OPENs");
      act(s);
      for (const p of [t, e]) {
        const err = await rejects(p);
        assert.equal(err.code, Code.Internal);
        assert.match(err.message, /protocol error/);
        assert.match(err.message, why);
        assert.equal(closeCodeOf(err), undefined);
      }
      assert.equal(s.closedWith?.code, 4013);
      const q = c.echo({});
      const b = await socket(1);
      b.open();
      await until(() => b.messages.length === 1, "the OPEN");
      b.message(data(1, echoResponse("")), end(1));
      await q;
    });
  }

  it("a first frame that is not SETTINGS", async () => {
    const p = createClient(EchoService, transport()).echo({});
    const s = await socket();
    s.readyState = 1;
    s.message(headers(1));
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /first frame is HEADERS/);
  });

  it("errors of one stream end that stream alone, with a CANCEL", async () => {
    const c = createClient(EchoService, transport());
    const bad = c.echo({});
    const good = c.echo({ message: "ok" });
    const s = await socket();
    s.open();
    await until(() => s.messages.length === 1, "the OPENs");
    s.message(data(1, echoResponse("")), data(1, echoResponse(""))); // two responses to a unary call
    const err = await rejects(bad);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /a second response/);
    await until(() => s.sent.some(([t]) => t === "Cancel"), "the CANCEL");
    s.message(data(1, new Uint8Array([0xff])), data(3, echoResponse("ok")), end(3));
    assert.equal((await good).message, "ok");
    assert.equal(s.closedWith, undefined);
  });
});
