import { fromBinary } from "@bufbuild/protobuf";
import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, codeName } from "./code.js";
import { statusOfClose } from "./protocol.js";

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
 * errorFromClose maps a close without an end frame to an error, as
 * docs/protocol.md section 5 says (the table is statusOfClose, in
 * protocol.ts).
 */
export function errorFromClose(closeCode: number, reason: string): GrpcWsError {
  const { code, message } = statusOfClose(closeCode, reason);
  return new GrpcWsError(message, code, { closeCode, closeReason: reason });
}
