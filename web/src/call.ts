// One RPC over one WebSocket: the state machine of docs/protocol.md,
// section 4, on the client side. The transport (transport.ts) gives it
// serialized frames and reads parsed messages; Call knows the wire, not
// the schema.

import { Code, ConnectError } from "@connectrpc/connect";
import { errorFromClose, protocolError } from "./errors.js";
import { bearerSubprotocol, encodeTimeout, requestWire } from "./metadata.js";
import { controlPrefix, endSendFrame, parseServerControl, webSocketURL } from "./protocol.js";
import type { ServerFrame } from "./protocol.js";
import { StreamBase, toBytes } from "./stream.js";
import type { Engine, StreamSpec } from "./stream.js";

/**
 * WebSocketLike is the part of the WebSocket API this package uses. The
 * browser's WebSocket has it, and so has the WebSocket of the ws package
 * for Node.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open", listener: () => void): void;
  addEventListener(type: "message", listener: (event: { readonly data: unknown }) => void): void;
  addEventListener(type: "close", listener: (event: { readonly code: number; readonly reason: string }) => void): void;
  addEventListener(type: "error", listener: () => void): void;
}

/**
 * WebSocketConstructor makes a WebSocketLike: the browser's WebSocket, or
 * the ws package's in Node (which has no global WebSocket before Node 22).
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export const wsOpen = 1;

/** What a Call needs to open its WebSocket and run. */
export interface CallConfig<O> {
  readonly url: string;
  readonly protocols: string[];
  readonly WebSocket: WebSocketConstructor;
  /** The method's name, for error messages. */
  readonly methodName: string;
  /** Whether the response side streams (server-streaming and bidi). */
  readonly streamingOutput: boolean;
  /** Whether messages are JSON in text frames rather than binary frames. */
  readonly json: boolean;
  /** parse reads one response message from a frame's payload. */
  readonly parse: (data: Uint8Array) => O;
  /**
   * Aborting it ends the RPC: with its reason when that is a ConnectError
   * (runUnaryCall's deadline is one), and with Canceled otherwise.
   */
  readonly signal: AbortSignal;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * v1Engine starts each RPC on a WebSocket of its own (protocol v1): the
 * route in the subprotocol list with the bearer token, the other headers
 * and the deadline in the URL's query string.
 */
export function v1Engine(WebSocket: WebSocketConstructor): Engine {
  return {
    start<O>(spec: StreamSpec<O>): Call<O> {
      const wire = requestWire(spec.header);
      const query = wire.query;
      if (spec.timeoutMs !== undefined) {
        query.push(["grpc-timeout", encodeTimeout(spec.timeoutMs)]);
      }
      const protocols = [spec.route];
      if (wire.token !== undefined && wire.token !== "") {
        protocols.push(bearerSubprotocol(wire.token));
      }
      return new Call({
        url: webSocketURL(spec.url, query),
        protocols,
        WebSocket,
        methodName: spec.methodName,
        streamingOutput: spec.streamingOutput,
        json: spec.json,
        parse: spec.parse,
        signal: spec.signal,
      });
    },
  };
}

/**
 * Call is one RPC on its own WebSocket. It is used from one thread (a
 * page's event loop), so it needs no locks; its methods may be called in
 * any order and at any time, and do nothing harmful after the RPC ended.
 */
export class Call<O> extends StreamBase<O> {
  private readonly cfg: CallConfig<O>;
  private ws: WebSocketLike | undefined;
  private opened = false;
  private pending: (string | Uint8Array)[] = [];
  private pendingBytes = 0;
  private sendClosed = false;

  constructor(cfg: CallConfig<O>) {
    super(cfg);
    this.cfg = cfg;
    if (cfg.signal.aborted) {
      this.watchSignal(); // ends the call
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new cfg.WebSocket(cfg.url, cfg.protocols);
    } catch (e) {
      // A URL or a subprotocol the WebSocket refuses to use.
      this.finish(ConnectError.from(e, Code.InvalidArgument));
      return;
    }
    this.ws = ws;
    ws.binaryType = "arraybuffer";
    ws.addEventListener("open", () => {
      this.onOpen();
    });
    ws.addEventListener("message", (e) => {
      this.onMessage(e.data);
    });
    ws.addEventListener("close", (e) => {
      this.onClose(e.code, e.reason);
    });
    // A failed connection also fires "close" (1006); the listener keeps
    // Node's ws from treating the error as unhandled.
    ws.addEventListener("error", () => undefined);
    this.watchSignal();
  }

  /** bufferedAmount is the number of bytes queued but not yet sent. */
  get bufferedAmount(): number {
    return this.pendingBytes + (this.ws?.bufferedAmount ?? 0);
  }

  /**
   * send sends one serialized request message, queued until the connection
   * is open. After the RPC ended it discards the message: the outcome is in
   * the trailers and the responses.
   */
  send(message: Uint8Array): void {
    if (this.done || this.sendClosed) {
      return;
    }
    this.write(this.cfg.json ? textDecoder.decode(message) : message);
  }

  /** closeSend half-closes: it sends end of send. It is idempotent. */
  closeSend(): void {
    if (this.sendClosed) {
      return;
    }
    this.sendClosed = true;
    if (!this.done) {
      this.write(endSendFrame);
    }
  }

  /**
   * sendOnly sends the one request of a unary or server-streaming method;
   * the bridge half-closes after it, so no end of send follows.
   */
  sendOnly(message: Uint8Array): void {
    this.send(message);
    this.sendClosed = true;
  }

  /** fail ends the RPC from this side with err, and closes the connection, which cancels the RPC at the backend. */
  fail(err: ConnectError): void {
    if (this.done) {
      return;
    }
    this.discard();
    this.finish(err);
    const ws = this.ws;
    if (ws !== undefined && ws.readyState <= wsOpen) {
      try {
        ws.close(4000 + err.code, closeReason(err.code));
      } catch {
        // already closing
      }
    }
  }

  protected override onFinished(): void {
    this.pending = [];
    this.pendingBytes = 0;
  }

  private write(frame: string | Uint8Array): void {
    if (!this.opened) {
      this.pending.push(frame);
      this.pendingBytes += frame.length;
      return;
    }
    try {
      this.ws?.send(frame);
    } catch (e) {
      this.fail(ConnectError.from(e, Code.Unavailable));
    }
  }

  private onOpen(): void {
    if (this.done) {
      return;
    }
    this.opened = true;
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    for (const f of frames) {
      this.write(f);
    }
  }

  private onMessage(data: unknown): void {
    if (this.done) {
      return;
    }
    if (typeof data === "string" && data.startsWith(controlPrefix)) {
      this.onControl(data.slice(controlPrefix.length));
      return;
    }
    let msg: O;
    try {
      if (typeof data === "string") {
        if (!this.cfg.json) {
          throw new Error("a text frame that is not a control frame, in the binary format");
        }
        msg = this.cfg.parse(textEncoder.encode(data));
      } else {
        if (this.cfg.json) {
          throw new Error("a binary frame in the JSON format");
        }
        msg = this.cfg.parse(toBytes(data));
      }
    } catch (e) {
      this.fail(protocolError(`bad message: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    this.onResponse(msg);
  }

  private onControl(json: string): void {
    let frame: ServerFrame;
    try {
      frame = parseServerControl(json);
    } catch (e) {
      this.fail(protocolError(`bad control frame: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    switch (frame.kind) {
      case "headers":
        this.onHeaders(frame.headers, false);
        return;
      case "end":
        this.onEnd(frame.end);
        return;
      case "unknown":
        return; // a later version's frame: skip it
    }
  }

  private onClose(code: number, reason: string): void {
    if (!this.done) {
      this.finish(errorFromClose(code, reason));
    }
  }
}

/** closeReason is a short close reason; the bridge does not read it. */
export function closeReason(code: Code): string {
  switch (code) {
    case Code.Canceled:
      return "canceled";
    case Code.DeadlineExceeded:
      return "deadline exceeded";
    default:
      return "client error";
  }
}
