// One RPC over one WebSocket: the state machine of docs/protocol.md,
// section 4, on the client side. The transport (transport.ts) gives it
// serialized frames and reads parsed messages; Call knows the wire, not
// the schema.

import { Code, ConnectError } from "@connectrpc/connect";
import { errorFromClose, errorFromStatus, protocolError } from "./errors.js";
import { toHeaders } from "./metadata.js";
import { controlPrefix, endSendFrame, parseServerControl } from "./protocol.js";
import type { ServerFrame } from "./protocol.js";

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

const wsOpen = 1;

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

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: ConnectError): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: ConnectError) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // The rejection reaches whoever awaits the promise; one nobody awaits
  // (the trailers of a failed call, say) must not be reported as unhandled.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/**
 * Call is one RPC on its own WebSocket. It is used from one thread (a
 * page's event loop), so it needs no locks; its methods may be called in
 * any order and at any time, and do nothing harmful after the RPC ended.
 */
export class Call<O> {
  /** The response headers; resolves empty when the RPC ended with OK and none. */
  readonly header: Promise<Headers>;
  /** The trailers when the RPC ends with OK; rejects with its error otherwise. */
  readonly trailer: Promise<Headers>;
  /** The one response of a unary or client-streaming method. */
  readonly response: Promise<O>;

  private readonly cfg: CallConfig<O>;
  private readonly hd = deferred<Headers>();
  private readonly td = deferred<Headers>();
  private readonly rd = deferred<O>();
  private ws: WebSocketLike | undefined;
  private opened = false;
  private pending: (string | Uint8Array)[] = [];
  private pendingBytes = 0;
  private sendClosed = false;
  private done = false;
  private responseHeaders: Headers | undefined;
  private count = 0;
  private received: O[] = [];
  private single: O | undefined; // the response of a unary or client-streaming method
  private error: ConnectError | undefined;
  private waiters: { resolve(m: IteratorResult<O, undefined>): void; reject(e: ConnectError): void }[] = [];
  private readonly onAbort = (): void => {
    this.fail(abortError(this.cfg.signal.reason));
  };

  constructor(cfg: CallConfig<O>) {
    this.cfg = cfg;
    this.header = this.hd.promise;
    this.trailer = this.td.promise;
    this.response = this.rd.promise;
    if (cfg.signal.aborted) {
      this.finish(abortError(cfg.signal.reason));
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
    cfg.signal.addEventListener("abort", this.onAbort, { once: true });
  }

  /** Whether the RPC has ended, with any outcome. */
  get ended(): boolean {
    return this.done;
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
    this.received = [];
    this.single = undefined;
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

  /**
   * next returns the next response message, or done when the RPC ended
   * with OK. It rejects with the RPC's error after the messages that
   * arrived before it.
   */
  next(): Promise<IteratorResult<O, undefined>> {
    const m = this.received.shift();
    if (m !== undefined) {
      return Promise.resolve({ done: false, value: m });
    }
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ done: true, value: undefined });
    }
    // Waiters are served in the order they asked.
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
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
    if (!this.cfg.streamingOutput && this.count > 0) {
      this.fail(protocolError(`a second response to ${this.cfg.methodName}, which has one`));
      return;
    }
    this.count++;
    if (!this.cfg.streamingOutput) {
      this.single = msg; // resolved at the end: a status may still fail the RPC
      return;
    }
    const w = this.waiters.shift();
    if (w !== undefined) {
      w.resolve({ done: false, value: msg });
    } else {
      this.received.push(msg);
    }
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
        if (this.responseHeaders !== undefined || this.count > 0) {
          this.fail(protocolError("a headers frame after headers or messages"));
          return;
        }
        this.responseHeaders = toHeaders(frame.headers);
        this.hd.resolve(this.responseHeaders);
        return;
      case "end": {
        const trailers = toHeaders(frame.end.trailers);
        const st = frame.end.status;
        if (st !== undefined && st.code !== 0) {
          // As connect-es's own transports do, the error's metadata holds
          // the response headers and the trailers.
          const md = new Headers(this.responseHeaders);
          trailers.forEach((v, k) => {
            md.append(k, v);
          });
          this.finish(errorFromStatus(st, md));
          return;
        }
        if (!this.cfg.streamingOutput && this.single === undefined) {
          this.finish(protocolError(`no response to ${this.cfg.methodName}`, trailers));
          return;
        }
        this.finish(undefined, trailers);
        return;
      }
      case "unknown":
        return; // a later version's frame: skip it
    }
  }

  private onClose(code: number, reason: string): void {
    if (!this.done) {
      this.finish(errorFromClose(code, reason));
    }
  }

  private finish(err: ConnectError | undefined, trailers?: Headers): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.pending = [];
    this.pendingBytes = 0;
    this.cfg.signal.removeEventListener("abort", this.onAbort);
    if (err === undefined) {
      this.hd.resolve(new Headers()); // no-op when headers came
      this.td.resolve(trailers ?? new Headers());
      if (this.single !== undefined) {
        this.rd.resolve(this.single);
      }
    } else {
      this.error = err;
      this.hd.reject(err);
      this.td.reject(err);
      this.rd.reject(err);
    }
    // End every pending next: there is nothing buffered when one waits.
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) {
      if (err !== undefined) {
        w.reject(err);
      } else {
        w.resolve({ done: true, value: undefined });
      }
    }
  }
}

function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) {
    return new Uint8Array(data);
  }
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new Error('a binary frame that is not an ArrayBuffer: set binaryType to "arraybuffer"');
}

/**
 * abortError turns an AbortSignal's reason into the call's error: a
 * ConnectError as it is (runUnaryCall's deadline is DeadlineExceeded), a
 * TimeoutError (AbortSignal.timeout) DeadlineExceeded, and anything else
 * Canceled.
 */
function abortError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) {
    return reason;
  }
  if (typeof reason === "object" && reason !== null && (reason as { name?: unknown }).name === "TimeoutError") {
    return new ConnectError("the operation timed out", Code.DeadlineExceeded, undefined, undefined, reason);
  }
  return new ConnectError("the operation was aborted", Code.Canceled, undefined, undefined, reason);
}

/** closeReason is a short close reason; the bridge does not read it. */
function closeReason(code: Code): string {
  switch (code) {
    case Code.Canceled:
      return "canceled";
    case Code.DeadlineExceeded:
      return "deadline exceeded";
    default:
      return "client error";
  }
}
