// The client against a real bridge and backend (web/internal/testserver),
// with the ws package as the WebSocket.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { WebSocket } from "ws";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, CloseCode, GrpcWsError, createClient, withReconnect } from "../src/index.js";
import type { ClientOptions } from "../src/index.js";
import { EchoService } from "../src/gen/examples/echo/v1/echo_pb.js";
import { ChatService, ChatRequestSchema } from "../src/gen/examples/chat/v1/chat_pb.js";
import type { ChatResponse } from "../src/gen/examples/chat/v1/chat_pb.js";
import { startServer } from "./server.js";
import type { TestServer } from "./server.js";

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

/** A browser on another site: ws sends the Origin it is given. */
class CrossSiteWebSocket extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { origin: "https://evil.example" });
  }
}

function echoClient(opts: ClientOptions = {}, path = "") {
  return createClient(EchoService, server.ws + path, { WebSocket, ...opts });
}

/** rejects asserts that p rejects with a GrpcWsError and returns it. */
async function rejects(p: Promise<unknown>): Promise<GrpcWsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof GrpcWsError, `got ${String(e)}; want a GrpcWsError`);
    return e;
  }
  assert.fail("resolved; want a GrpcWsError");
}

for (const encoding of ["binary", "json"] as const) {
  describe(`every RPC kind, ${encoding} encoding`, () => {
    it("unary, with metadata both ways", async () => {
      const id = randomUUID();
      const client = echoClient({ encoding, metadata: { "x-test-id": id } });
      let headers: Headers | undefined;
      let trailers: Headers | undefined;
      const res = await client.echo(
        { message: "grüß dich ✓", payload: new Uint8Array([0, 1, 2, 255]) },
        {
          metadata: { "x-echo-one": "1", "x-echo-bin": new Uint8Array([0xff, 0x00]), "X-Echo-Many": ["a", "b"] },
          onHeaders: (h) => (headers = h),
          onTrailers: (t) => (trailers = t),
        },
      );
      assert.equal(res.message, "grüß dich ✓");
      assert.deepEqual(res.payload, new Uint8Array([0, 1, 2, 255]));
      assert.equal(headers?.get("x-echo-one"), "1");
      assert.equal(headers?.get("x-echo-many"), "a, b");
      assert.equal(headers?.get("x-echo-bin"), "/wA=");
      assert.equal(trailers?.get("x-echo-one"), "1");
      const calls = await server.waitCalls(id, (c) => c.length === 1 && c[0]!.done);
      assert.equal(calls[0]?.method, "/examples.echo.v1.EchoService/Echo");
      assert.equal(calls[0]?.code, "OK");
    });

    it("server-streaming", async () => {
      const client = echoClient({ encoding });
      const stream = client.ticker({ message: "tick", count: 5, interval: durationFromMs(1) }, { metadata: { "x-echo-k": "v" } });
      const got: number[] = [];
      for await (const res of stream) {
        assert.equal(res.message, "tick");
        got.push(res.index);
      }
      assert.deepEqual(got, [1, 2, 3, 4, 5]);
      assert.equal((await stream.headers).get("x-echo-k"), "v");
      assert.equal((await stream.trailers).get("x-echo-k"), "v");
    });

    it("client-streaming", async () => {
      const client = echoClient({ encoding });
      const up = client.upload();
      for (let i = 0; i < 10; i++) {
        up.send({ chunk: new Uint8Array(i) });
      }
      up.closeSend();
      const res = await up.response;
      assert.equal(res.messages, 10n);
      assert.equal(res.bytes, 45n);
      assert.deepEqual([...(await up.trailers)], []);
      assert.throws(() => up.send({}), (e: unknown) => e instanceof GrpcWsError && e.code === Code.FailedPrecondition);
    });

    it("bidi, one answer per message as it arrives", async () => {
      const client = echoClient({ encoding });
      const bidi = client.bidi({ metadata: { "x-echo-b": "yes" } });
      for (let i = 1; i <= 3; i++) {
        bidi.send({ message: `m${String(i)}` });
        const res = await bidi.receive();
        assert.equal(res?.message, `m${String(i)}`);
        assert.equal(res?.index, BigInt(i));
      }
      assert.equal((await bidi.headers).get("x-echo-b"), "yes");
      bidi.closeSend();
      assert.equal(await bidi.receive(), undefined);
      assert.equal((await bidi.trailers).get("x-echo-b"), "yes");
    });

    it("an error status, with its non-ASCII message", async () => {
      const client = echoClient({ encoding });
      const err = await rejects(client.echo({ fail: { code: Code.NotFound, message: "nicht gefunden: Straße ✗ 見つかりません" } }));
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.rawMessage, "nicht gefunden: Straße ✗ 見つかりません");
      assert.equal(err.message, "[not_found] nicht gefunden: Straße ✗ 見つかりません");
      assert.equal(err.closeCode, undefined, "the status came in-band");
    });
  });
}

describe("errors", () => {
  it("a streaming error after messages: the messages, then the error", async () => {
    const client = echoClient();
    const got: number[] = [];
    const err = await rejects(
      (async () => {
        for await (const res of client.ticker({ count: 2, fail: { code: Code.DataLoss, message: "lost" } })) {
          got.push(res.index);
        }
      })(),
    );
    assert.deepEqual(got, [1, 2]);
    assert.equal(err.code, Code.DataLoss);
  });

  it("bidi: a failing message ends the stream, trailers reject", async () => {
    const bidi = echoClient().bidi();
    bidi.send({ message: "ok" });
    bidi.send({ fail: { code: Code.ResourceExhausted, message: "enough" } });
    assert.equal((await bidi.receive())?.message, "ok");
    const err = await rejects(bidi.receive());
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal((await rejects(bidi.trailers)).code, Code.ResourceExhausted);
    bidi.send({ message: "discarded after the end" });
  });

  it("unknown route: Unimplemented, 4012", async () => {
    const chat = createClient(ChatService, server.ws + "echo-only/", { WebSocket });
    const stream = chat.chat();
    const err = await rejects(stream.receive());
    assert.equal(err.code, Code.Unimplemented);
    assert.equal(err.closeCode, 4012);
    assert.match(err.rawMessage, /no route named "examples.chat.v1.ChatService.Chat"/);
  });

  it("a cross-site origin: PermissionDenied, 4007, and the backend never sees it", async () => {
    const id = randomUUID();
    const client = echoClient({ WebSocket: CrossSiteWebSocket, metadata: { "x-test-id": id } });
    const err = await rejects(client.echo({ message: "hi" }));
    assert.equal(err.code, Code.PermissionDenied);
    assert.equal(err.closeCode, 4007);
    assert.match(err.rawMessage, /origin "https:\/\/evil.example" not allowed/);
    assert.deepEqual(await server.calls(id), []);
  });

  it("over a connection limit: ResourceExhausted, 1013, retryable", async () => {
    const client = echoClient({}, "limited/");
    const ctl = new AbortController();
    const first = client.ticker({ count: 0, interval: durationFromMs(50) }, { signal: ctl.signal });
    await first.receive(); // the one connection allowed is open
    const err = await rejects(client.echo({ message: "second" }));
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.closeCode, CloseCode.TryAgainLater);
    ctl.abort();
    assert.equal((await rejects(first.receive())).code, Code.Canceled);
  });

  it("a message over the bridge's limit: ResourceExhausted, 1009", async () => {
    const err = await rejects(echoClient().echo({ payload: new Uint8Array(5 << 20) }));
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.closeCode, CloseCode.MessageTooBig);
  });

  it("the bridge shutting down: Unavailable in-band for open RPCs, 1001 for new ones", async () => {
    const client = echoClient({}, "doomed/");
    const ticker = client.ticker({ count: 0, interval: durationFromMs(20) });
    await ticker.receive();
    await server.closeDoomed();
    let err: GrpcWsError | undefined;
    try {
      for (;;) {
        if ((await ticker.receive()) === undefined) break;
      }
    } catch (e) {
      err = e as GrpcWsError;
    }
    assert.equal(err?.code, Code.Unavailable);
    assert.equal(err?.rawMessage, "grpcws: bridge shutting down");
    const refused = await rejects(client.echo({}));
    assert.equal(refused.code, Code.Unavailable);
    assert.equal(refused.closeCode, CloseCode.GoingAway);
  });

  it("a connection refused: Unavailable, 1006", async () => {
    const client = createClient(EchoService, "ws://127.0.0.1:1/", { WebSocket });
    const err = await rejects(client.echo({}));
    assert.equal(err.code, Code.Unavailable);
    assert.equal(err.closeCode, CloseCode.Abnormal);
  });

  it("refused metadata: InvalidArgument, 4003", async () => {
    const err = await rejects(echoClient().echo({}, { metadata: { "grpc-status": "0" } }));
    assert.equal(err.code, Code.InvalidArgument);
    assert.equal(err.closeCode, 4003);
  });
});

describe("cancellation and deadlines", () => {
  it("an AbortSignal cancels the RPC at the backend", async () => {
    const id = randomUUID();
    const ctl = new AbortController();
    const stream = echoClient({ metadata: { "x-test-id": id } }).ticker({ count: 0, interval: durationFromMs(10) }, { signal: ctl.signal });
    let n = 0;
    const err = await rejects(
      (async () => {
        for await (const _ of stream) {
          if (++n === 3) ctl.abort();
        }
      })(),
    );
    assert.equal(err.code, Code.Canceled);
    assert.equal(n, 3);
    const calls = await server.waitCalls(id, (c) => c[0]?.done === true);
    assert.equal(calls[0]?.code, "Canceled");
    assert.equal(calls[0]?.ctxErr, "context canceled");
  });

  it("leaving a for-await loop early cancels the RPC", async () => {
    const id = randomUUID();
    const stream = echoClient({ metadata: { "x-test-id": id } }).ticker({ count: 0, interval: durationFromMs(10) });
    for await (const res of stream) {
      if (res.index === 2) break;
    }
    const calls = await server.waitCalls(id, (c) => c[0]?.done === true);
    assert.equal(calls[0]?.code, "Canceled");
    assert.equal((await rejects(stream.trailers)).code, Code.Canceled);
  });

  it("an aborted signal fails at once, without a connection", async () => {
    const err = await rejects(echoClient().echo({}, { signal: AbortSignal.abort() }));
    assert.equal(err.code, Code.Canceled);
  });

  it("timeoutMs: DeadlineExceeded, and the backend got the deadline", async () => {
    const id = randomUUID();
    const err = await rejects(
      echoClient({ metadata: { "x-test-id": id } }).echo({ delay: durationFromMs(5_000) }, { timeoutMs: 200 }),
    );
    assert.equal(err.code, Code.DeadlineExceeded);
    const calls = await server.waitCalls(id, (c) => c[0]?.done === true);
    assert.ok(calls[0]?.hasDeadline, "the backend's context has a deadline");
    assert.ok(["DeadlineExceeded", "Canceled"].includes(calls[0]?.code ?? ""), calls[0]?.code);
  });
});

describe("bearer token", () => {
  it("reaches the backend as authorization, and not in the metadata", async () => {
    const id = randomUUID();
    const client = echoClient({ token: () => "s3cr3t/t0k3n+~", metadata: { "x-test-id": id } });
    await client.echo({});
    const calls = await server.waitCalls(id, (c) => c.length === 1);
    assert.equal(calls[0]?.authorization, "Bearer s3cr3t/t0k3n+~");
    assert.equal(calls[0]?.metadata["authorization"], undefined);
  });
});

describe("large messages", () => {
  it("1 MiB each way, unary and bidi", async () => {
    const big = new Uint8Array(1 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const client = echoClient();
    const res = await client.echo({ payload: big });
    assert.deepEqual(res.payload, big);
    const sized = await client.echo({ responseSize: 1 << 20 });
    assert.equal(sized.payload.length, 1 << 20);
    const bidi = client.bidi();
    bidi.send({ payload: big });
    bidi.send({ payload: big });
    bidi.closeSend();
    let n = 0;
    for await (const r of bidi) {
      assert.deepEqual(r.payload, big);
      n++;
    }
    assert.equal(n, 2);
  });
});

describe("chat", () => {
  function joinRequest(room: string, nickname: string) {
    return create(ChatRequestSchema, { kind: { case: "join", value: { room, nickname } } });
  }

  it("fans a message out to everyone in the room", async () => {
    const chat = createClient(ChatService, server.ws, { WebSocket });
    const room = `room-${randomUUID()}`;
    const ann = chat.chat();
    const bob = chat.chat();
    const annGot: ChatResponse[] = [];
    ann.send(joinRequest(room, "ann"));
    annGot.push((await ann.receive())!); // ann joined
    annGot.push((await ann.receive())!); // members: ann
    bob.send(joinRequest(room, "bob"));
    const next = async (s: typeof ann) => {
      const r = await s.receive();
      assert.ok(r);
      return r;
    };
    const joined = await next(ann);
    assert.equal(joined.kind.case === "message" && joined.kind.value.text, "bob joined");
    const members = await next(ann);
    assert.deepEqual(members.kind.case === "members" && members.kind.value.nicknames, ["ann", "bob"]);
    bob.send({ kind: { case: "say", value: { text: "hallo ✓" } } });
    for (const s of [ann, bob]) {
      for (;;) {
        const r = await next(s);
        if (r.kind.case === "message" && !r.kind.value.system) {
          assert.equal(r.kind.value.nickname, "bob");
          assert.equal(r.kind.value.text, "hallo ✓");
          break;
        }
      }
    }
    bob.closeSend();
    ann.closeSend();
    await bob.trailers;
    await ann.trailers;
    assert.equal(annGot[0]?.kind.case, "message");
  });

  it("withReconnect gives up at once on AlreadyExists", async () => {
    const chat = createClient(ChatService, server.ws, { WebSocket });
    const room = `room-${randomUUID()}`;
    const holder = chat.chat();
    holder.send(joinRequest(room, "taken"));
    await holder.receive();
    const attempts: number[] = [];
    const err = await rejects(
      withReconnect(
        async ({ attempt, signal }) => {
          attempts.push(attempt);
          const s = chat.chat({ signal });
          s.send(joinRequest(room, "taken"));
          for await (const _ of s) {
            // never: the nickname is taken
          }
        },
        { initialDelayMs: 1 },
      ),
    );
    assert.equal(err.code, Code.AlreadyExists);
    assert.deepEqual(attempts, [0]);
    holder.cancel();
  });
});

describe("withReconnect", () => {
  it("runs a stream again after Unavailable, until it ends with OK", async () => {
    const client = echoClient();
    const seen: string[] = [];
    const retries: Code[] = [];
    await withReconnect(
      async ({ attempt, signal }) => {
        const fail = attempt < 2 ? { code: Code.Unavailable, message: "backend restarting" } : undefined;
        for await (const res of client.ticker({ message: `a${String(attempt)}`, count: 2, ...(fail ? { fail } : {}) }, { signal })) {
          seen.push(`${res.message}.${String(res.index)}`);
        }
      },
      { initialDelayMs: 5, onRetry: (e) => retries.push(e.code) },
    );
    assert.deepEqual(seen, ["a0.1", "a0.2", "a1.1", "a1.2", "a2.1", "a2.2"]);
    assert.deepEqual(retries, [Code.Unavailable, Code.Unavailable]);
  });
});
