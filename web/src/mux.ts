// grpcws.mux.v1 (docs/protocol-mux.md) on the client side: many RPCs on
// one WebSocket, each a stream with its own flow control.
//
// MuxPool is the engine the transport starts RPCs with: it keeps one
// MuxConnection per bridge URL, opened with the first call, and opens
// another when that one drains (GOAWAY), drops, or has the bridge's
// stream limit open. A MuxConnection owns the WebSocket: it reads the
// bridge's SETTINGS before it sends anything, batches the frames queued in
// one turn of the event loop into one WebSocket message, sends DATA within
// the windows the bridge grants, a chunk per stream in turn, and grants
// the bridge credit as the application reads. A MuxStream is one RPC, with
// the surface Call has.

import { Code, ConnectError } from "@connectrpc/connect";
import type { WebSocketConstructor, WebSocketLike } from "./call.js";
import { wsOpen } from "./call.js";
import { errorFromClose, protocolError } from "./errors.js";
import type { End, Metadata } from "./gen/grpcws/v1/control_pb.js";
import { bearerSubprotocol, encodeTimeout, requestWire } from "./metadata.js";
import {
  FrameType,
  MuxProtocolError,
  defaultSettings,
  encodeHeader,
  flagAck,
  flagEndMessage,
  headerSize,
  maxLength,
  maxStreamId,
  maxWindow,
  muxSubprotocol,
  openPayload,
  parseEnd,
  parseGoAway,
  parseHeaders,
  parseSettings,
  parseWindow,
  pingSize,
  readFrame,
  tokenPayload,
  typeName,
  windowPayload,
} from "./muxwire.js";
import type { Frame, MuxSettings } from "./muxwire.js";
import { webSocketURL } from "./protocol.js";
import { FailedStream, StreamBase, abortError, toBytes } from "./stream.js";
import type { Engine, RpcStream, StreamSpec } from "./stream.js";

/**
 * How long a connection with no stream stays open. It closes then, so
 * that an idle page holds no socket and a Node program can exit; the next
 * call opens another.
 */
export const idleTimeoutMs = 5_000;

/** The close code with which the client closes a connection the bridge broke the protocol on. */
const closeProtocolError = 4000 + Code.Internal;

/**
 * MuxPool starts each RPC as a stream of a WebSocket it shares with the
 * other RPCs to the same bridge URL.
 */
export class MuxPool implements Engine {
  private readonly WebSocket: WebSocketConstructor;
  private readonly conns = new Map<string, MuxConnection[]>();

  constructor(WebSocket: WebSocketConstructor) {
    this.WebSocket = WebSocket;
  }

  start<O>(spec: StreamSpec<O>): RpcStream<O> {
    const wire = requestWire(spec.header);
    const token = wire.token ?? "";
    if (!printable(token)) {
      // The bridge would close the whole connection over it.
      throw new ConnectError("grpcws: a bearer token must be printable ASCII", Code.InvalidArgument);
    }
    if (spec.signal.aborted) {
      return new FailedStream(spec, abortError(spec.signal.reason));
    }
    // Without a prototype: "__proto__" is a valid metadata key.
    const metadata: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
    for (const [k, v] of wire.query) {
      (metadata[k] ??= []).push(v);
    }
    const open = openPayload(spec.route, metadata, spec.timeoutMs === undefined ? "" : encodeTimeout(spec.timeoutMs));
    return this.connection(webSocketURL(spec.url, []), token).open(spec, open, token);
  }

  /** connection returns a connection to url that takes new streams, opening one if there is none. */
  private connection(url: string, token: string): MuxConnection {
    const live = (this.conns.get(url) ?? []).filter((c) => c.usable);
    let c = live.find((c) => c.hasRoom);
    if (c === undefined) {
      c = new MuxConnection(url, token, this.WebSocket);
      live.push(c);
    }
    this.conns.set(url, live);
    return c;
  }
}

function printable(s: string): boolean {
  return /^[\x20-\x7e]*$/.test(s);
}

/** A frame that is not flow-controlled, queued in order. */
interface ControlFrame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Uint8Array;
}

/** A request message on its way out, sent from off on; or the half-close. */
type OutItem = { readonly data: Uint8Array; off: number } | "endSend";

const empty = new Uint8Array();

/** MuxConnection is one WebSocket of grpcws.mux.v1 and its streams. */
export class MuxConnection {
  private readonly ws: WebSocketLike | undefined;
  /** connecting: the bridge's SETTINGS not read yet; open: running; closed: every stream has ended. */
  private state: "connecting" | "open" | "closed" = "connecting";
  private failure: ConnectError | undefined;
  /** The bridge said GOAWAY, or stream ids ran out: no new stream. */
  private draining = false;
  /** The bridge's settings: what it accepts. */
  private peer: MuxSettings = defaultSettings;
  /** This side's: it states none, so the defaults. */
  private readonly ours: MuxSettings = defaultSettings;
  private nextId = 1;
  private readonly streams = new Map<number, MuxStream<unknown>>();
  /** The bearer token as the bridge has it, after the TOKEN frames queued. */
  private token: string;
  private control: ControlFrame[] = [];
  /** Streams with DATA or END_SEND to send, in turn. */
  private ready: MuxStream<unknown>[] = [];
  /** What this side may still send, on the connection. */
  private sendWindow: number = defaultSettings.connWindow;
  /** What the bridge may still send, on the connection. */
  private recvWindow: number;
  /** Bytes consumed, not yet granted again, on the connection. */
  private unacked = 0;
  private flushQueued = false;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: string, token: string, WebSocket: WebSocketConstructor) {
    this.token = token;
    this.recvWindow = this.ours.connWindow;
    const protocols = [muxSubprotocol];
    if (token !== "") {
      protocols.push(bearerSubprotocol(token));
    }
    let ws: WebSocketLike;
    try {
      ws = new WebSocket(url, protocols);
    } catch (e) {
      // A URL the WebSocket refuses to use.
      this.state = "closed";
      this.failure = ConnectError.from(e, Code.InvalidArgument);
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("message", (e) => {
      this.onMessage(e.data);
    });
    ws.addEventListener("close", (e) => {
      this.terminate(closeError(e.code, e.reason, this.state === "connecting"), true);
    });
    // A failed connection also fires "close" (1006); the listener keeps
    // Node's ws from treating the error as unhandled.
    ws.addEventListener("error", () => undefined);
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.state === "closed";
  }

  /** Whether new streams may go on this connection. */
  get usable(): boolean {
    return this.state !== "closed" && !this.draining;
  }

  /**
   * Whether it has fewer streams than the bridge allows at once (at least
   * one: a connection that may hold none is no use).
   */
  get hasRoom(): boolean {
    return this.streams.size < Math.max(1, this.peer.maxStreams);
  }

  /**
   * open starts a stream: its OPEN frame goes out with the next batch,
   * after a TOKEN frame when the stream's token is not the connection's.
   */
  open<O>(spec: StreamSpec<O>, openPayload: Uint8Array, token: string): RpcStream<O> {
    if (this.state === "closed") {
      return new FailedStream(spec, this.failure ?? new ConnectError("grpcws: connection closed", Code.Unavailable));
    }
    const id = this.nextId;
    this.nextId += 2;
    if (this.nextId > maxStreamId) {
      this.draining = true; // the next stream goes on a new connection
    }
    if (token !== this.token) {
      this.token = token;
      this.queue(FrameType.Token, 0, 0, tokenPayload(token));
    }
    const s = new MuxStream<O>(this, id, spec, this.ours.streamWindow);
    this.streams.set(id, s as MuxStream<unknown>);
    this.stopIdle();
    this.queue(FrameType.Open, 0, id, openPayload);
    return s;
  }

  /** wantsToSend tells the connection that s has DATA or END_SEND queued. */
  wantsToSend(s: MuxStream<unknown>): void {
    if (this.state === "closed" || this.streams.get(s.id) !== s) {
      return;
    }
    if (!s.inReady) {
      s.inReady = true;
      this.ready.push(s);
    }
    this.scheduleFlush();
  }

  /**
   * consumed grants the bridge credit again for n bytes taken off a
   * stream's queue: on the stream (when s is given, for a stream still
   * open) and on the connection, each when half its window has been
   * consumed.
   */
  consumed(s: MuxStream<unknown> | undefined, n: number): void {
    if (n === 0 || this.state === "closed") {
      return;
    }
    if (s !== undefined) {
      s.unacked += n;
      if (s.unacked >= this.ours.streamWindow / 2) {
        this.queue(FrameType.Window, 0, s.id, windowPayload(s.unacked));
        s.recvWindow += s.unacked;
        s.unacked = 0;
      }
    }
    this.unacked += n;
    if (this.unacked >= this.ours.connWindow / 2) {
      this.queue(FrameType.Window, 0, 0, windowPayload(this.unacked));
      this.recvWindow += this.unacked;
      this.unacked = 0;
    }
  }

  /**
   * release forgets a stream that has ended: its unread bytes go back to
   * the connection's window, and unless the bridge ended it, a CANCEL tells
   * the bridge (or, when its OPEN is still queued, the OPEN is dropped).
   */
  release(s: MuxStream<unknown>): void {
    if (this.streams.get(s.id) !== s) {
      return; // the connection ended it
    }
    this.streams.delete(s.id);
    if (s.inReady) {
      s.inReady = false;
      this.ready = this.ready.filter((r) => r !== s);
    }
    this.consumed(undefined, s.takeUnread());
    if (!s.endReceived && this.state !== "closed") {
      if (s.opened) {
        this.queue(FrameType.Cancel, 0, s.id, empty);
      } else {
        this.control = this.control.filter((f) => !(f.type === FrameType.Open && f.stream === s.id));
      }
    }
    this.checkIdle();
  }

  private queue(type: number, flags: number, stream: number, payload: Uint8Array): void {
    this.control.push({ type, flags, stream, payload });
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushQueued || this.state === "closed") {
      return;
    }
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      this.flush();
    });
  }

  /**
   * flush sends what is queued, in WebSocket messages of at most the
   * bridge's MAX_WS_MESSAGE: the control frames in order, then DATA and
   * END_SEND within the windows, one frame per stream in turn.
   */
  private flush(): void {
    const ws = this.ws;
    if (this.state !== "open" || ws === undefined) {
      return;
    }
    const limit = this.peer.maxWsMessage;
    for (;;) {
      const parts: Uint8Array[] = [];
      let size = 0;
      const add = (type: number, flags: number, stream: number, payload: Uint8Array): void => {
        const h = new Uint8Array(headerSize);
        encodeHeader(h, 0, payload.length, type, flags, stream);
        parts.push(h, payload);
        size += headerSize + payload.length;
      };
      while (this.control.length > 0) {
        const f = this.control[0]!;
        const n = headerSize + f.payload.length;
        if (size + n > limit && size > 0) {
          break;
        }
        this.control.shift();
        if (n > limit || f.payload.length > maxLength) {
          // Only an OPEN can be this large: with more metadata than a
          // WebSocket message of the bridge's may hold.
          this.streams
            .get(f.stream)
            ?.fail(new ConnectError("grpcws: request headers too large for the bridge's MAX_WS_MESSAGE", Code.ResourceExhausted));
          continue;
        }
        add(f.type, f.flags, f.stream, f.payload);
        if (f.type === FrameType.Open) {
          const s = this.streams.get(f.stream);
          if (s !== undefined) {
            s.opened = true;
            s.sendWindow = this.peer.streamWindow;
          }
        }
      }
      if (this.control.length === 0) {
        this.fillData(add, () => size, limit);
      }
      if (size === 0) {
        return;
      }
      const msg = new Uint8Array(size);
      let off = 0;
      for (const p of parts) {
        msg.set(p, off);
        off += p.length;
      }
      try {
        ws.send(msg);
      } catch (e) {
        this.terminate(ConnectError.from(e, Code.Unavailable), true);
        return;
      }
    }
  }

  /**
   * fillData adds DATA and END_SEND frames to a message until it is full
   * or no stream may send: one frame of each ready stream in turn, so that
   * a large message delays the others by a frame at most.
   */
  private fillData(add: (type: number, flags: number, stream: number, payload: Uint8Array) => void, size: () => number, limit: number): void {
    let blocked = 0; // streams in a row that could not send
    while (this.ready.length > 0 && blocked < this.ready.length) {
      const s = this.ready[0]!;
      const item = s.out[0];
      if (item === undefined) {
        this.ready.shift();
        s.inReady = false;
        continue;
      }
      if (!s.opened) {
        this.ready.push(this.ready.shift()!); // its OPEN is not out yet
        blocked++;
        continue;
      }
      let n = 0;
      if (item !== "endSend") {
        const remaining = item.data.length - item.off;
        n = Math.min(remaining, this.peer.maxFrameSize, s.sendWindow, this.sendWindow);
        if (remaining > 0 && n <= 0) {
          this.ready.push(this.ready.shift()!); // waits for WINDOW
          blocked++;
          continue;
        }
      }
      if (size() + headerSize + n > limit) {
        return; // s goes first in the next message
      }
      if (item === "endSend") {
        add(FrameType.EndSend, 0, s.id, empty);
        s.out.shift();
      } else {
        const last = item.off + n === item.data.length;
        add(FrameType.Data, last ? flagEndMessage : 0, s.id, item.data.subarray(item.off, item.off + n));
        item.off += n;
        s.queued -= n;
        s.sendWindow -= n;
        this.sendWindow -= n;
        if (last) {
          s.out.shift();
        }
      }
      this.ready.shift();
      if (s.out.length > 0) {
        this.ready.push(s);
      } else {
        s.inReady = false;
      }
      blocked = 0;
    }
  }

  private onMessage(data: unknown): void {
    if (this.state === "closed") {
      return;
    }
    try {
      if (typeof data === "string") {
        throw new MuxProtocolError("grpcws: a text message: grpcws.mux.v1 carries binary messages only");
      }
      const msg = toBytes(data);
      // A frame may end the connection (END of its last stream while
      // draining): the rest of the message is not read then.
      for (let off = 0; off < msg.length && !this.closed; ) {
        const { frame, next } = readFrame(msg, off);
        off = next;
        this.handle(frame);
      }
    } catch (e) {
      this.broken(e instanceof Error ? e.message : String(e));
    }
  }

  /** handle handles one frame from the bridge; it throws a MuxProtocolError on one that breaks the protocol. */
  private handle(f: Frame): void {
    if (this.state === "connecting") {
      if (f.type !== FrameType.Settings || f.stream !== 0) {
        throw new MuxProtocolError(`grpcws: the bridge's first frame is ${typeName(f.type)} on stream ${String(f.stream)}, not SETTINGS`);
      }
      this.peer = parseSettings(f.payload);
      this.sendWindow = this.peer.connWindow;
      this.state = "open";
      this.scheduleFlush();
      return;
    }
    switch (f.type) {
      case FrameType.Settings:
        throw new MuxProtocolError("grpcws: a second SETTINGS");
      case FrameType.Data: {
        const s = this.streamOf(f);
        const n = f.payload.length;
        if (n > this.ours.maxFrameSize) {
          throw new MuxProtocolError(`grpcws: DATA of ${String(n)} bytes, over MAX_FRAME_SIZE ${String(this.ours.maxFrameSize)}`);
        }
        this.recvWindow -= n;
        if (this.recvWindow < 0) {
          throw new MuxProtocolError("grpcws: flow control: connection window exceeded");
        }
        if (s === undefined) {
          this.consumed(undefined, n); // a stream that ended: its bytes go back to the connection
          return;
        }
        s.recvWindow -= n;
        if (s.recvWindow < 0) {
          throw new MuxProtocolError(`grpcws: flow control: window of stream ${String(s.id)} exceeded`);
        }
        s.onData(f.payload, (f.flags & flagEndMessage) !== 0);
        return;
      }
      case FrameType.Headers: {
        const s = this.streamOf(f);
        const md = parseHeaders(f.payload);
        s?.onHeadersFrame(md);
        return;
      }
      case FrameType.End: {
        const s = this.streamOf(f);
        const end = parseEnd(f.payload);
        s?.onEndFrame(end);
        return;
      }
      case FrameType.Window: {
        const n = parseWindow(f.payload);
        if (f.stream === 0) {
          this.sendWindow += n;
          if (this.sendWindow > maxWindow) {
            throw new MuxProtocolError(`grpcws: flow control: WINDOW takes the connection's window past ${String(maxWindow)}`);
          }
        } else {
          const s = this.streamOf(f);
          if (s === undefined) {
            return; // ended
          }
          s.sendWindow += n;
          if (s.sendWindow > maxWindow) {
            throw new MuxProtocolError(`grpcws: flow control: WINDOW takes the window of stream ${String(s.id)} past ${String(maxWindow)}`);
          }
        }
        this.scheduleFlush();
        return;
      }
      case FrameType.Ping:
        if (f.stream !== 0 || f.payload.length !== pingSize) {
          throw new MuxProtocolError("grpcws: PING must be on stream 0 with 8 bytes");
        }
        if ((f.flags & flagAck) === 0) {
          this.queue(FrameType.Ping, flagAck, 0, f.payload.slice());
        }
        return;
      case FrameType.GoAway:
        if (f.stream !== 0) {
          throw new MuxProtocolError("grpcws: GOAWAY must be on stream 0");
        }
        parseGoAway(f.payload);
        // The streams the bridge has go on; it refuses later ones, so new
        // streams go on another connection from now on.
        this.draining = true;
        this.checkIdle();
        return;
      case FrameType.Open:
      case FrameType.EndSend:
      case FrameType.Cancel:
      case FrameType.Token:
        throw new MuxProtocolError(`grpcws: the bridge may not send ${typeName(f.type)}`);
      default:
        throw new MuxProtocolError(`grpcws: unknown frame type ${typeName(f.type)}`);
    }
  }

  /** streamOf returns the stream a stream frame is for: undefined for one that has ended. */
  private streamOf(f: Frame): MuxStream<unknown> | undefined {
    if (f.stream === 0) {
      throw new MuxProtocolError(`grpcws: ${typeName(f.type)} on stream 0`);
    }
    if (f.stream % 2 === 0 || f.stream >= this.nextId) {
      throw new MuxProtocolError(`grpcws: ${typeName(f.type)} on stream ${String(f.stream)}, never opened`);
    }
    return this.streams.get(f.stream);
  }

  /** broken ends every stream, and the connection, after the bridge broke the protocol. */
  private broken(why: string): void {
    this.terminate(protocolError(why), false, [closeProtocolError, closeReasonOf(why)]);
  }

  /**
   * terminate ends the connection and every stream on it with err; keep
   * says whether the messages that came before stay readable, as they do
   * when the connection drops. close, when given, is what the client
   * closes the WebSocket with.
   */
  private terminate(err: ConnectError, keep: boolean, close?: readonly [number, string]): void {
    if (this.state === "closed") {
      return;
    }
    this.state = "closed";
    this.failure = err;
    this.stopIdle();
    this.control = [];
    this.ready = [];
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) {
      s.connectionEnded(err, keep);
    }
    const ws = this.ws;
    if (close !== undefined && ws !== undefined && ws.readyState <= wsOpen) {
      try {
        ws.close(close[0], close[1]);
      } catch {
        // already closing
      }
    }
  }

  private stopIdle(): void {
    if (this.idleTimer !== undefined) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
  }

  /**
   * checkIdle closes a connection without streams: a draining one at
   * once, another after idleTimeoutMs unless a stream starts meanwhile.
   */
  private checkIdle(): void {
    if (this.state === "closed" || this.streams.size > 0) {
      return;
    }
    const close = (): void => {
      this.terminate(new ConnectError("grpcws: connection closed", Code.Unavailable), false, [1000, this.draining ? "drained" : "idle"]);
    };
    if (this.draining) {
      close();
      return;
    }
    if (this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = undefined;
        if (this.streams.size === 0) {
          close();
        }
      }, idleTimeoutMs);
      // In Node, an idle connection must not keep the process alive by
      // its timer (the socket does, until the timer closes it).
      (this.idleTimer as unknown as { unref?: () => void }).unref?.();
    }
  }
}

/**
 * closeError is the error of the calls on a connection that closed with
 * code and reason. A bridge older than grpcws.mux.v1 takes the subprotocol
 * for a route it does not have, and closes with 4012 before any SETTINGS:
 * the message says so.
 */
function closeError(code: number, reason: string, beforeSettings: boolean): ConnectError {
  const err = errorFromClose(code, reason);
  if (!beforeSettings || code !== 4000 + Code.Unimplemented) {
    return err;
  }
  const hinted = new ConnectError(
    `${err.rawMessage} (the bridge does not speak ${muxSubprotocol}: createGrpcwsTransport's multiplex: false speaks protocol v1)`,
    err.code,
    undefined,
    undefined,
    err.cause,
  );
  hinted.isWireError = err.isWireError;
  return hinted;
}

/** closeReasonOf fits a reason in a close frame's 123 bytes. */
function closeReasonOf(why: string): string {
  const enc = new TextEncoder();
  let r = why;
  while (enc.encode(r).length > 123) {
    r = r.slice(0, -1);
  }
  return r;
}

/** A chunk of a response message, as DATA brought it. */
interface Chunk {
  readonly data: Uint8Array;
  readonly end: boolean;
}

/**
 * MuxStream is one RPC on a MuxConnection. Its request messages wait in
 * its queue until the windows let the connection send them; its response
 * chunks wait in another until the application asks for the next
 * message, and only then is the bridge granted credit for them: a stream
 * whose reader stalls stops at its window, and slows no other.
 */
export class MuxStream<O> extends StreamBase<O> {
  readonly id: number;
  // The connection's, for sending.
  /** Request messages and the half-close, in order. */
  out: OutItem[] = [];
  /** Request bytes queued, not sent. */
  queued = 0;
  inReady = false;
  /** The OPEN has been sent. */
  opened = false;
  /** What this side may still send on the stream. */
  sendWindow = 0;
  // The connection's, for receiving.
  /** What the bridge may still send on the stream. */
  recvWindow: number;
  /** Bytes consumed, not yet granted again. */
  unacked = 0;
  /** The bridge ended the stream with END. */
  endReceived = false;

  private readonly conn: MuxConnection;
  private readonly parse: (data: Uint8Array) => O;
  private sendClosed = false;
  private chunks: Chunk[] = [];
  private unread = 0; // the bytes in chunks
  private assembly: Uint8Array[] = [];
  private assembled = 0;
  private sawData = false;

  constructor(conn: MuxConnection, id: number, spec: StreamSpec<O>, window: number) {
    super(spec);
    this.conn = conn;
    this.id = id;
    this.parse = spec.parse;
    this.recvWindow = window;
    this.watchSignal();
  }

  /** bufferedAmount is the number of request bytes queued but not yet sent. */
  get bufferedAmount(): number {
    return this.queued;
  }

  send(message: Uint8Array): void {
    if (this.done || this.sendClosed) {
      return;
    }
    this.out.push({ data: message, off: 0 });
    this.queued += message.length;
    this.conn.wantsToSend(this as MuxStream<unknown>);
  }

  sendOnly(message: Uint8Array): void {
    this.send(message);
    this.sendClosed = true;
  }

  closeSend(): void {
    if (this.sendClosed) {
      return;
    }
    this.sendClosed = true;
    if (!this.done) {
      this.out.push("endSend");
      this.conn.wantsToSend(this as MuxStream<unknown>);
    }
  }

  /** fail ends the RPC from this side with err: a CANCEL cancels it at the backend. */
  fail(err: ConnectError): void {
    if (this.done) {
      return;
    }
    this.discard();
    this.finish(err);
  }

  protected override onFinished(): void {
    this.out = [];
    this.queued = 0;
    this.assembly = [];
    this.assembled = 0;
    this.conn.release(this as MuxStream<unknown>);
  }

  /** takeUnread empties the queue of chunks not yet read, and returns their size. */
  takeUnread(): number {
    const n = this.unread;
    this.chunks = [];
    this.unread = 0;
    return n;
  }

  protected override onWaiting(): void {
    this.pull();
  }

  /** onData queues a chunk from DATA: the payload is a view into the message, so it is copied. */
  onData(payload: Uint8Array, end: boolean): void {
    if (this.done) {
      return;
    }
    this.sawData = true;
    this.chunks.push({ data: payload.slice(), end });
    this.unread += payload.length;
    this.pull();
  }

  onHeadersFrame(md: Metadata): void {
    if (!this.done) {
      this.onHeaders(md, this.sawData);
    }
  }

  /**
   * onEndFrame ends the RPC with the bridge's END. The chunks still queued
   * become messages for next to return before the status: the stream is
   * over, so its window no longer matters, and the connection gets their
   * bytes back.
   */
  onEndFrame(end: End): void {
    if (this.done) {
      return;
    }
    this.endReceived = true;
    if (!this.drain()) {
      return;
    }
    if (this.assembled > 0 || this.assembly.length > 0) {
      this.fail(protocolError("END in the middle of a message"));
      return;
    }
    this.onEnd(end);
  }

  /**
   * connectionEnded ends the RPC with the connection's error; with keep,
   * the whole messages that came before it are read first.
   */
  connectionEnded(err: ConnectError, keep: boolean): void {
    if (this.done) {
      return;
    }
    this.endReceived = true; // nothing more to tell the bridge
    if (keep) {
      this.drain();
    } else {
      this.discard();
    }
    this.finish(err);
  }

  /** pull takes chunks off the queue while a message is wanted: by a waiting next, or as the one response. */
  private pull(): void {
    while (!this.done && this.chunks.length > 0 && (!this.streamingOutput || this.waiters.length > 0)) {
      const c = this.chunks.shift()!;
      this.unread -= c.data.length;
      this.conn.consumed(this as MuxStream<unknown>, c.data.length);
      if (!this.take(c)) {
        return;
      }
    }
  }

  /** drain takes every chunk off the queue; false when the stream failed. */
  private drain(): boolean {
    while (!this.done && this.chunks.length > 0) {
      const c = this.chunks.shift()!;
      this.unread -= c.data.length;
      this.conn.consumed(undefined, c.data.length);
      if (!this.take(c)) {
        return false;
      }
    }
    return !this.done;
  }

  /** take adds a chunk to the message being assembled, and delivers the message at its last; false when the stream failed. */
  private take(c: Chunk): boolean {
    this.assembly.push(c.data);
    this.assembled += c.data.length;
    if (!c.end) {
      return true;
    }
    let bytes: Uint8Array;
    if (this.assembly.length === 1) {
      bytes = this.assembly[0]!;
    } else {
      bytes = new Uint8Array(this.assembled);
      let off = 0;
      for (const a of this.assembly) {
        bytes.set(a, off);
        off += a.length;
      }
    }
    this.assembly = [];
    this.assembled = 0;
    let msg: O;
    try {
      msg = this.parse(bytes);
    } catch (e) {
      this.fail(protocolError(`bad message: ${e instanceof Error ? e.message : String(e)}`));
      return false;
    }
    return this.onResponse(msg);
  }
}
