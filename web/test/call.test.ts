// The client's state machine against a scripted WebSocket: the order of
// frames, protocol errors, cancellation, what is sent when.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary, toJsonString } from "@bufbuild/protobuf";
import { Code, GrpcWsError, createClient } from "../src/index.js";
import type { WebSocketLike } from "../src/index.js";
import {
  BidiRequestSchema,
  BidiResponseSchema,
  EchoResponseSchema,
  EchoService,
  TickerResponseSchema,
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

function socket(): FakeSocket {
  const s = FakeSocket.last;
  assert.ok(s, "no socket opened");
  return s;
}

const client = createClient(EchoService, "http://bridge.example/api", { WebSocket: FakeSocket, metadata: { "x-app": "1" } });

async function rejects(p: Promise<unknown>): Promise<GrpcWsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof GrpcWsError, String(e));
    return e;
  }
  assert.fail("resolved; want a GrpcWsError");
}

describe("the handshake", () => {
  it("offers the route and the token, puts metadata and the deadline in the query", () => {
    void client.echo({}, { metadata: { "x-call": "2" }, token: "tok", timeoutMs: 1500 }).catch(() => undefined);
    const s = socket();
    assert.equal(s.url, "ws://bridge.example/api?x-app=1&x-call=2&grpc-timeout=1500000u");
    assert.deepEqual(s.protocols, ["examples.echo.v1.EchoService.Echo", "base64url.bearer.grpcws.dG9r"]);
    assert.equal(s.binaryType, "arraybuffer");
    s.closed(1006);
  });

  it("offers +json in the JSON encoding", () => {
    const c = createClient(EchoService, "ws://h/", { WebSocket: FakeSocket, encoding: "json" });
    void c.echo({}).catch(() => undefined);
    assert.deepEqual(socket().protocols, ["examples.echo.v1.EchoService.Echo+json"]);
    socket().closed(1006);
  });
});

describe("unary", () => {
  it("sends one binary frame after open and no endSend; resolves at the end frame", async () => {
    let headers: Headers | undefined;
    const p = client.echo({ message: "hi" }, { onHeaders: (h) => (headers = h) });
    const s = socket();
    assert.deepEqual(s.sent, [], "nothing before open");
    s.open();
    assert.equal(s.sent.length, 1);
    assert.deepEqual(s.sent[0], new Uint8Array([0x0a, 0x02, 0x68, 0x69]));
    s.control('{"headers":{"entries":{"x":{"values":["y"]}}}}');
    assert.equal(headers?.get("x"), "y");
    s.binary(toBinary(EchoResponseSchema, create(EchoResponseSchema, { message: "hi" })));
    s.end();
    assert.equal((await p).message, "hi");
    assert.equal(s.closedWith, undefined, "the bridge closes, not the client");
  });

  it("an end with an error status wins over the close code", async () => {
    const p = client.echo({});
    const s = socket();
    s.open();
    s.control(
      '{"end":{"status":{"code":5,"message":"nicht gefunden ✗","details":[{"typeUrl":"type.googleapis.com/a.B","value":"AQ=="}]},"trailers":{"entries":{"t":{"values":["1"]}}}}}',
    );
    s.closed(4005, "nicht gefunden ✗");
    const err = await rejects(p);
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.rawMessage, "nicht gefunden ✗");
    assert.equal(err.closeCode, undefined);
    assert.equal(err.metadata.get("t"), "1");
    assert.deepEqual(err.details, [{ typeUrl: "type.googleapis.com/a.B", value: new Uint8Array([1]) }]);
  });

  it("a close without an end frame maps the close code", async () => {
    const p = client.echo({});
    socket().closed(4007, 'grpcws: origin "https://evil.example" not allowed');
    const err = await rejects(p);
    assert.equal(err.code, Code.PermissionDenied);
    assert.equal(err.closeCode, 4007);
  });

  it("OK without a response is a protocol error", async () => {
    const p = client.echo({});
    socket().open();
    socket().end();
    const err = await rejects(p);
    assert.equal(err.code, Code.Internal);
    assert.match(err.message, /no response/);
  });

  it("two responses are a protocol error, and the client closes", async () => {
    const p = client.echo({});
    const s = socket();
    s.open();
    s.binary(new Uint8Array());
    s.binary(new Uint8Array());
    assert.equal((await rejects(p)).code, Code.Internal);
    assert.equal(s.closedWith?.code, 4013);
  });

  it("a text message in the binary encoding is a protocol error", async () => {
    const p = client.echo({});
    socket().open();
    socket().text('{"message":"hi"}');
    assert.equal((await rejects(p)).code, Code.Internal);
  });

  it("a malformed control frame is a protocol error; an unknown one is skipped", async () => {
    const p = client.echo({});
    const s = socket();
    s.open();
    s.control('{"later":{}}');
    s.binary(new Uint8Array());
    s.control("{nope");
    assert.match((await rejects(p)).message, /bad control frame/);
  });

  it("aborting closes the socket with 4001 and rejects with Canceled", async () => {
    const ctl = new AbortController();
    const p = client.echo({}, { signal: ctl.signal });
    const s = socket();
    s.open();
    ctl.abort(new Error("user left"));
    const err = await rejects(p);
    assert.equal(err.code, Code.Canceled);
    assert.equal((err.cause as Error).message, "user left");
    assert.equal(s.closedWith?.code, 4001);
    s.closed(4001);
  });

  it("AbortSignal.timeout gives DeadlineExceeded", async () => {
    const p = client.echo({}, { signal: AbortSignal.timeout(1) });
    socket().open();
    assert.equal((await rejects(p)).code, Code.DeadlineExceeded);
  });

  it("timeoutMs fails locally with DeadlineExceeded and closes with 4004", async () => {
    const p = client.echo({}, { timeoutMs: 5 });
    const s = socket();
    s.open();
    assert.equal((await rejects(p)).code, Code.DeadlineExceeded);
    assert.equal(s.closedWith?.code, 4004);
  });

  it("a request that cannot be encoded rejects with InvalidArgument", async () => {
    const p = client.echo({ fail: { code: 2 ** 40 } }); // not an int32
    assert.equal(FakeSocket.last?.sent.length, 0);
    const err = await rejects(p);
    assert.equal(err.code, Code.InvalidArgument);
  });

  it("a throwing onHeaders fails the call", async () => {
    const p = client.echo(
      {},
      {
        onHeaders: () => {
          throw new Error("app bug");
        },
      },
    );
    socket().open();
    socket().control('{"headers":{}}');
    assert.match((await rejects(p)).message, /app bug/);
  });
});

describe("streams", () => {
  it("server-streaming: messages, then the end; headers resolve empty without a headers frame", async () => {
    const stream = client.ticker({ count: 2 });
    const s = socket();
    s.open();
    for (const index of [1, 2]) {
      s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index })));
    }
    s.end(0, "", '{"t":{"values":["x"]}}');
    s.closed(1000);
    const got: number[] = [];
    for await (const r of stream) got.push(r.index);
    assert.deepEqual(got, [1, 2]);
    assert.deepEqual([...(await stream.headers)], []);
    assert.equal((await stream.trailers).get("t"), "x");
  });

  it("a headers frame after a message is a protocol error", async () => {
    const stream = client.ticker({});
    const s = socket();
    s.open();
    s.binary(new Uint8Array());
    s.control('{"headers":{}}');
    assert.equal((await rejects(stream.receive())).code, Code.Internal, "a protocol error drops what was received");
  });

  it("a failed stream rejects headers that never came", async () => {
    const stream = client.ticker({});
    socket().closed(1001);
    assert.equal((await rejects(stream.headers)).code, Code.Unavailable);
    assert.equal((await rejects(stream.trailers)).code, Code.Unavailable);
  });

  it("client-streaming: queues before open, sends endSend, resolves the response", async () => {
    const up = client.upload();
    up.send({ chunk: new Uint8Array([1]) });
    up.send({ chunk: new Uint8Array([2, 3]) });
    assert.equal(up.bufferedAmount, 7);
    up.closeSend();
    up.closeSend();
    const s = socket();
    s.open();
    assert.deepEqual(s.sent, [new Uint8Array([0x0a, 0x01, 0x01]), new Uint8Array([0x0a, 0x02, 0x02, 0x03]), '#{"endSend":{}}']);
    s.binary(toBinary(UploadResponseSchema, create(UploadResponseSchema, { messages: 2n, bytes: 3n })));
    s.end();
    const res = await up.response;
    assert.equal(res.messages, 2n);
  });

  it("bidi: sends as it goes; breaking out of the loop cancels with 4001", async () => {
    const bidi = client.bidi();
    const s = socket();
    s.open();
    bidi.send({ message: "a" });
    assert.equal(fromBinary(BidiRequestSchema, s.sent[0] as Uint8Array).message, "a");
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "a", index: 1n })));
    s.binary(toBinary(BidiResponseSchema, create(BidiResponseSchema, { message: "b", index: 2n })));
    for await (const r of bidi) {
      assert.equal(r.message, "a");
      break;
    }
    assert.equal(s.closedWith?.code, 4001);
    assert.equal((await rejects(bidi.trailers)).code, Code.Canceled);
    bidi.send({ message: "dropped" });
    assert.equal(s.sent.length, 1);
  });

  it("bidi in JSON: text frames both ways", async () => {
    const c = createClient(EchoService, "ws://h/", { WebSocket: FakeSocket, encoding: "json" });
    const bidi = c.bidi();
    const s = socket();
    s.open();
    bidi.send({ message: "hi", payload: new Uint8Array([1]) });
    bidi.closeSend();
    assert.deepEqual(s.sent, ['{"message":"hi","payload":"AQ=="}', '#{"endSend":{}}']);
    s.text(toJsonString(BidiResponseSchema, create(BidiResponseSchema, { message: "hi", index: 1n })));
    s.text('{"message":"x","index":"2","fieldFromTheFuture":1}');
    s.end();
    const got: string[] = [];
    for await (const r of bidi) got.push(`${r.message}${String(r.index)}`);
    assert.deepEqual(got, ["hi1", "x2"]);
  });

  it("cancel() with no reason is Canceled; later events change nothing", async () => {
    const bidi = client.bidi();
    const s = socket();
    s.open();
    bidi.cancel();
    s.end(0);
    s.closed(1000);
    assert.equal((await rejects(bidi.receive())).code, Code.Canceled);
  });
});

describe("receive", () => {
  it("wakes every pending receive", async () => {
    const stream = client.ticker({});
    const s = socket();
    s.open();
    const a = stream.receive();
    const b = stream.receive();
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 1 })));
    s.binary(toBinary(TickerResponseSchema, create(TickerResponseSchema, { index: 2 })));
    s.end();
    const got = await Promise.all([a, b, stream.receive()]);
    assert.deepEqual(
      got.map((r) => r?.index),
      [1, 2, undefined],
    );
  });
});

describe("createClient", () => {
  it("refuses a base URL no call could use", () => {
    assert.throws(() => createClient(EchoService, "ftp://h/", { WebSocket: FakeSocket }), /not ws:, wss:, http: or https:/);
    assert.throws(() => createClient(EchoService, "/relative", { WebSocket: FakeSocket }), TypeError);
  });

  it("needs a WebSocket", () => {
    const g = globalThis as { WebSocket?: unknown };
    const saved = g.WebSocket;
    delete g.WebSocket;
    try {
      assert.throws(() => createClient(EchoService, "ws://h/"), /no WebSocket implementation/);
    } finally {
      if (saved !== undefined) g.WebSocket = saved;
    }
  });
});

// Compile-time checks of the typed client: tsc fails if a line marked as
// an expected error compiles. Never called.
export function typeChecks(): void {
  // @ts-expect-error a unary method takes its request
  void client.echo();
  // @ts-expect-error fields are typed
  void client.echo({ message: 1 });
  // @ts-expect-error a client-streaming method takes no request up front
  client.upload({ chunk: new Uint8Array() });
  // @ts-expect-error a server stream has no send
  client.ticker({}).send({});
  // @ts-expect-error a client stream is not iterable
  for (const _ of client.upload()) break;
  // @ts-expect-error no such method
  client.nope();
  const up = client.upload();
  up.send({ chunk: new Uint8Array() });
  const bytes: Promise<bigint> = up.response.then((r) => r.bytes);
  void bytes;
  const bidi = client.bidi();
  bidi.send({ message: "typed" });
  const index: Promise<bigint | undefined> = bidi.receive().then((r) => r?.index);
  void index;
}
