// Wire details of grpcws protocol v1 (docs/protocol.md): route names,
// control frames, URLs.

import { create, fromJsonString, toJsonString } from "@bufbuild/protobuf";
import type { DescMethod } from "@bufbuild/protobuf";
import { ClientControlSchema, ServerControlSchema } from "./gen/grpcws/v1/control_pb.js";
import type { End, Metadata } from "./gen/grpcws/v1/control_pb.js";

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
