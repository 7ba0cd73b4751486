// What the transport drives for each RPC, whatever carries it: an
// RpcStream, started by an Engine. Call (call.ts) is one on its own
// WebSocket (protocol v1); MuxStream (mux.ts) is one stream of a WebSocket
// shared by many (grpcws.mux.v1). StreamBase holds what both do alike: the
// response side's state, from headers to the status.

import { Code, ConnectError } from "@connectrpc/connect";
import { errorFromStatus, protocolError } from "./errors.js";
import type { End, Metadata } from "./gen/grpcws/v1/control_pb.js";
import { toHeaders } from "./metadata.js";

/**
 * RpcStream is one RPC as the transport sees it. It is used from one
 * thread (a page's event loop), so it needs no locks; its methods may be
 * called in any order and at any time, and do nothing harmful after the
 * RPC ended.
 */
export interface RpcStream<O> {
  /** The response headers; resolves empty when the RPC ended with OK and none. */
  readonly header: Promise<Headers>;
  /** The trailers when the RPC ends with OK; rejects with its error otherwise. */
  readonly trailer: Promise<Headers>;
  /** The one response of a unary or client-streaming method. */
  readonly response: Promise<O>;
  /** Whether the RPC has ended, with any outcome. */
  readonly ended: boolean;
  /** The number of request bytes queued but not yet sent. */
  readonly bufferedAmount: number;
  /** send sends one serialized request message; after the RPC ended it discards it. */
  send(message: Uint8Array): void;
  /**
   * sendOnly sends the one request of a unary or server-streaming method;
   * the bridge half-closes after it, so no end of send follows.
   */
  sendOnly(message: Uint8Array): void;
  /** closeSend half-closes: it sends end of send. It is idempotent. */
  closeSend(): void;
  /** fail ends the RPC from this side with err, which cancels it at the backend. */
  fail(err: ConnectError): void;
  /**
   * next returns the next response message, or done when the RPC ended
   * with OK. It rejects with the RPC's error after the messages that
   * arrived before it.
   */
  next(): Promise<IteratorResult<O, undefined>>;
}

/** What an engine needs to start one RPC, from the request as the interceptors left it. */
export interface StreamSpec<O> {
  /** The request's URL: the bridge's. */
  readonly url: string;
  /** The request headers, with the token as "authorization: Bearer". */
  readonly header: Headers;
  /** The route: the method's name, with "+json" for the JSON format. */
  readonly route: string;
  /** The deadline, or undefined for none. */
  readonly timeoutMs: number | undefined;
  /** The method's name, for error messages. */
  readonly methodName: string;
  /** Whether the response side streams (server-streaming and bidi). */
  readonly streamingOutput: boolean;
  /** Whether messages are protobuf JSON rather than binary. */
  readonly json: boolean;
  /** parse reads one response message. */
  readonly parse: (data: Uint8Array) => O;
  /**
   * Aborting it ends the RPC: with its reason when that is a ConnectError
   * (runUnaryCall's deadline is one), and with Canceled otherwise.
   */
  readonly signal: AbortSignal;
}

/**
 * An Engine starts RPCs: one WebSocket each (protocol v1), or streams of
 * shared WebSockets (grpcws.mux.v1). start may throw a ConnectError for a
 * request it cannot send at all.
 */
export interface Engine {
  start<O>(spec: StreamSpec<O>): RpcStream<O>;
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

interface Waiter<O> {
  resolve(m: IteratorResult<O, undefined>): void;
  reject(e: ConnectError): void;
}

/**
 * StreamBase is the response side of an RPC: headers, messages, the
 * status and trailers, delivered to the transport in order whatever the
 * wire. Subclasses feed it with onHeaders, onResponse and onEnd, and end
 * it with finish.
 */
export abstract class StreamBase<O> implements RpcStream<O> {
  readonly header: Promise<Headers>;
  readonly trailer: Promise<Headers>;
  readonly response: Promise<O>;

  protected readonly methodName: string;
  protected readonly streamingOutput: boolean;
  protected readonly signal: AbortSignal;
  protected done = false;
  protected responseHeaders: Headers | undefined;
  /** The responses delivered so far. */
  protected count = 0;
  protected received: O[] = [];
  /** Those who wait in next, served in the order they asked. */
  protected waiters: Waiter<O>[] = [];
  private single: O | undefined; // the response of a unary or client-streaming method
  private error: ConnectError | undefined;
  private readonly hd = deferred<Headers>();
  private readonly td = deferred<Headers>();
  private readonly rd = deferred<O>();
  private readonly onAbort = (): void => {
    this.fail(abortError(this.signal.reason));
  };

  constructor(spec: { readonly methodName: string; readonly streamingOutput: boolean; readonly signal: AbortSignal }) {
    this.methodName = spec.methodName;
    this.streamingOutput = spec.streamingOutput;
    this.signal = spec.signal;
    this.header = this.hd.promise;
    this.trailer = this.td.promise;
    this.response = this.rd.promise;
  }

  get ended(): boolean {
    return this.done;
  }

  abstract get bufferedAmount(): number;
  abstract send(message: Uint8Array): void;
  abstract sendOnly(message: Uint8Array): void;
  abstract closeSend(): void;
  abstract fail(err: ConnectError): void;

  next(): Promise<IteratorResult<O, undefined>> {
    const m = this.received.shift();
    if (m !== undefined) {
      return Promise.resolve({ done: false, value: m });
    }
    if (this.done) {
      return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ done: true, value: undefined });
    }
    const p = new Promise<IteratorResult<O, undefined>>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
    });
    this.onWaiting();
    return p;
  }

  /** onWaiting is told that next waits for a message. */
  protected onWaiting(): void {
    // Nothing to do for a wire that delivers as messages arrive.
  }

  /**
   * watchSignal makes aborting the signal fail the RPC; it reports false,
   * having ended the RPC, when the signal is aborted already.
   */
  protected watchSignal(): boolean {
    if (this.signal.aborted) {
      this.finish(abortError(this.signal.reason));
      return false;
    }
    this.signal.addEventListener("abort", this.onAbort, { once: true });
    return true;
  }

  /** discard drops the responses not yet read, for an RPC this side fails. */
  protected discard(): void {
    this.received = [];
    this.single = undefined;
  }

  /**
   * onHeaders takes the response headers; sawMessages says whether any
   * part of a message came before them. It reports false, having failed
   * the RPC, when headers may not come now.
   */
  protected onHeaders(md: Metadata | undefined, sawMessages: boolean): boolean {
    if (this.responseHeaders !== undefined || sawMessages || this.count > 0) {
      this.fail(protocolError("a headers frame after headers or messages"));
      return false;
    }
    this.responseHeaders = toHeaders(md);
    this.hd.resolve(this.responseHeaders);
    return true;
  }

  /**
   * onResponse takes one response message. It reports false, having
   * failed the RPC, for a second response to a method that has one.
   */
  protected onResponse(msg: O): boolean {
    if (!this.streamingOutput && this.count > 0) {
      this.fail(protocolError(`a second response to ${this.methodName}, which has one`));
      return false;
    }
    this.count++;
    if (!this.streamingOutput) {
      this.single = msg; // resolved at the end: a status may still fail the RPC
      return true;
    }
    const w = this.waiters.shift();
    if (w !== undefined) {
      w.resolve({ done: false, value: msg });
    } else {
      this.received.push(msg);
    }
    return true;
  }

  /** onEnd ends the RPC with the status and trailers of an end frame. */
  protected onEnd(end: End): void {
    const trailers = toHeaders(end.trailers);
    const st = end.status;
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
    if (!this.streamingOutput && this.single === undefined) {
      this.finish(protocolError(`no response to ${this.methodName}`, trailers));
      return;
    }
    this.finish(undefined, trailers);
  }

  /** finish ends the RPC: with OK and the trailers when err is undefined. */
  protected finish(err: ConnectError | undefined, trailers?: Headers): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.signal.removeEventListener("abort", this.onAbort);
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
    this.onFinished();
  }

  /** onFinished is told, once, that the RPC has ended: subclasses let go of what they hold. */
  protected onFinished(): void {
    // Nothing to let go of by default.
  }
}

/** FailedStream is an RPC that ended before it started, with err. */
export class FailedStream<O> extends StreamBase<O> {
  constructor(spec: { readonly methodName: string; readonly streamingOutput: boolean; readonly signal: AbortSignal }, err: ConnectError) {
    super(spec);
    this.finish(err);
  }
  get bufferedAmount(): number {
    return 0;
  }
  send(): void {}
  sendOnly(): void {}
  closeSend(): void {}
  fail(): void {}
}

/**
 * abortError turns an AbortSignal's reason into the call's error: a
 * ConnectError as it is (runUnaryCall's deadline is DeadlineExceeded), a
 * TimeoutError (AbortSignal.timeout) DeadlineExceeded, and anything else
 * Canceled.
 */
export function abortError(reason: unknown): ConnectError {
  if (reason instanceof ConnectError) {
    return reason;
  }
  if (typeof reason === "object" && reason !== null && (reason as { name?: unknown }).name === "TimeoutError") {
    return new ConnectError("the operation timed out", Code.DeadlineExceeded, undefined, undefined, reason);
  }
  return new ConnectError("the operation was aborted", Code.Canceled, undefined, undefined, reason);
}

/** toBytes reads a binary WebSocket message. */
export function toBytes(data: unknown): Uint8Array {
  if (data instanceof ArrayBuffer) {
    return new Uint8Array(data);
  }
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new Error('a binary frame that is not an ArrayBuffer: set binaryType to "arraybuffer"');
}
