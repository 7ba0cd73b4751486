import { Code, ConnectError } from "@connectrpc/connect";
import { closeCodeOf } from "./errors.js";
import { CloseCode } from "./protocol.js";

/** The status messages of a message over a size limit: the bridge's and gRPC's. */
const tooLarge = /^(grpcws: client message larger than|grpc: received message larger than|grpc: trying to send message larger than)/;

/**
 * isRetryable tells whether trying an RPC again may succeed: Unavailable
 * (the bridge shutting down, a dropped connection, the backend
 * unreachable), ResourceExhausted but for a message over the size limit
 * (close 1009 on its own socket, or the bridge's and gRPC's "message larger
 * than" status on a shared one: it will not shrink), Aborted, and
 * DeadlineExceeded (a stream the bridge limits in duration). Everything
 * else, such as
 * InvalidArgument, PermissionDenied (a refused origin), Unimplemented (an
 * unknown route), Unauthenticated or Canceled, says that retrying is
 * pointless.
 */
export function isRetryable(err: ConnectError): boolean {
  switch (err.code) {
    case Code.Unavailable:
    case Code.Aborted:
    case Code.DeadlineExceeded:
      return true;
    case Code.ResourceExhausted:
      return closeCodeOf(err) !== CloseCode.MessageTooBig && !tooLarge.test(err.rawMessage);
    default:
      return false;
  }
}

/** One attempt of withReconnect. */
export interface Attempt {
  /** The attempt's number, from 0. */
  readonly attempt: number;
  /** Aborted when withReconnect's signal is: pass it to the call. */
  readonly signal: AbortSignal;
  /**
   * connected says the attempt got going (the stream delivered its first
   * response, say): the backoff starts again from initialDelayMs at the
   * next failure.
   */
  connected(): void;
}

/** Options of withReconnect. */
export interface ReconnectOptions {
  /** Stops the retries, and aborts the running attempt. */
  signal?: AbortSignal;
  /** The first backoff, in ms. Default 500. */
  initialDelayMs?: number;
  /** The longest backoff, in ms. Default 30000. */
  maxDelayMs?: number;
  /** The backoff's growth per failed attempt. Default 2. */
  multiplier?: number;
  /** Attempts in a row that may fail before withReconnect gives up. Default Infinity. */
  maxAttempts?: number;
  /** Tells the errors worth another attempt. Default isRetryable. */
  shouldRetry?: (err: ConnectError) => boolean;
  /** Called before each wait, with the error, the failed attempt's number and the delay. */
  onRetry?: (err: ConnectError, attempt: number, delayMs: number) => void;
  /** The source of jitter, returning [0, 1). Default Math.random. */
  random?: () => number;
}

/**
 * backoffDelay is the wait before retrying after `failures` failures in a
 * row (from 1): a random time between zero and
 * initialDelayMs * multiplier^(failures-1), capped at maxDelayMs ("full
 * jitter", so that clients dropped together do not come back together).
 */
export function backoffDelay(failures: number, options: ReconnectOptions = {}): number {
  const initial = options.initialDelayMs ?? 500;
  const max = options.maxDelayMs ?? 30_000;
  const mult = options.multiplier ?? 2;
  const random = options.random ?? Math.random;
  const cap = Math.min(max, initial * Math.pow(mult, Math.max(0, failures - 1)));
  return Math.floor(random() * cap);
}

/**
 * withReconnect runs a stream whose application can resume (rejoin a
 * room, resubscribe from the last event seen) and runs it again when it
 * fails with an error worth retrying, after a backoff with jitter. It
 * returns what run returns once it succeeds, and throws the error that
 * made it give up: one shouldRetry refuses, or the last of maxAttempts
 * failures in a row, or Canceled when the signal is aborted. Errors that
 * are not ConnectErrors (bugs in run) are thrown at once.
 *
 * ```ts
 * await withReconnect(async ({ signal, connected }) => {
 *   async function* requests() {
 *     yield { kind: { case: "join", value: { room, nickname } } };
 *     yield* outbox(); // what the user types, as an async iterable
 *   }
 *   for await (const res of chat.chat(requests(), { signal })) {
 *     connected();
 *     show(res);
 *   }
 * }, { signal: pageSignal });
 * ```
 */
export async function withReconnect<T>(run: (attempt: Attempt) => Promise<T>, options: ReconnectOptions = {}): Promise<T> {
  const shouldRetry = options.shouldRetry ?? isRetryable;
  const maxAttempts = options.maxAttempts ?? Infinity;
  let failures = 0;
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(options.signal);
    const ctl = new AbortController();
    const abort = (): void => {
      ctl.abort(options.signal?.reason);
    };
    options.signal?.addEventListener("abort", abort, { once: true });
    let healthy = false;
    try {
      return await run({
        attempt,
        signal: ctl.signal,
        connected: () => {
          healthy = true;
        },
      });
    } catch (e) {
      if (!(e instanceof ConnectError)) {
        throw e;
      }
      throwIfAborted(options.signal);
      failures = healthy ? 1 : failures + 1;
      if (!shouldRetry(e) || failures >= maxAttempts) {
        throw e;
      }
      const delay = backoffDelay(failures, options);
      options.onRetry?.(e, attempt, delay);
      await sleep(delay, options.signal);
    } finally {
      options.signal?.removeEventListener("abort", abort);
    }
  }
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) {
    throw new ConnectError("grpcws: reconnecting was canceled", Code.Canceled, undefined, undefined, signal.reason);
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      if (signal?.aborted === true) {
        reject(new ConnectError("grpcws: reconnecting was canceled", Code.Canceled, undefined, undefined, signal.reason));
      } else {
        resolve();
      }
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
