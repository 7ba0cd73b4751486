// Wire details of grpcws protocol v1 (docs/protocol.md): route names,
// control frames, close codes, URLs. The Go twin is internal/v1wire, and
// both are tested against internal/v1wire/testdata/vectors.json.

import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import { ClientControlSchema, ServerControlSchema } from "./gen/grpcws/v1/control_pb.js";
import type { End, Metadata } from "./gen/grpcws/v1/control_pb.js";
import { Code } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

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
 * statusOfClose maps a close without an end frame to a status: 4001 to
 * 4016 are the gRPC codes plus 4000, 1009 and 1013 are ResourceExhausted,
 * 1000 (which the bridge never sends without a status), 1002, 1003 and 1007
 * are Internal, and 1001, 1006 and anything else are Unavailable. The
 * reason is the message; without one, the message says what the code
 * means.
 */
export function statusOfClose(closeCode: number, reason: string): { code: Code; message: string } {
  let code: Code = Code.Unavailable;
  let fallback = "the connection closed unexpectedly";
  if (closeCode > CloseCode.StatusBase && closeCode <= CloseCode.StatusBase + 16) {
    code = (closeCode - CloseCode.StatusBase) as Code;
    fallback = `the RPC ended with ${codeToString(code)}`;
  } else {
    switch (closeCode) {
      case CloseCode.Normal:
        code = Code.Internal;
        fallback = "the connection closed without a status";
        break;
      case CloseCode.GoingAway:
        fallback = "the bridge went away";
        break;
      case CloseCode.MessageTooBig:
        code = Code.ResourceExhausted;
        fallback = "message too big";
        break;
      case CloseCode.TryAgainLater:
        code = Code.ResourceExhausted;
        fallback = "too many connections: try again later";
        break;
      case CloseCode.ProtocolError:
      case CloseCode.UnsupportedData:
      case CloseCode.InvalidPayload:
        code = Code.Internal;
        fallback = "WebSocket protocol error";
        break;
    }
  }
  return { code, message: reason !== "" ? reason : `grpcws: ${fallback} (close code ${String(closeCode)})` };
}

/** The first byte of a control frame. */
export const controlPrefix = "#";

/** The subprotocol suffix that selects the JSON encoding. */
export const jsonSuffix = "+json";

/**
 * routeName returns a method's default route: its full name with the
 * slash replaced by a dot, "examples.echo.v1.EchoService.Echo".
 */
export function routeName(method: DescMethod): string {
  return `${method.parent.typeName}.${method.name}`;
}

/** The client's half-close, #{"endSend":{}}. */
export const endSendFrame: string =
  controlPrefix + toJsonString(ClientControlSchema, create(ClientControlSchema, { kind: { case: "endSend", value: {} } }));

/** A control frame from the bridge, with the one member this client knows set. */
export type ServerFrame =
  | { readonly kind: "headers"; readonly headers: Metadata }
  | { readonly kind: "end"; readonly end: End }
  | { readonly kind: "unknown" };

/**
 * parseServerControl parses the JSON of a control frame, without its "#".
 * Members it does not know are ignored, and a frame with none it knows is
 * "unknown", to be skipped (protocol section 3). It throws on JSON that is
 * not a ServerControl.
 */
export function parseServerControl(json: string): ServerFrame {
  const c = fromJsonString(ServerControlSchema, json, { ignoreUnknownFields: true });
  switch (c.kind.case) {
    case "headers":
      return { kind: "headers", headers: c.kind.value };
    case "end":
      return { kind: "end", end: c.kind.value };
    default:
      return { kind: "unknown" };
  }
}

/**
 * webSocketURL resolves base against the page's location, when there is
 * one, and turns http(s) into ws(s). The query parameters are added to it.
 */
export function webSocketURL(base: string | URL, query: readonly (readonly [string, string])[]): string {
  const loc = (globalThis as { location?: { href?: unknown } }).location;
  const u = typeof loc?.href === "string" ? new URL(base, loc.href) : new URL(base);
  if (u.protocol === "http:") {
    u.protocol = "ws:";
  } else if (u.protocol === "https:") {
    u.protocol = "wss:";
  } else if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(`grpcws: base URL ${u.href} is not ws:, wss:, http: or https:`);
  }
  u.hash = "";
  for (const [k, v] of query) {
    u.searchParams.append(k, v);
  }
  return u.href;
}
