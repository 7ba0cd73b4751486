/**
 * Code is a gRPC status code. The names follow gRPC's, in the style of
 * connect-es: `Code.NotFound` is gRPC's NOT_FOUND (5).
 */
export const Code = {
  /** Not an error: returned on success. Never the code of a GrpcWsError made by this package. */
  OK: 0,
  /** The RPC was canceled, usually by the caller (an AbortSignal). */
  Canceled: 1,
  /** An error whose cause is not known, or an error from another error space. */
  Unknown: 2,
  /** The client sent an invalid argument: a bad message, refused metadata. */
  InvalidArgument: 3,
  /** The deadline expired before the RPC completed. */
  DeadlineExceeded: 4,
  /** A requested entity was not found. */
  NotFound: 5,
  /** An entity the client tried to create already exists. */
  AlreadyExists: 6,
  /** The caller may not do this. The bridge also uses it for a refused browser origin (close 4007). */
  PermissionDenied: 7,
  /** A resource ran out: a quota, a message size limit (close 1009), a connection limit (close 1013). */
  ResourceExhausted: 8,
  /** The system is not in a state in which the operation can run. */
  FailedPrecondition: 9,
  /** The operation was aborted, typically by a concurrency conflict. */
  Aborted: 10,
  /** The operation was attempted past the valid range. */
  OutOfRange: 11,
  /** The operation is not implemented. The bridge also uses it for an unknown route (close 4012). */
  Unimplemented: 12,
  /** An invariant broke: a protocol error, a bug. */
  Internal: 13,
  /** The service is unavailable: the backend, the bridge shutting down (close 1001), a dropped connection. */
  Unavailable: 14,
  /** Unrecoverable data loss or corruption. */
  DataLoss: 15,
  /** The request has no valid authentication credentials. */
  Unauthenticated: 16,
} as const;

/** Code is one of the values of the Code object: 0 to 16. */
export type Code = (typeof Code)[keyof typeof Code];

const names: readonly string[] = [
  "ok",
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];

/** codeName returns the snake_case name of a code, for example "not_found". */
export function codeName(code: Code): string {
  return names[code] ?? `code_${String(code)}`;
}

/**
 * toCode returns n as a Code when it is a gRPC status code (0 to 16), and
 * Code.Unknown otherwise.
 */
export function toCode(n: number): Code {
  return Number.isInteger(n) && n >= 0 && n <= 16 ? (n as Code) : Code.Unknown;
}
