// Pure unit tests: close-code mapping, control frames, metadata encoding,
// URLs, backoff.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import type { Metadata } from "../src/gen/grpcws/v1/control_pb.js";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, CloseCode, GrpcWsError, backoffDelay, codeName, errorFromClose, isRetryable, withReconnect } from "../src/index.js";
import { bearerSubprotocol, decodeBase64, encodeBase64, encodeTimeout, metadataEntries } from "../src/metadata.js";
import { endSendFrame, parseServerControl, routeName, webSocketURL } from "../src/protocol.js";
import { EchoService } from "../src/gen/examples/echo/v1/echo_pb.js";
import { ChatService } from "../src/gen/examples/chat/v1/chat_pb.js";

// The vectors that the Go side (internal/v1wire) is tested against too.
interface Vectors {
  closes: { close: number; reason: string; code: number; message: string }[];
  timeouts: { ms: number; encoded: string }[];
  tokens: { token: string; entry: string }[];
  routes: { method: string; name: string }[];
  endSend: string;
  serverFrames: {
    frame: string;
    kind: string;
    code?: number;
    message?: string;
    details?: { typeUrl: string; value: string }[];
    metadata?: Record<string, string[]>;
  }[];
}
const vectors = JSON.parse(
  readFileSync(new URL("../../../internal/v1wire/testdata/vectors.json", import.meta.url), "utf8"),
) as Vectors;

describe("the shared vectors", () => {
  it("close codes without an end frame", () => {
    assert.ok(vectors.closes.length > 10);
    for (const c of vectors.closes) {
      const err = errorFromClose(c.close, c.reason);
      assert.equal(err.code as number, c.code, `close ${String(c.close)} ${c.reason}`);
      assert.equal(err.rawMessage, c.message);
      assert.equal(err.closeCode, c.close);
      assert.equal(err.closeReason, c.reason);
      assert.ok(err instanceof GrpcWsError && err instanceof Error);
      assert.equal(err.name, "GrpcWsError");
    }
  });

  it("timeouts", () => {
    for (const t of vectors.timeouts) {
      assert.equal(encodeTimeout(t.ms), t.encoded, `${String(t.ms)} ms`);
    }
  });

  it("bearer tokens", () => {
    for (const t of vectors.tokens) {
      assert.equal(bearerSubprotocol(t.token), t.entry);
    }
  });

  it("route names", () => {
    for (const r of vectors.routes) {
      const [service = "", name = ""] = r.method.slice(1).split("/");
      const method = { parent: { typeName: service }, name } as unknown as DescMethod;
      assert.equal(routeName(method), r.name);
    }
  });

  it("end of send", () => {
    assert.equal(endSendFrame, vectors.endSend);
  });

  it("frames from the bridge", () => {
    for (const v of vectors.serverFrames) {
      const f = parseServerControl(v.frame.slice(1));
      assert.equal(f.kind, v.kind, v.frame);
      const entries = (m: Metadata | undefined) =>
        Object.fromEntries(Object.entries(m?.entries ?? {}).map(([k, vs]) => [k, vs.values]));
      if (f.kind === "headers") {
        assert.deepEqual(entries(f.headers), v.metadata);
      }
      if (f.kind === "end") {
        assert.equal(f.end.status?.code ?? 0, v.code);
        assert.equal(f.end.status?.message ?? "", v.message);
        assert.deepEqual(
          (f.end.status?.details ?? []).map((d) => ({ typeUrl: d.typeUrl, value: encodeBase64(d.value) })),
          v.details,
        );
        assert.deepEqual(entries(f.end.trailers), v.metadata);
      }
    }
  });
});

describe("GrpcWsError", () => {
  it("formats its message with the code's name", () => {
    assert.equal(new GrpcWsError("boom", Code.DataLoss).message, "[data_loss] boom");
    assert.equal(new GrpcWsError("", Code.Aborted).message, "[aborted]");
    assert.equal(new GrpcWsError("x", Code.OK).code, Code.Unknown, "OK is not an error code");
  });

  it("decodes the details of a given type", () => {
    const d = create(DurationSchema, { seconds: 3n });
    const err = new GrpcWsError("slow down", Code.ResourceExhausted, {
      details: [
        { typeUrl: "type.googleapis.com/google.protobuf.Duration", value: toBinary(DurationSchema, d) },
        { typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: new Uint8Array([1, 2, 3]) },
      ],
    });
    const found = err.findDetails(DurationSchema);
    assert.equal(found.length, 1);
    assert.equal(found[0]?.seconds, 3n);
  });

  it("from: wraps other errors, keeps GrpcWsErrors", () => {
    const g = new GrpcWsError("x", Code.NotFound);
    assert.equal(GrpcWsError.from(g), g);
    assert.equal(GrpcWsError.from(new Error("e")).code, Code.Unknown);
    assert.equal(GrpcWsError.from(new DOMException("stop", "AbortError")).code, Code.Canceled);
    assert.equal(GrpcWsError.from(new DOMException("late", "TimeoutError")).code, Code.DeadlineExceeded);
    assert.equal(GrpcWsError.from("s", Code.Internal).rawMessage, "s");
  });

  it("codeName", () => {
    assert.equal(codeName(Code.InvalidArgument), "invalid_argument");
    assert.equal(codeName(Code.Unauthenticated), "unauthenticated");
  });
});

describe("control frames", () => {
  it("end of send is #{\"endSend\":{}}", () => {
    assert.equal(endSendFrame, '#{"endSend":{}}');
  });

  it("parses headers", () => {
    const f = parseServerControl('{"headers":{"entries":{"k":{"values":["v1","v2"]}}}}');
    assert.equal(f.kind, "headers");
    assert.deepEqual(f.kind === "headers" && f.headers.entries["k"]?.values, ["v1", "v2"]);
  });

  it("parses an end with status, details and trailers", () => {
    const f = parseServerControl(
      '{"end":{"status":{"code":5,"message":"nicht gefunden","details":[{"typeUrl":"type.googleapis.com/x.Y","value":"AQI="}]},"trailers":{"entries":{"t":{"values":["1"]}}}}}',
    );
    assert.equal(f.kind, "end");
    if (f.kind !== "end") return;
    assert.equal(f.end.status?.code, 5);
    assert.equal(f.end.status?.message, "nicht gefunden");
    assert.deepEqual(f.end.status?.details[0]?.value, new Uint8Array([1, 2]));
    assert.deepEqual(f.end.trailers?.entries["t"]?.values, ["1"]);
  });

  it("accepts an end with its members absent", () => {
    const f = parseServerControl('{"end":{}}');
    assert.equal(f.kind === "end" && f.end.status, undefined);
  });

  it("ignores members it does not know, and skips a frame with none it knows", () => {
    assert.equal(parseServerControl('{"headers":{"entries":{}},"later":{"x":1}}').kind, "headers");
    assert.equal(parseServerControl('{"later":{"x":1}}').kind, "unknown");
    assert.equal(parseServerControl("{}").kind, "unknown");
  });

  it("throws on what is not a ServerControl", () => {
    assert.throws(() => parseServerControl("not json"));
    assert.throws(() => parseServerControl('{"end":{"status":{"code":"many"}}}'));
    assert.throws(() => parseServerControl("[]"));
  });
});

describe("routes and URLs", () => {
  it("route names are the full method name with a dot", () => {
    assert.equal(routeName(EchoService.method.echo), "examples.echo.v1.EchoService.Echo");
    assert.equal(routeName(ChatService.method.chat), "examples.chat.v1.ChatService.Chat");
  });

  it("turns http into ws and adds the query", () => {
    assert.equal(webSocketURL("http://h:1/api", [["k", "v w"]]), "ws://h:1/api?k=v+w");
    assert.equal(webSocketURL("https://h/#frag", []), "wss://h/");
    assert.equal(webSocketURL("wss://h/x?a=1", [["a", "2"]]), "wss://h/x?a=1&a=2");
    assert.throws(() => webSocketURL("ftp://h/", []), TypeError);
  });
});

describe("metadata", () => {
  it("lists entries in order, lower-cased, binary values in base64", () => {
    assert.deepEqual(metadataEntries({ "X-A": "1", "x-b": ["2", "3"], "x-c-bin": new Uint8Array([0xfb, 0xff]) }), [
      ["x-a", "1"],
      ["x-b", "2"],
      ["x-b", "3"],
      ["x-c-bin", "+/8="],
    ]);
    assert.deepEqual(metadataEntries([["k", "v"], ["k", "w"]]), [
      ["k", "v"],
      ["k", "w"],
    ]);
    assert.deepEqual(metadataEntries(new Map([["m", "1"]])), [["m", "1"]]);
    assert.deepEqual(metadataEntries(undefined), []);
  });

  it("bearer tokens are base64url without padding", () => {
    assert.equal(bearerSubprotocol("s3cr3t/t0k3n+~"), "base64url.bearer.grpcws.czNjcjN0L3QwazNuK34");
    assert.equal(bearerSubprotocol("??>"), "base64url.bearer.grpcws.Pz8-");
  });

  it("base64 both ways, either alphabet, padding optional", () => {
    const bytes = new Uint8Array([0, 0xfb, 0xff, 1]);
    assert.equal(encodeBase64(bytes), "APv/AQ==");
    assert.deepEqual(decodeBase64("APv/AQ=="), bytes);
    assert.deepEqual(decodeBase64("APv_AQ"), bytes);
    const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
    assert.deepEqual(decodeBase64(encodeBase64(big)), big);
  });

  it("timeouts in gRPC's format, rounded up, at most 8 digits", () => {
    assert.equal(encodeTimeout(500), "500000u");
    assert.equal(encodeTimeout(0.2), "200000n");
    assert.equal(encodeTimeout(99_999_999), "99999999m");
    assert.equal(encodeTimeout(100_000_000), "100000S");
    assert.equal(encodeTimeout(0), "1n");
  });
});

describe("backoff", () => {
  it("grows, is capped, and is jittered below the cap", () => {
    const top = { random: () => 0.999999 };
    assert.equal(backoffDelay(1, top), 499);
    assert.equal(backoffDelay(2, top), 999);
    assert.equal(backoffDelay(20, top), 29_999);
    assert.equal(backoffDelay(3, { random: () => 0 }), 0);
    assert.equal(backoffDelay(3, { random: () => 0.5, initialDelayMs: 100, multiplier: 3 }), 450);
  });

  it("retries only what may succeed", () => {
    const retryable: [Code, number | undefined][] = [
      [Code.Unavailable, 1001],
      [Code.Unavailable, 1006],
      [Code.Unavailable, undefined],
      [Code.ResourceExhausted, 1013],
      [Code.ResourceExhausted, undefined],
      [Code.Aborted, undefined],
      [Code.DeadlineExceeded, 4004],
    ];
    for (const [code, closeCode] of retryable) {
      assert.ok(isRetryable(new GrpcWsError("", code, closeCode === undefined ? {} : { closeCode })), `${codeName(code)} ${String(closeCode)}`);
    }
    const pointless: [Code, number | undefined][] = [
      [Code.ResourceExhausted, CloseCode.MessageTooBig],
      [Code.PermissionDenied, 4007],
      [Code.Unimplemented, 4012],
      [Code.InvalidArgument, 4003],
      [Code.Unauthenticated, undefined],
      [Code.Canceled, undefined],
      [Code.Internal, 1002],
      [Code.NotFound, undefined],
      [Code.AlreadyExists, undefined],
    ];
    for (const [code, closeCode] of pointless) {
      assert.ok(!isRetryable(new GrpcWsError("", code, closeCode === undefined ? {} : { closeCode })), `${codeName(code)} ${String(closeCode)}`);
    }
  });
});

describe("withReconnect", () => {
  const unavailable = () => new GrpcWsError("gone", Code.Unavailable, { closeCode: 1006 });

  it("retries until success, with growing delays", async () => {
    const delays: number[] = [];
    const got = await withReconnect(
      async ({ attempt }) => {
        if (attempt < 3) throw unavailable();
        return `ok after ${String(attempt)}`;
      },
      { initialDelayMs: 2, random: () => 0.999, onRetry: (_e, _a, d) => delays.push(d) },
    );
    assert.equal(got, "ok after 3");
    assert.deepEqual(delays, [1, 3, 7]);
  });

  it("gives up on an error not worth retrying", async () => {
    let runs = 0;
    await assert.rejects(
      withReconnect(async () => {
        runs++;
        throw new GrpcWsError("no", Code.PermissionDenied, { closeCode: 4007 });
      }),
      (e: unknown) => e instanceof GrpcWsError && e.code === Code.PermissionDenied,
    );
    assert.equal(runs, 1);
  });

  it("gives up after maxAttempts failures in a row", async () => {
    let runs = 0;
    await assert.rejects(
      withReconnect(
        async () => {
          runs++;
          throw unavailable();
        },
        { maxAttempts: 3, initialDelayMs: 1 },
      ),
      (e: unknown) => e instanceof GrpcWsError && e.code === Code.Unavailable,
    );
    assert.equal(runs, 3);
  });

  it("connected() starts the backoff again", async () => {
    const delays: number[] = [];
    await withReconnect(
      async ({ attempt, connected }) => {
        if (attempt === 2) connected();
        if (attempt < 4) throw unavailable();
      },
      { initialDelayMs: 10, random: () => 0.999, onRetry: (_e, _a, d) => delays.push(d) },
    );
    assert.deepEqual(delays, [9, 19, 9, 19]);
  });

  it("stops when its signal is aborted, during the wait too", async () => {
    const ctl = new AbortController();
    let runs = 0;
    const p = withReconnect(
      async ({ signal }) => {
        runs++;
        assert.equal(signal.aborted, false);
        throw unavailable();
      },
      { signal: ctl.signal, initialDelayMs: 60_000, random: () => 0.5 },
    );
    setTimeout(() => ctl.abort(), 10);
    await assert.rejects(p, (e: unknown) => e instanceof GrpcWsError && e.code === Code.Canceled);
    assert.equal(runs, 1);
  });

  it("aborts the running attempt's signal", async () => {
    const ctl = new AbortController();
    const p = withReconnect(
      ({ signal }) =>
        new Promise<void>((_resolve, reject) => {
          signal.addEventListener("abort", () => reject(new GrpcWsError("stopped", Code.Canceled)));
          ctl.abort();
        }),
      { signal: ctl.signal },
    );
    await assert.rejects(p, (e: unknown) => e instanceof GrpcWsError && e.code === Code.Canceled);
  });

  it("throws errors that are not GrpcWsErrors at once", async () => {
    let runs = 0;
    await assert.rejects(
      withReconnect(async () => {
        runs++;
        throw new TypeError("bug");
      }),
      TypeError,
    );
    assert.equal(runs, 1);
  });
});
