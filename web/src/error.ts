import { fromBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, codeName, toCode } from "./code.js";

/**
 * CloseCode names the WebSocket close codes the bridge sends besides
 * 4000 + a gRPC code. See docs/protocol.md, section 5.
 */
export const CloseCode = {
  /** The RPC ended with OK. */
  Normal: 1000,
  /** The bridge is shutting down, or the RPC was idle too long: reconnect. */
  GoingAway: 1001,
  /** The WebSocket protocol was broken. */
  ProtocolError: 1002,
  /** A frame of a type the endpoint cannot take. */
  UnsupportedData: 1003,
  /** The connection dropped without a close frame (never sent, only reported). */
  Abnormal: 1006,
  /** A text frame that is not valid UTF-8. */
  InvalidPayload: 1007,
  /** A message over the size limit. */
  MessageTooBig: 1009,
  /** A connection limit is reached: try again later, with backoff. */
  TryAgainLater: 1013,
  /** 4000 + a gRPC code: the RPC ended with that code. */
  StatusBase: 4000,
} as const;

/**
 * StatusDetail is one detail of a gRPC status: the fields of a
 * google.protobuf.Any. Decode it with GrpcWsError.findDetails, or with
 * fromBinary and the schema its typeUrl names.
 */
export interface StatusDetail {
  /** For example "type.googleapis.com/google.rpc.ErrorInfo". */
  readonly typeUrl: string;
  /** The serialized message. */
  readonly value: Uint8Array;
}

/** What a GrpcWsError carries besides its code and message. */
export interface GrpcWsErrorInit {
  /** The status details, each a google.protobuf.Any. */
  details?: readonly StatusDetail[];
  /** The trailers the RPC ended with. */
  metadata?: Headers;
  /** The WebSocket close code, when the connection closed without a status. */
  closeCode?: number;
  /** The WebSocket close reason that came with closeCode. */
  closeReason?: string;
  /** The underlying cause, such as an AbortSignal's reason. */
  cause?: unknown;
}

/**
 * GrpcWsError is the one error type of this package: every failed RPC
 * rejects, or ends its iteration, with a GrpcWsError.
 *
 * The code and message come from the bridge's in-band status (the end
 * frame) when the connection carried one, and otherwise from the WebSocket
 * close code and reason, as docs/protocol.md section 5 maps them. The
 * bridge's own refusals arrive this way:
 *
 * | what | code | closeCode |
 * |---|---|---|
 * | no route for the method | Unimplemented | 4012 |
 * | a cross-site origin the bridge does not allow | PermissionDenied | 4007 |
 * | over a connection limit | ResourceExhausted | 1013 |
 * | a message over the size limit | ResourceExhausted | 1009 |
 * | the bridge shutting down | Unavailable | 1001 |
 * | the connection dropped | Unavailable | 1006 |
 */
export class GrpcWsError extends Error {
  override name = "GrpcWsError";
  /** The gRPC status code; never Code.OK. */
  readonly code: Code;
  /** The status message as the server sent it, without the "[code]" prefix that message has. */
  readonly rawMessage: string;
  /** The status details. */
  readonly details: readonly StatusDetail[];
  /** The trailers; empty when the RPC ended without any. */
  readonly metadata: Headers;
  /**
   * The WebSocket close code when the status came from it (no end frame):
   * tells the bridge's refusals apart, for example 4007 for a refused
   * origin or 1013 for a connection limit. Undefined when the status came
   * in-band or the error arose in the client.
   */
  readonly closeCode: number | undefined;
  /** The close reason that came with closeCode, or "". */
  readonly closeReason: string;

  constructor(message: string, code: Code = Code.Unknown, init: GrpcWsErrorInit = {}) {
    super(formatMessage(message, code), init.cause === undefined ? undefined : { cause: init.cause });
    // Keep instanceof working when the output is down-levelled.
    Object.setPrototypeOf(this, new.target.prototype);
    this.code = code === Code.OK ? Code.Unknown : code;
    this.rawMessage = message;
    this.details = init.details ?? [];
    this.metadata = init.metadata ?? new Headers();
    this.closeCode = init.closeCode;
    this.closeReason = init.closeReason ?? "";
  }

  /**
   * findDetails decodes the details whose type is the given message type,
   * for example google.rpc.ErrorInfo, and skips the others.
   */
  findDetails<Desc extends DescMessage>(schema: Desc): MessageShape<Desc>[] {
    const url = "/" + schema.typeName;
    const out: MessageShape<Desc>[] = [];
    for (const d of this.details) {
      if (d.typeUrl === schema.typeName || d.typeUrl.endsWith(url)) {
        out.push(fromBinary(schema, d.value));
      }
    }
    return out;
  }

  /**
   * from returns reason when it is a GrpcWsError, and otherwise wraps it
   * with the given code: an AbortSignal's DOMException becomes Canceled
   * (or DeadlineExceeded for a TimeoutError), anything else Unknown.
   */
  static from(reason: unknown, code: Code = Code.Unknown): GrpcWsError {
    if (reason instanceof GrpcWsError) {
      return reason;
    }
    if (isNamedError(reason, "AbortError")) {
      return new GrpcWsError(reason.message || "the operation was aborted", Code.Canceled, { cause: reason });
    }
    if (isNamedError(reason, "TimeoutError")) {
      return new GrpcWsError(reason.message || "the operation timed out", Code.DeadlineExceeded, { cause: reason });
    }
    if (reason instanceof Error) {
      return new GrpcWsError(reason.message, code, { cause: reason });
    }
    return new GrpcWsError(String(reason), code, { cause: reason });
  }
}

function isNamedError(v: unknown, name: string): v is Error {
  return typeof v === "object" && v !== null && (v as { name?: unknown }).name === name && "message" in v;
}

function formatMessage(message: string, code: Code): string {
  return message === "" ? `[${codeName(code)}]` : `[${codeName(code)}] ${message}`;
}

/**
 * errorFromClose maps a close without an end frame to an error, following
 * docs/protocol.md section 5: 4001 to 4016 are the gRPC codes plus 4000,
 * 1009 and 1013 are ResourceExhausted, 1000 (which the bridge never sends
 * without a status), 1002, 1003 and 1007 are Internal, and 1001, 1006 and
 * anything else are Unavailable.
 */
export function errorFromClose(closeCode: number, reason: string): GrpcWsError {
  let code: Code;
  let fallback: string;
  if (closeCode > CloseCode.StatusBase && closeCode <= CloseCode.StatusBase + 16) {
    code = toCode(closeCode - CloseCode.StatusBase);
    fallback = `the RPC ended with ${codeName(code)}`;
  } else {
    switch (closeCode) {
      case CloseCode.Normal:
        code = Code.Internal;
        fallback = "grpcws: the connection closed without a status";
        break;
      case CloseCode.GoingAway:
        code = Code.Unavailable;
        fallback = "grpcws: the bridge went away";
        break;
      case CloseCode.MessageTooBig:
        code = Code.ResourceExhausted;
        fallback = "grpcws: message too big";
        break;
      case CloseCode.TryAgainLater:
        code = Code.ResourceExhausted;
        fallback = "grpcws: too many connections, try again later";
        break;
      case CloseCode.ProtocolError:
      case CloseCode.UnsupportedData:
      case CloseCode.InvalidPayload:
        code = Code.Internal;
        fallback = "grpcws: WebSocket protocol error";
        break;
      default:
        code = Code.Unavailable;
        fallback = "grpcws: the connection closed unexpectedly";
    }
  }
  return new GrpcWsError(reason !== "" ? reason : `${fallback} (close code ${String(closeCode)})`, code, {
    closeCode,
    closeReason: reason,
  });
}
