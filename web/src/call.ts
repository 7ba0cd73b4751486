// One RPC over one WebSocket: the state machine of docs/protocol.md,
// section 4, on the client side.

import { create, fromBinary, fromJsonString, toBinary, toJsonString } from "@bufbuild/protobuf";
import type { DescMessage, DescMethod, MessageInitShape, MessageShape, Registry } from "@bufbuild/protobuf";
import { Code, toCode } from "./code.js";
import { GrpcWsError, errorFromClose } from "./error.js";
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
export interface CallConfig {
  readonly method: DescMethod;
  readonly url: string;
  readonly protocols: string[];
  readonly WebSocket: WebSocketConstructor;
  readonly json: boolean;
  readonly registry: Registry | undefined;
  readonly signal: AbortSignal | undefined;
  readonly timeoutMs: number | undefined;
  readonly onHeaders: ((headers: Headers) => void) | undefined;
  readonly onTrailers: ((trailers: Headers) => void) | undefined;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: GrpcWsError): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: GrpcWsError) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // The rejection reaches whoever awaits the promise; one nobody awaits
  // (the trailers of a call whose caller only iterates, say) must not be
  // reported as unhandled.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/**
 * Call is one RPC on its own WebSocket. It is used from one thread (a
 * page's event loop), so it needs no locks; its methods may be called in
 * any order and at any time, and do nothing harmful after the RPC ended.
 */
export class Call<I extends DescMessage, O extends DescMessage> {
  readonly headers: Promise<Headers>;
  readonly trailers: Promise<Headers>;
  /** The one response of a unary or client-streaming method. */
  readonly response: Promise<MessageShape<O>>;

  private readonly cfg: CallConfig;
  private readonly input: I;
  private readonly output: O;
  private readonly streamingOutput: boolean;
  private readonly hd = deferred<Headers>();
  private readonly td = deferred<Headers>();
  private readonly rd = deferred<MessageShape<O>>();
  private ws: WebSocketLike | undefined;
  private opened = false;
  private pending: (string | Uint8Array)[] = [];
  private pendingBytes = 0;
  private sendClosed = false;
  private done = false;
  private gotHeaders = false;
  private count = 0;
  private received: MessageShape<O>[] = [];
  private single: MessageShape<O> | undefined; // the response of a unary or client-streaming method
  private error: GrpcWsError | undefined;
  private waiters: { resolve(m: MessageShape<O> | undefined): void; reject(e: GrpcWsError): void }[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly onAbort = (): void => {
    this.fail(abortError(this.cfg.signal?.reason));
  };

  constructor(cfg: CallConfig, input: I, output: O) {
    this.cfg = cfg;
    this.input = input;
    this.output = output;
    const kind = cfg.method.methodKind;
    this.streamingOutput = kind === "server_streaming" || kind === "bidi_streaming";
    this.headers = this.hd.promise;
    this.trailers = this.td.promise;
    this.response = this.rd.promise;
    if (cfg.signal?.aborted === true) {
      this.finish(abortError(cfg.signal.reason));
      return;
    }
    let ws: WebSocketLike;
    try {
      ws = new cfg.WebSocket(cfg.url, cfg.protocols);
    } catch (e) {
      // A URL or a subprotocol the WebSocket refuses to use.
      this.finish(GrpcWsError.from(e, Code.InvalidArgument));
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
    cfg.signal?.addEventListener("abort", this.onAbort, { once: true });
    if (cfg.timeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        this.fail(new GrpcWsError(`grpcws: deadline of ${String(cfg.timeoutMs)} ms exceeded`, Code.DeadlineExceeded));
      }, cfg.timeoutMs);
    }
  }

  /** bufferedAmount is the number of bytes queued but not yet sent. */
  get bufferedAmount(): number {
    return this.pendingBytes + (this.ws?.bufferedAmount ?? 0);
  }

  /**
   * send sends one request message. It queues the message until the
   * connection is open. After the RPC ended it discards the message: the
   * outcome is in trailers and the responses. It throws after closeSend.
   */
  send(message: MessageInitShape<I>): void {
    if (this.sendClosed) {
      throw new GrpcWsError("grpcws: send after closeSend", Code.FailedPrecondition);
    }
    if (this.done) {
      return;
    }
    let frame: string | Uint8Array;
    try {
      const msg = create(this.input, message);
      frame = this.cfg.json ? toJsonString(this.input, msg, { registry: this.cfg.registry }) : toBinary(this.input, msg);
    } catch (e) {
      throw GrpcWsError.from(e, Code.InvalidArgument);
    }
    this.write(frame);
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
  sendOnly(message: MessageInitShape<I>): void {
    try {
      this.send(message);
    } catch (e) {
      this.fail(GrpcWsError.from(e, Code.InvalidArgument));
    }
    this.sendClosed = true;
  }

  /** cancel ends the RPC with Canceled and closes the connection. */
  cancel(reason?: unknown): void {
    this.fail(reason instanceof GrpcWsError ? reason : abortError(reason));
  }

  /**
   * receive returns the next response message, or undefined when the RPC
   * ended with OK. It rejects with the RPC's error after the messages that
   * arrived before it.
   */
  receive(): Promise<MessageShape<O> | undefined> {
    const m = this.received.shift();
    if (m !== undefined) {
      return Promise.resolve(m);
    }
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve(undefined);
    }
    // Waiters are served in the order they asked.
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
  }

  /**
   * iterate yields the response messages. Leaving the loop early (break,
   * return, throw) cancels the RPC.
   */
  async *iterate(): AsyncGenerator<MessageShape<O>, void, undefined> {
    try {
      for (;;) {
        const m = await this.receive();
        if (m === undefined) {
          return;
        }
        yield m;
      }
    } finally {
      if (!this.done) {
        this.cancel(new GrpcWsError("grpcws: the caller stopped reading", Code.Canceled));
      }
    }
  }

  [Symbol.asyncIterator](): AsyncGenerator<MessageShape<O>, void, undefined> {
    return this.iterate();
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
      this.fail(GrpcWsError.from(e, Code.Unavailable));
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
    let msg: MessageShape<O>;
    try {
      if (typeof data === "string") {
        if (!this.cfg.json) {
          throw new Error("a text frame that is not a control frame, in the binary encoding");
        }
        msg = fromJsonString(this.output, data, { ignoreUnknownFields: true, registry: this.cfg.registry });
      } else {
        const bytes = toBytes(data);
        if (this.cfg.json) {
          throw new Error("a binary frame in the JSON encoding");
        }
        msg = fromBinary(this.output, bytes);
      }
    } catch (e) {
      this.fail(protocolError(`bad message: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    if (!this.streamingOutput && this.count > 0) {
      this.fail(protocolError(`a second response to ${this.cfg.method.name}, which has one`));
      return;
    }
    this.count++;
    if (this.streamingOutput) {
      const w = this.waiters.shift();
      if (w !== undefined) {
        w.resolve(msg);
      } else {
        this.received.push(msg);
      }
    } else {
      this.single = msg; // resolved at the end: a status may still fail the RPC
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
      case "headers": {
        if (this.gotHeaders || this.count > 0) {
          this.fail(protocolError("a headers frame after headers or messages"));
          return;
        }
        this.gotHeaders = true;
        const h = toHeaders(frame.headers);
        this.hd.resolve(h);
        this.callback(this.cfg.onHeaders, h);
        return;
      }
      case "end": {
        const st = frame.end.status;
        const trailers = toHeaders(frame.end.trailers);
        if (!this.callback(this.cfg.onTrailers, trailers)) {
          return;
        }
        const code = st?.code ?? 0;
        if (code !== 0) {
          this.finish(
            new GrpcWsError(st?.message ?? "", toCode(code), {
              details: (st?.details ?? []).map((d) => ({ typeUrl: d.typeUrl, value: d.value })),
              metadata: trailers,
            }),
          );
          return;
        }
        if (!this.streamingOutput && this.single === undefined) {
          this.finish(protocolError(`no response to ${this.cfg.method.name}`, trailers));
          return;
        }
        this.finish(undefined, trailers);
        return;
      }
      case "unknown":
        return; // a later version's frame: skip it
    }
  }

  /** callback calls fn, and fails the RPC if it throws. */
  private callback(fn: ((h: Headers) => void) | undefined, h: Headers): boolean {
    if (fn === undefined) {
      return true;
    }
    try {
      fn(h);
      return true;
    } catch (e) {
      this.fail(GrpcWsError.from(e));
      return false;
    }
  }

  private onClose(code: number, reason: string): void {
    if (!this.done) {
      this.finish(errorFromClose(code, reason));
    }
  }

  /**
   * fail ends the RPC from this side: it closes the connection, which
   * cancels the RPC at the backend, with 4000 + the code.
   */
  private fail(err: GrpcWsError): void {
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

  private finish(err: GrpcWsError | undefined, trailers?: Headers): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.pending = [];
    this.pendingBytes = 0;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
    }
    this.cfg.signal?.removeEventListener("abort", this.onAbort);
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
    this.settle();
  }

  /** settle ends every pending receive: there is nothing buffered when one waits. */
  private settle(): void {
    const ws = this.waiters;
    this.waiters = [];
    for (const w of ws) {
      if (this.error !== undefined) {
        w.reject(this.error);
      } else {
        w.resolve(undefined);
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
  throw new Error("a binary frame that is not an ArrayBuffer: set binaryType to \"arraybuffer\"");
}

function protocolError(msg: string, trailers?: Headers): GrpcWsError {
  return new GrpcWsError(`grpcws: protocol error: ${msg}`, Code.Internal, trailers ? { metadata: trailers } : {});
}

/** abortError turns an AbortSignal's reason into Canceled, or DeadlineExceeded for AbortSignal.timeout. */
function abortError(reason: unknown): GrpcWsError {
  if (reason instanceof GrpcWsError) {
    return reason;
  }
  if (typeof reason === "object" && reason !== null && (reason as { name?: unknown }).name === "TimeoutError") {
    return new GrpcWsError("grpcws: the RPC timed out", Code.DeadlineExceeded, { cause: reason });
  }
  return new GrpcWsError("grpcws: the RPC was canceled", Code.Canceled, { cause: reason });
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
