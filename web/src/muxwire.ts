// The multiplexed protocol grpcws.mux.v1 on the wire (docs/protocol-mux.md):
// frame headers, frame types and flags, settings, and the payloads of each
// type. The Go twin is internal/muxwire, and both are tested against
// internal/muxwire/testdata/vectors.json. mux.ts speaks the protocol with
// these.

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EndSchema, MetadataSchema, MetadataValuesSchema } from "./gen/grpcws/v1/control_pb.js";
import type { End, Metadata } from "./gen/grpcws/v1/control_pb.js";
import { MuxOpenSchema } from "./gen/grpcws/v1/mux_pb.js";
import type { MuxOpen } from "./gen/grpcws/v1/mux_pb.js";

/** The subprotocol that selects grpcws.mux.v1. */
export const muxSubprotocol = "grpcws.mux.v1";

/** The size of a frame header. */
export const headerSize = 9;

/** The frame types (docs/protocol-mux.md, section 2). */
export const FrameType = {
  Settings: 0x0,
  Open: 0x1,
  Data: 0x2,
  EndSend: 0x3,
  Cancel: 0x4,
  Headers: 0x5,
  End: 0x6,
  Window: 0x7,
  Ping: 0x8,
  GoAway: 0x9,
  Token: 0xa,
} as const;

const typeNames = ["SETTINGS", "OPEN", "DATA", "END_SEND", "CANCEL", "HEADERS", "END", "WINDOW", "PING", "GOAWAY", "TOKEN"];

/** typeName names a frame type for messages: "DATA", or "0x0b" for an unknown one. */
export function typeName(type: number): string {
  return typeNames[type] ?? `0x${type.toString(16).padStart(2, "0")}`;
}

/** END_MESSAGE, on DATA: the last chunk of a message. */
export const flagEndMessage = 0x1;
/** ACK, on PING: the answer. */
export const flagAck = 0x1;

/** The largest payload a header can state. */
export const maxLength = 0xff_ffff;
/** The largest stream id, and the largest a window may grow to. */
export const maxStreamId = 0x7fff_ffff;
export const maxWindow = 0x7fff_ffff;
/** The smallest MAX_FRAME_SIZE a peer may state. */
export const minFrameSize = 1024;
/** The size of a PING payload. */
export const pingSize = 8;

/** MuxProtocolError is a frame or a payload that breaks the protocol. */
export class MuxProtocolError extends Error {
  override name = "MuxProtocolError";
  constructor(message: string) {
    super(message);
    Object.setPrototypeOf(this, new.target.prototype);
  }
}

/** A frame, as read from a WebSocket message. */
export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  /** A view into the message: copy it to keep it. */
  readonly payload: Uint8Array;
}

/** encodeHeader writes a frame header into b at off. */
export function encodeHeader(b: Uint8Array, off: number, length: number, type: number, flags: number, stream: number): void {
  b[off] = (length >>> 16) & 0xff;
  b[off + 1] = (length >>> 8) & 0xff;
  b[off + 2] = length & 0xff;
  b[off + 3] = type;
  b[off + 4] = flags;
  b[off + 5] = (stream >>> 24) & 0xff;
  b[off + 6] = (stream >>> 16) & 0xff;
  b[off + 7] = (stream >>> 8) & 0xff;
  b[off + 8] = stream & 0xff;
}

/** encodeFrame returns a whole frame: its header, with the payload's length, and the payload. */
export function encodeFrame(type: number, flags: number, stream: number, payload: Uint8Array = new Uint8Array()): Uint8Array {
  const b = new Uint8Array(headerSize + payload.length);
  encodeHeader(b, 0, payload.length, type, flags, stream);
  b.set(payload, headerSize);
  return b;
}

/**
 * readFrame reads the frame at off in a WebSocket message and returns it
 * with the offset of what follows. It throws a MuxProtocolError on a
 * frame shorter than its header, one whose length runs past the end of
 * the message, or a stream id with the reserved bit set.
 */
export function readFrame(msg: Uint8Array, off: number): { frame: Frame; next: number } {
  if (msg.length - off < headerSize) {
    throw new MuxProtocolError("grpcws: malformed frame");
  }
  const length = (msg[off]! << 16) | (msg[off + 1]! << 8) | msg[off + 2]!;
  const type = msg[off + 3]!;
  const flags = msg[off + 4]!;
  const stream = ((msg[off + 5]! << 24) >>> 0) + ((msg[off + 6]! << 16) | (msg[off + 7]! << 8) | msg[off + 8]!);
  if (stream > maxStreamId) {
    throw new MuxProtocolError(`grpcws: malformed frame: stream id ${String(stream)} has the reserved bit set`);
  }
  const start = off + headerSize;
  if (msg.length - start < length) {
    throw new MuxProtocolError("grpcws: malformed frame");
  }
  return { frame: { type, flags, stream, payload: msg.subarray(start, start + length) }, next: start + length };
}

/** readFrames splits a whole WebSocket message into its frames. */
export function readFrames(msg: Uint8Array): Frame[] {
  const out: Frame[] = [];
  for (let off = 0; off < msg.length; ) {
    const { frame, next } = readFrame(msg, off);
    out.push(frame);
    off = next;
  }
  return out;
}

function uint32(p: Uint8Array, off: number): number {
  return ((p[off]! << 24) >>> 0) + ((p[off + 1]! << 16) | (p[off + 2]! << 8) | p[off + 3]!);
}

function putUint32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** windowPayload is the payload of a WINDOW frame that grants n bytes. */
export function windowPayload(n: number): Uint8Array {
  const b = new Uint8Array(4);
  putUint32(b, 0, n);
  return b;
}

/** parseWindow reads a WINDOW frame's increment: 1 to 2³¹−1. */
export function parseWindow(p: Uint8Array): number {
  if (p.length !== 4) {
    throw new MuxProtocolError(`grpcws: WINDOW payload of ${String(p.length)} bytes; want 4`);
  }
  const n = uint32(p, 0);
  if (n === 0 || n > maxWindow) {
    throw new MuxProtocolError(`grpcws: WINDOW increment ${String(n)} out of range (1 to ${String(maxWindow)})`);
  }
  return n;
}

const textEncoder = new TextEncoder();
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** goAwayPayload is the payload of a GOAWAY frame. */
export function goAwayPayload(lastStream: number, reason: string): Uint8Array {
  const r = textEncoder.encode(reason);
  const b = new Uint8Array(4 + r.length);
  putUint32(b, 0, lastStream);
  b.set(r, 4);
  return b;
}

/** parseGoAway reads a GOAWAY frame's payload. */
export function parseGoAway(p: Uint8Array): { lastStream: number; reason: string } {
  if (p.length < 4) {
    throw new MuxProtocolError(`grpcws: GOAWAY payload of ${String(p.length)} bytes; want at least 4`);
  }
  let reason: string;
  try {
    reason = utf8.decode(p.subarray(4));
  } catch {
    throw new MuxProtocolError("grpcws: GOAWAY reason is not UTF-8");
  }
  return { lastStream: uint32(p, 0), reason };
}

/** tokenPayload is the payload of a TOKEN frame: the token in UTF-8, empty for none. */
export function tokenPayload(token: string): Uint8Array {
  return textEncoder.encode(token);
}

/** parseToken reads a TOKEN frame's payload. */
export function parseToken(p: Uint8Array): string {
  try {
    return utf8.decode(p);
  } catch {
    throw new MuxProtocolError("grpcws: TOKEN is not UTF-8");
  }
}

/** Settings are what one side accepts (docs/protocol-mux.md, section 2). */
export interface MuxSettings {
  /** Streams the client may have open at once (the bridge's). */
  readonly maxStreams: number;
  /** Each stream's initial window for DATA to the side that states it. */
  readonly streamWindow: number;
  /** The connection's initial window for DATA to the side that states it. */
  readonly connWindow: number;
  /** The largest DATA payload the side that states it accepts. */
  readonly maxFrameSize: number;
  /** The largest message (the bridge's). */
  readonly maxMessageSize: number;
  /** The largest WebSocket message the side that states it accepts. */
  readonly maxWsMessage: number;
}

/** The setting ids. */
export const SettingId = {
  MaxStreams: 0x1,
  StreamWindow: 0x2,
  ConnWindow: 0x3,
  MaxFrameSize: 0x4,
  MaxMessageSize: 0x5,
  MaxWsMessage: 0x6,
} as const;

/** The settings of a side that states none. */
export const defaultSettings: MuxSettings = Object.freeze({
  maxStreams: 100,
  streamWindow: 256 << 10,
  connWindow: 16 << 20,
  maxFrameSize: 16 << 10,
  maxMessageSize: 4 << 20,
  maxWsMessage: 1 << 20,
});

const settingFields: readonly [number, keyof MuxSettings][] = [
  [SettingId.MaxStreams, "maxStreams"],
  [SettingId.StreamWindow, "streamWindow"],
  [SettingId.ConnWindow, "connWindow"],
  [SettingId.MaxFrameSize, "maxFrameSize"],
  [SettingId.MaxMessageSize, "maxMessageSize"],
  [SettingId.MaxWsMessage, "maxWsMessage"],
];

/** settingsPayload is the SETTINGS payload that states s, less the entries that equal their defaults. */
export function settingsPayload(s: MuxSettings): Uint8Array {
  const entries = settingFields.filter(([, k]) => s[k] !== defaultSettings[k]);
  const b = new Uint8Array(6 * entries.length);
  entries.forEach(([id, k], i) => {
    b[6 * i] = id >>> 8;
    b[6 * i + 1] = id & 0xff;
    putUint32(b, 6 * i + 2, s[k]);
  });
  return b;
}

/**
 * parseSettings reads a SETTINGS payload: the defaults, changed by its
 * entries. Unknown ids are ignored. It throws on a payload that is not
 * whole entries, and on settings no peer may state.
 */
export function parseSettings(p: Uint8Array): MuxSettings {
  if (p.length % 6 !== 0) {
    throw new MuxProtocolError(`grpcws: SETTINGS payload of ${String(p.length)} bytes is not a whole number of 6-byte entries`);
  }
  const s: { -readonly [K in keyof MuxSettings]: number } = { ...defaultSettings };
  for (let off = 0; off < p.length; off += 6) {
    const id = (p[off]! << 8) | p[off + 1]!;
    const field = settingFields.find(([i]) => i === id);
    if (field !== undefined) {
      s[field[1]] = uint32(p, off + 2);
    }
  }
  if (s.streamWindow > maxWindow || s.connWindow > maxWindow) {
    throw new MuxProtocolError(`grpcws: SETTINGS window over ${String(maxWindow)}`);
  }
  if (s.maxFrameSize < minFrameSize || s.maxFrameSize > maxLength) {
    throw new MuxProtocolError(
      `grpcws: SETTINGS MAX_FRAME_SIZE ${String(s.maxFrameSize)} out of range (${String(minFrameSize)} to ${String(maxLength)})`,
    );
  }
  if (s.maxWsMessage < s.maxFrameSize + headerSize) {
    throw new MuxProtocolError(
      `grpcws: SETTINGS MAX_WS_MESSAGE ${String(s.maxWsMessage)} cannot hold a frame of MAX_FRAME_SIZE ${String(s.maxFrameSize)}`,
    );
  }
  return s;
}

/** Metadata as key → values, the form OPEN, HEADERS and END carry. */
export type MetadataEntries = Readonly<Record<string, readonly string[]>>;

function toMetadata(entries: MetadataEntries): Metadata {
  const md = create(MetadataSchema);
  for (const [k, values] of Object.entries(entries)) {
    // Defined, not assigned: "__proto__" is a valid metadata key.
    Object.defineProperty(md.entries, k, {
      value: create(MetadataValuesSchema, { values: [...values] }),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return md;
}

/**
 * openPayload is the payload of an OPEN frame: the route, the stream's own
 * metadata (values of "-bin" keys in base64) and its timeout in
 * grpc-timeout format ("" for none).
 */
export function openPayload(route: string, metadata: MetadataEntries, timeout: string): Uint8Array {
  const o = create(MuxOpenSchema, { route, timeout });
  if (Object.keys(metadata).length > 0) {
    o.metadata = toMetadata(metadata);
  }
  return toBinary(MuxOpenSchema, o);
}

/** parseOpen reads an OPEN frame's payload. */
export function parseOpen(p: Uint8Array): MuxOpen {
  return parsePayload("OPEN", () => fromBinary(MuxOpenSchema, p));
}

/** headersPayload is the payload of a HEADERS frame. */
export function headersPayload(headers: MetadataEntries): Uint8Array {
  return toBinary(MetadataSchema, toMetadata(headers));
}

/** parseHeaders reads a HEADERS frame's payload. */
export function parseHeaders(p: Uint8Array): Metadata {
  return parsePayload("HEADERS", () => fromBinary(MetadataSchema, p));
}

/** endPayload is the payload of an END frame: the status and the trailers. */
export function endPayload(code: number, message: string, trailers: MetadataEntries): Uint8Array {
  const e = create(EndSchema, { status: { code, message } });
  if (Object.keys(trailers).length > 0) {
    e.trailers = toMetadata(trailers);
  }
  return toBinary(EndSchema, e);
}

/** parseEnd reads an END frame's payload. */
export function parseEnd(p: Uint8Array): End {
  return parsePayload("END", () => fromBinary(EndSchema, p));
}

function parsePayload<T>(what: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    throw new MuxProtocolError(`grpcws: ${what} payload: ${e instanceof Error ? e.message : String(e)}`);
  }
}
