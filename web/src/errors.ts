import { Code, ConnectError } from "@connectrpc/connect";
import type { Status } from "./gen/grpcws/v1/control_pb.js";
import { statusOfClose } from "./protocol.js";

/**
 * WebSocketClose is the cause of a ConnectError that came from a WebSocket
 * close without a status (docs/protocol.md, section 5): the bridge's own
 * refusals, such as 4007 for a cross-site origin, 1013 for a connection
 * limit, 1009 for a message over the size limit or 1001 for a drain, and
 * a dropped connection (1006). Read it with closeCodeOf.
 */
export class WebSocketClose extends Error {
  override name = "WebSocketClose";
  /** The WebSocket close code. */
  readonly code: number;
  /** The close reason, or "". */
  readonly reason: string;

  constructor(code: number, reason: string) {
    super(`WebSocket closed with ${String(code)}${reason === "" ? "" : `: ${reason}`}`);
    Object.setPrototypeOf(this, new.target.prototype);
    this.code = code;
    this.reason = reason;
  }
}

/**
 * closeCodeOf returns the WebSocket close code behind err when the call
 * ended with a close that carried no status, and undefined when the status
 * came in-band from the backend or the error arose in the client:
 *
 * | what | Code | close code |
 * |---|---|---|
 * | no route for the method | Unimplemented | 4012 |
 * | a cross-site origin the bridge does not allow | PermissionDenied | 4007 |
 * | over a connection limit | ResourceExhausted | 1013 |
 * | a message over the size limit | ResourceExhausted | 1009 |
 * | the bridge shutting down | Unavailable | 1001 |
 * | the connection dropped | Unavailable | 1006 |
 */
export function closeCodeOf(err: unknown): number | undefined {
  if (err instanceof ConnectError && err.cause instanceof WebSocketClose) {
    return err.cause.code;
  }
  return undefined;
}

/**
 * errorFromClose maps a close without an end frame to a ConnectError, as
 * docs/protocol.md section 5 says (the table is statusOfClose, in
 * protocol.ts).
 */
export function errorFromClose(closeCode: number, reason: string): ConnectError {
  const { code, message } = statusOfClose(closeCode, reason);
  const err = new ConnectError(message, code, undefined, undefined, new WebSocketClose(closeCode, reason));
  err.isWireError = closeCode !== 1006;
  return err;
}

/** errorFromStatus makes the ConnectError of an end frame's status: its code, message, details and the trailers. */
export function errorFromStatus(st: Status, trailers: Headers): ConnectError {
  const code = st.code >= 1 && st.code <= 16 ? (st.code as Code) : Code.Unknown;
  const err = new ConnectError(st.message, code, trailers);
  err.details = st.details.map((d) => ({ type: d.typeUrl.slice(d.typeUrl.lastIndexOf("/") + 1), value: d.value }));
  err.isWireError = true;
  return err;
}

/** protocolError is the error of a bridge that broke protocol v1. */
export function protocolError(msg: string, trailers?: Headers): ConnectError {
  return new ConnectError(`protocol error: ${msg}`, Code.Internal, trailers);
}
