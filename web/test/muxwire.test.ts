// The grpcws.mux.v1 frame codec against the vectors the Go side
// (internal/muxwire) is tested against too, and its refusals.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import {
  FrameType,
  MuxProtocolError,
  defaultSettings,
  encodeFrame,
  endPayload,
  goAwayPayload,
  headersPayload,
  openPayload,
  parseEnd,
  parseGoAway,
  parseHeaders,
  parseOpen,
  parseSettings,
  parseToken,
  parseWindow,
  readFrame,
  readFrames,
  settingsPayload,
  tokenPayload,
  typeName,
  windowPayload,
} from "../src/muxwire.js";
import type { Metadata } from "../src/gen/grpcws/v1/control_pb.js";

interface Vectors {
  frames: {
    name: string;
    type: number;
    flags: number;
    stream: number;
    hex: string;
    data?: string;
    settings?: { maxStreams?: number; streamWindow?: number };
    open?: { route: string; metadata?: Record<string, string[]>; timeout?: string };
    headers?: Record<string, string[]>;
    end?: { code: number; message: string; trailers: Record<string, string[]> };
    window?: number;
    goaway?: { lastStream: number; reason: string };
    token?: string;
  }[];
  malformed: { name: string; hex: string }[];
}

const vectors = JSON.parse(
  readFileSync(new URL("../../../internal/muxwire/testdata/vectors.json", import.meta.url), "utf8"),
) as Vectors;

function unhex(s: string): Uint8Array {
  const t = s.replace(/ /g, "");
  const b = new Uint8Array(t.length / 2);
  for (let i = 0; i < b.length; i++) {
    b[i] = parseInt(t.slice(2 * i, 2 * i + 2), 16);
  }
  return b;
}

function entries(md: Metadata | undefined): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(md?.entries ?? {})) {
    out[k] = v.values;
  }
  return out;
}


describe("the shared vectors", () => {
  it("has every frame type", () => {
    const types = new Set(vectors.frames.map((f) => f.type));
    for (const t of Object.values(FrameType)) {
      assert.ok(types.has(t), typeName(t));
    }
  });

  for (const f of vectors.frames) {
    it(f.name, () => {
      const want = unhex(f.hex);

      // Encode from the fields.
      let payload: Uint8Array;
      if (f.type === FrameType.Settings) {
        payload = settingsPayload({ ...defaultSettings, ...f.settings });
      } else if (f.open !== undefined) {
        payload = openPayload(f.open.route, f.open.metadata ?? {}, f.open.timeout ?? "");
      } else if (f.headers !== undefined) {
        payload = headersPayload(f.headers);
      } else if (f.end !== undefined) {
        payload = endPayload(f.end.code, f.end.message, f.end.trailers);
      } else if (f.window !== undefined) {
        payload = windowPayload(f.window);
      } else if (f.goaway !== undefined) {
        payload = goAwayPayload(f.goaway.lastStream, f.goaway.reason);
      } else if (f.token !== undefined) {
        payload = tokenPayload(f.token);
      } else {
        payload = unhex(f.data ?? "");
      }
      assert.deepEqual(encodeFrame(f.type, f.flags, f.stream, payload), want);

      // Decode the bytes.
      const { frame, next } = readFrame(want, 0);
      assert.equal(next, want.length);
      assert.equal(frame.type, f.type);
      assert.equal(frame.flags, f.flags);
      assert.equal(frame.stream, f.stream);
      const p = frame.payload;
      if (f.type === FrameType.Settings) {
        assert.deepEqual(parseSettings(p), { ...defaultSettings, ...f.settings });
      } else if (f.open !== undefined) {
        const o = parseOpen(p);
        assert.equal(o.route, f.open.route);
        assert.deepEqual(entries(o.metadata), f.open.metadata ?? {});
        assert.equal(o.timeout, f.open.timeout ?? "");
      } else if (f.headers !== undefined) {
        assert.deepEqual(entries(parseHeaders(p)), f.headers);
      } else if (f.end !== undefined) {
        const e = parseEnd(p);
        assert.equal(e.status?.code ?? 0, f.end.code);
        assert.equal(e.status?.message ?? "", f.end.message);
        assert.deepEqual(entries(e.trailers), f.end.trailers);
      } else if (f.window !== undefined) {
        assert.equal(parseWindow(p), f.window);
      } else if (f.goaway !== undefined) {
        assert.deepEqual(parseGoAway(p), f.goaway);
      } else if (f.token !== undefined) {
        assert.equal(parseToken(p), f.token);
      } else {
        assert.deepEqual(p, unhex(f.data ?? ""));
      }
    });
  }

  for (const m of vectors.malformed) {
    it(`refuses a frame: ${m.name}`, () => {
      assert.throws(() => readFrame(unhex(m.hex), 0), MuxProtocolError);
    });
  }

  it("reads the frames of a message that batches them, and refuses one that ends in the middle of a frame", () => {
    const [a, b, c] = vectors.frames.filter((f) => f.name.startsWith("DATA")).map((f) => unhex(f.hex));
    assert.ok(a && b && c);
    const msg = new Uint8Array([...a, ...b, ...c]);
    assert.deepEqual(
      readFrames(msg).map((f) => [f.type, f.flags, f.stream, [...f.payload]]),
      [
        [FrameType.Data, 1, 1, [0x0a, 0x02, 0x68, 0x69]],
        [FrameType.Data, 1, 3, []],
        [FrameType.Data, 0, 3, [1, 2]],
      ],
    );
    assert.throws(() => readFrames(msg.subarray(0, msg.length - 1)), MuxProtocolError);
    assert.deepEqual(readFrames(new Uint8Array()), []);
  });
});

describe("payloads", () => {
  const settingsEntry = (id: number, v: number) => new Uint8Array([id >> 8, id & 0xff, v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff]);

  it("SETTINGS: every entry, unknown ids ignored, defaults left out when written", () => {
    const p = new Uint8Array([
      ...settingsEntry(1, 7),
      ...settingsEntry(2, 1000),
      ...settingsEntry(3, 5000),
      ...settingsEntry(4, 2048),
      ...settingsEntry(5, 99),
      ...settingsEntry(6, 4096),
      ...settingsEntry(0x99, 1),
    ]);
    const s = parseSettings(p);
    assert.deepEqual(s, { maxStreams: 7, streamWindow: 1000, connWindow: 5000, maxFrameSize: 2048, maxMessageSize: 99, maxWsMessage: 4096 });
    assert.deepEqual(parseSettings(settingsPayload(s)), s);
    assert.equal(settingsPayload(defaultSettings).length, 0);
  });

  it("SETTINGS: refuses what no peer may state", () => {
    for (const [what, p] of [
      ["a partial entry", new Uint8Array(5)],
      ["a window over 2³¹−1", settingsEntry(2, 0x8000_0000)],
      ["a connection window over 2³¹−1", settingsEntry(3, 0xffff_ffff)],
      ["MAX_FRAME_SIZE under 1024", settingsEntry(4, 1023)],
      ["MAX_FRAME_SIZE over 2²⁴−1", new Uint8Array([...settingsEntry(4, 1 << 24), ...settingsEntry(6, 1 << 26)])],
      ["MAX_WS_MESSAGE that cannot hold a frame", settingsEntry(6, 16384 + 8)],
    ] as const) {
      assert.throws(() => parseSettings(p), MuxProtocolError, what);
    }
    assert.equal(parseSettings(settingsEntry(6, 16384 + 9)).maxWsMessage, 16393);
  });

  it("WINDOW: 4 bytes, 1 to 2³¹−1", () => {
    assert.equal(parseWindow(windowPayload(0x7fff_ffff)), 0x7fff_ffff);
    assert.throws(() => parseWindow(windowPayload(0)), MuxProtocolError);
    assert.throws(() => parseWindow(windowPayload(0x8000_0000)), MuxProtocolError);
    assert.throws(() => parseWindow(new Uint8Array(3)), MuxProtocolError);
    assert.throws(() => parseWindow(new Uint8Array(5)), MuxProtocolError);
  });

  it("GOAWAY: a last stream id and a UTF-8 reason", () => {
    assert.deepEqual(parseGoAway(goAwayPayload(0x7fff_ffff, "bis später ✓")), { lastStream: 0x7fff_ffff, reason: "bis später ✓" });
    assert.deepEqual(parseGoAway(new Uint8Array(4)), { lastStream: 0, reason: "" });
    assert.throws(() => parseGoAway(new Uint8Array(3)), MuxProtocolError);
    assert.throws(() => parseGoAway(new Uint8Array([0, 0, 0, 1, 0xff])), MuxProtocolError);
  });

  it("OPEN: metadata and timeout only when set; a stream id of 2³¹−1", () => {
    assert.deepEqual(openPayload("a.B.C", {}, ""), new Uint8Array([0x0a, 0x05, ...new TextEncoder().encode("a.B.C")]));
    const o = parseOpen(openPayload("r", { "x-a": ["1", "2"], "x-b-bin": ["AAE="] }, "1S"));
    assert.deepEqual(entries(o.metadata), { "x-a": ["1", "2"], "x-b-bin": ["AAE="] });
    // "__proto__" is a valid metadata key, and goes on the wire.
    const proto = JSON.parse('{"__proto__":["p"]}') as Record<string, string[]>;
    const key = [...new TextEncoder().encode("__proto__")];
    assert.deepEqual(openPayload("r", proto, ""), new Uint8Array([0x0a, 1, 0x72, 0x12, 0x12, 0x0a, 0x10, 0x0a, 9, ...key, 0x12, 3, 0x0a, 1, 0x70]));
    assert.equal(o.timeout, "1S");
    const f = readFrame(encodeFrame(FrameType.Open, 0, 0x7fff_ffff, openPayload("r", {}, "")), 0).frame;
    assert.equal(f.stream, 0x7fff_ffff);
    assert.equal(parseOpen(f.payload).route, "r");
  });

  it("HEADERS and END: a payload that does not parse is a protocol error", () => {
    assert.throws(() => parseHeaders(new Uint8Array([0x0a, 0x05, 0x01])), MuxProtocolError);
    assert.throws(() => parseEnd(new Uint8Array([0xff])), MuxProtocolError);
    assert.equal(parseEnd(new Uint8Array()).status, undefined, "an empty END: no status");
  });

  it("frame types by name", () => {
    assert.equal(typeName(FrameType.Data), "DATA");
    assert.equal(typeName(FrameType.Token), "TOKEN");
    assert.equal(typeName(0x0b), "0x0b");
  });
});
