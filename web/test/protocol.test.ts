// Pure unit tests: close-code mapping, errors, control frames, request
// metadata, URLs, backoff.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { StatusSchema } from "../src/gen/grpcws/v1/control_pb.js";
import type { Metadata } from "../src/gen/grpcws/v1/control_pb.js";
import { CloseCode, WebSocketClose, backoffDelay, closeCodeOf, isRetryable, withReconnect } from "../src/index.js";
import { errorFromClose, errorFromStatus, protocolError } from "../src/errors.js";
import { bearerSubprotocol, decodeBase64, encodeBase64, encodeTimeout, requestWire, toHeaders } from "../src/metadata.js";
import { endSendFrame, parseServerControl, routeName, statusOfClose, webSocketURL } from "../src/protocol.js";
import { EchoService, FailureSchema } from "../src/gen/examples/echo/v1/echo_pb.js";
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
      const what = `close ${String(c.close)} ${c.reason}`;
      const err = errorFromClose(c.close, c.reason);
      assert.ok(err instanceof ConnectError && err instanceof Error, what);
      assert.equal(err.code as number, c.code, what);
      assert.equal(err.rawMessage, c.message, what);
      assert.equal(closeCodeOf(err), c.close, what);
      assert.ok(err.cause instanceof WebSocketClose, what);
      assert.equal(err.cause.reason, c.reason, what);
      assert.equal(err.isWireError, c.close !== CloseCode.Abnormal, what);
      assert.deepEqual(statusOfClose(c.close, c.reason), { code: c.code, message: c.message }, what);
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

describe("errors", () => {
  const status = (code: number, message: string, details: { typeUrl: string; value: Uint8Array }[] = []) =>
    create(StatusSchema, { code, message, details });

  it("errorFromStatus: the code, the message as ConnectError formats it, the trailers as metadata", () => {
    const trailers = new Headers([
      ["t", "1"],
      ["t", "2"],
    ]);
    const err = errorFromStatus(status(5, "nicht gefunden ✗"), trailers);
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.NotFound);
    assert.equal(err.rawMessage, "nicht gefunden ✗");
    assert.equal(err.message, "[not_found] nicht gefunden ✗");
    assert.equal(err.name, "ConnectError");
    assert.equal(err.metadata.get("t"), "1, 2");
    assert.equal(err.isWireError, true);
    assert.deepEqual(err.details, []);
    assert.equal(closeCodeOf(err), undefined, "the status came in-band");
    assert.equal(errorFromStatus(status(10, ""), new Headers()).message, "[aborted]");
  });

  it("errorFromStatus: a code outside gRPC's is Unknown", () => {
    assert.equal(errorFromStatus(status(17, "x"), new Headers()).code, Code.Unknown);
    assert.equal(errorFromStatus(status(-1, "x"), new Headers()).code, Code.Unknown);
    assert.equal(errorFromStatus(status(16, "who"), new Headers()).code, Code.Unauthenticated);
  });

  it("errorFromStatus: details by type name, which findDetails decodes", () => {
    const duration = toBinary(DurationSchema, create(DurationSchema, { seconds: 3n }));
    const failure = toBinary(FailureSchema, create(FailureSchema, { code: 8, message: "slow down" }));
    const err = errorFromStatus(
      status(8, "slow down", [
        { typeUrl: "type.googleapis.com/google.protobuf.Duration", value: duration },
        { typeUrl: "type.googleapis.com/google.rpc.ErrorInfo", value: new Uint8Array([1, 2, 3]) },
        { typeUrl: "examples.echo.v1.Failure", value: failure },
      ]),
      new Headers(),
    );
    assert.deepEqual(err.details, [
      { type: "google.protobuf.Duration", value: duration },
      { type: "google.rpc.ErrorInfo", value: new Uint8Array([1, 2, 3]) },
      { type: "examples.echo.v1.Failure", value: failure },
    ]);
    const found = err.findDetails(DurationSchema);
    assert.equal(found.length, 1);
    assert.equal(found[0]?.seconds, 3n);
    assert.deepEqual(
      err.findDetails(FailureSchema).map((f) => [f.code, f.message]),
      [[8, "slow down"]],
    );
    assert.deepEqual(err.findDetails(StatusSchema), []);
  });

  it("errorFromClose: a ConnectError with a WebSocketClose as its cause", () => {
    const err = errorFromClose(1009, "");
    assert.equal(err.code, Code.ResourceExhausted);
    assert.equal(err.rawMessage, "grpcws: message too big (close code 1009)");
    assert.ok(err.cause instanceof WebSocketClose);
    assert.equal(err.cause.code, 1009);
    assert.equal(err.cause.reason, "");
    assert.equal(err.cause.name, "WebSocketClose");
    assert.equal(err.cause.message, "WebSocket closed with 1009");
    assert.equal(new WebSocketClose(4007, "no").message, "WebSocket closed with 4007: no");
    assert.equal(errorFromClose(1006, "").isWireError, false, "a dropped connection did not come from the wire");
  });

  it("closeCodeOf: the close code of a close without a status, and undefined for anything else", () => {
    assert.equal(closeCodeOf(errorFromClose(4007, "x")), 4007);
    assert.equal(closeCodeOf(new ConnectError("x", Code.Unavailable, undefined, undefined, new WebSocketClose(1001, ""))), 1001);
    assert.equal(closeCodeOf(errorFromStatus(status(14, "down"), new Headers())), undefined);
    assert.equal(closeCodeOf(new ConnectError("x", Code.Unavailable)), undefined);
    assert.equal(closeCodeOf(new ConnectError("x", Code.Unavailable, undefined, undefined, new Error("other"))), undefined);
    assert.equal(closeCodeOf(protocolError("bad")), undefined);
    assert.equal(closeCodeOf(new Error("x")), undefined);
    assert.equal(closeCodeOf(new WebSocketClose(1006, "")), undefined, "the cause itself is not a ConnectError");
    assert.equal(closeCodeOf({ cause: new WebSocketClose(1006, "") }), undefined);
    assert.equal(closeCodeOf(undefined), undefined);
    assert.equal(closeCodeOf("1006"), undefined);
  });

  it("protocolError is Internal, with the trailers when there are some", () => {
    const err = protocolError("no response to Echo", new Headers({ t: "1" }));
    assert.equal(err.code, Code.Internal);
    assert.equal(err.rawMessage, "protocol error: no response to Echo");
    assert.equal(err.metadata.get("t"), "1");
    assert.equal(protocolError("x").metadata.get("t"), null);
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
    assert.throws(() => webSocketURL("/relative", []), TypeError, "no page to resolve it against");
  });

  it("resolves a relative base against the page's location", () => {
    const g = globalThis as { location?: unknown };
    assert.equal(g.location, undefined);
    g.location = { href: "https://app.example/some/page?q=1" };
    try {
      assert.equal(webSocketURL("/", []), "wss://app.example/");
      assert.equal(webSocketURL("grpcws", [["k", "v"]]), "wss://app.example/some/grpcws?k=v");
    } finally {
      delete g.location;
    }
  });
});

describe("request metadata", () => {
  it("requestWire: headers become the query, with keys lower-cased as Headers does", () => {
    const h = new Headers({ "X-B": "2", "x-a": "1 2", "X-C-Bin": "+/8=" });
    const w = requestWire(h);
    assert.deepEqual(w.query, [
      ["x-a", "1 2"],
      ["x-b", "2"],
      ["x-c-bin", "+/8="],
    ]);
    assert.equal(w.token, undefined);
    assert.deepEqual(requestWire(new Headers()), { query: [], token: undefined });
  });

  it("requestWire: values appended to one key arrive joined, as Headers joins them", () => {
    const h = new Headers();
    h.append("x-b", "2");
    h.append("X-B", "3");
    assert.deepEqual(requestWire(h).query, [["x-b", "2, 3"]]);
  });

  it("requestWire: an authorization: Bearer header is the token, not in the query", () => {
    const w = requestWire(new Headers({ Authorization: "Bearer s3cr3t/t0k3n+~", "x-a": "1" }));
    assert.equal(w.token, "s3cr3t/t0k3n+~");
    assert.deepEqual(w.query, [["x-a", "1"]]);
    assert.equal(requestWire(new Headers({ authorization: "bearer lower" })).token, "lower");
    assert.equal(requestWire(new Headers({ authorization: "BEARER\tupper" })).token, "upper");
    assert.equal(requestWire(new Headers({ authorization: "Bearer  two spaces" })).token, "two spaces");
  });

  it("requestWire: any other authorization is refused with InvalidArgument", () => {
    for (const value of ["Basic dXNlcjpwdw==", "Bearer", "Bearertoken", "token"]) {
      assert.throws(
        () => requestWire(new Headers({ authorization: value, "x-a": "1" })),
        (e: unknown) => e instanceof ConnectError && e.code === Code.InvalidArgument && /Bearer/.test(e.message),
        value,
      );
    }
  });

  it("toHeaders copies metadata into Headers, skipping what Headers cannot hold", () => {
    const f = parseServerControl('{"headers":{"entries":{"x-a":{"values":["1","2"]},"x-b-bin":{"values":["AAEC"]},"bad key":{"values":["v"]}}}}');
    assert.equal(f.kind, "headers");
    if (f.kind !== "headers") return;
    const h = toHeaders(f.headers);
    assert.equal(h.get("x-a"), "1, 2");
    assert.equal(h.get("x-b-bin"), "AAEC");
    assert.deepEqual([...h.keys()], ["x-a", "x-b-bin"]);
    assert.deepEqual([...toHeaders(undefined)], []);
  });

  it("bearer tokens are base64url without padding", () => {
    assert.equal(bearerSubprotocol("s3cr3t/t0k3n+~"), "base64url.bearer.grpcws.czNjcjN0L3QwazNuK34");
    assert.equal(bearerSubprotocol("??>"), "base64url.bearer.grpcws.Pz8-");
    assert.equal(bearerSubprotocol("ü"), "base64url.bearer.grpcws.w7w", "UTF-8");
  });

  it("base64 both ways, either alphabet, padding optional", () => {
    const bytes = new Uint8Array([0, 0xfb, 0xff, 1]);
    assert.equal(encodeBase64(bytes), "APv/AQ==");
    assert.deepEqual(decodeBase64("APv/AQ=="), bytes);
    assert.deepEqual(decodeBase64("APv_AQ"), bytes);
    assert.deepEqual(decodeBase64(""), new Uint8Array());
    const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
    assert.deepEqual(decodeBase64(encodeBase64(big)), big);
  });

  it("timeouts in gRPC's format, rounded up, at most 8 digits", () => {
    assert.equal(encodeTimeout(500), "500000u");
    assert.equal(encodeTimeout(0.2), "200000n");
    assert.equal(encodeTimeout(99_999_999), "99999999m");
    assert.equal(encodeTimeout(100_000_000), "100000S");
    assert.equal(encodeTimeout(0), "1n");
    assert.equal(encodeTimeout(-5), "1n");
    assert.equal(encodeTimeout(Infinity), "99999999H");
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
    const err = (code: Code, closeCode: number | undefined) =>
      new ConnectError("", code, undefined, undefined, closeCode === undefined ? undefined : new WebSocketClose(closeCode, ""));
    const retryable: [Code, number | undefined][] = [
      [Code.Unavailable, 1001],
      [Code.Unavailable, 1006],
      [Code.Unavailable, undefined],
      [Code.ResourceExhausted, CloseCode.TryAgainLater],
      [Code.ResourceExhausted, undefined],
      [Code.Aborted, undefined],
      [Code.DeadlineExceeded, 4004],
    ];
    for (const [code, closeCode] of retryable) {
      assert.ok(isRetryable(err(code, closeCode)), `${Code[code]} ${String(closeCode)}`);
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
      [Code.Unknown, undefined],
    ];
    for (const [code, closeCode] of pointless) {
      assert.ok(!isRetryable(err(code, closeCode)), `${Code[code]} ${String(closeCode)}`);
    }
  });

  it("does not retry a message over the size limit, reported in-band on a shared socket", () => {
    for (const msg of ["grpcws: client message larger than 4194304 bytes", "grpc: received message larger than max (5 vs. 4)"]) {
      assert.ok(!isRetryable(new ConnectError(msg, Code.ResourceExhausted)), msg);
    }
    assert.ok(isRetryable(new ConnectError("quota exceeded, try later", Code.ResourceExhausted)));
  });

  it("retries the errors errorFromClose and errorFromStatus make as their codes say", () => {
    assert.equal(isRetryable(errorFromClose(CloseCode.TryAgainLater, "")), true);
    assert.equal(isRetryable(errorFromClose(CloseCode.MessageTooBig, "")), false);
    assert.equal(isRetryable(errorFromClose(CloseCode.GoingAway, "")), true);
    assert.equal(isRetryable(errorFromClose(4007, "")), false);
    assert.equal(isRetryable(errorFromStatus(create(StatusSchema, { code: Code.ResourceExhausted }), new Headers())), true);
  });
});

describe("withReconnect", () => {
  const unavailable = () => errorFromClose(CloseCode.Abnormal, "");

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
        throw errorFromClose(4007, "no");
      }),
      (e: unknown) => e instanceof ConnectError && e.code === Code.PermissionDenied,
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
      (e: unknown) => e instanceof ConnectError && e.code === Code.Unavailable,
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
    await assert.rejects(p, (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled);
    assert.equal(runs, 1);
  });

  it("aborts the running attempt's signal", async () => {
    const ctl = new AbortController();
    const p = withReconnect(
      ({ signal }) =>
        new Promise<void>((_resolve, reject) => {
          signal.addEventListener("abort", () => reject(new ConnectError("stopped", Code.Canceled)));
          ctl.abort();
        }),
      { signal: ctl.signal },
    );
    await assert.rejects(p, (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled);
  });

  it("throws errors that are not ConnectErrors at once", async () => {
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
