import { Code, ConnectError } from "@connectrpc/connect";
import type { Metadata } from "./gen/grpcws/v1/control_pb.js";

/**
 * RequestWire is where request headers travel on a WebSocket, which a
 * browser cannot give headers of its own: the bearer token in the
 * subprotocol list, and every other header in the URL's query string.
 */
export interface RequestWire {
  /** The metadata, as query parameters. */
  readonly query: [string, string][];
  /** The bearer token of an "authorization: Bearer" header, or undefined. */
  readonly token: string | undefined;
}

/**
 * requestWire splits request headers into the query string and the bearer
 * token. An authorization header that is not a bearer token is refused
 * with InvalidArgument: it would travel in the URL, which servers and
 * proxies log.
 */
export function requestWire(header: Headers): RequestWire {
  const query: [string, string][] = [];
  let token: string | undefined;
  let err: ConnectError | undefined;
  header.forEach((value, key) => {
    if (key !== "authorization") {
      query.push([key, value]);
      return;
    }
    const m = /^bearer[ \t]+(.*)$/i.exec(value);
    if (m === null) {
      err = new ConnectError(
        "grpcws: only a Bearer authorization header can be sent over a WebSocket (it travels in the subprotocol list); any other would travel in the URL",
        Code.InvalidArgument,
      );
      return;
    }
    token = m[1];
  });
  if (err !== undefined) {
    throw err;
  }
  return { query, token };
}

/**
 * encodeTimeout writes a timeout in milliseconds in gRPC's grpc-timeout
 * format, as the Go client does: at most 8 digits and the finest unit that
 * fits, rounded up so the deadline is never earlier than asked.
 */
export function encodeTimeout(ms: number): string {
  if (!(ms > 0)) {
    return "1n";
  }
  const max = 99_999_999;
  const ns = Math.ceil(ms * 1e6 - 1e-6); // less the error of the product, for fractions
  if (ns <= max) {
    return `${String(ns)}n`;
  }
  const us = Math.ceil(ms * 1e3);
  if (us <= max) {
    return `${String(us)}u`;
  }
  const units: [number, string][] = [
    [1, "m"],
    [1_000, "S"],
    [60_000, "M"],
    [3_600_000, "H"],
  ];
  for (const [size, unit] of units) {
    const n = Math.ceil(ms / size);
    if (n <= max) {
      return `${String(n)}${unit}`;
    }
  }
  return "99999999H";
}

/** The prefix of the subprotocol entry that carries a bearer token. */
export const bearerPrefix = "base64url.bearer.grpcws.";

/**
 * bearerSubprotocol returns the subprotocol entry that carries token:
 * "base64url.bearer.grpcws." and the token in base64url without padding.
 * The bridge sends it to the backend as "authorization: Bearer <token>".
 */
export function bearerSubprotocol(token: string): string {
  const b64 = encodeBase64(new TextEncoder().encode(token));
  return bearerPrefix + b64.replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** encodeBase64 returns bytes in standard base64 with padding. */
export function encodeBase64(bytes: Uint8Array): string {
  let s = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    s += String.fromCharCode(...bytes.subarray(i, i + chunk));
  }
  return btoa(s);
}

/**
 * decodeBase64 decodes base64 in the standard or URL alphabet, with or
 * without padding: the values of "-bin" metadata keys.
 */
export function decodeBase64(s: string): Uint8Array {
  let t = s.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  t += "===".slice((t.length + 3) % 4);
  const bin = atob(t);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) {
    out[i] = bin.charCodeAt(i);
  }
  return out;
}

/** toHeaders copies control-frame metadata into a Headers. */
export function toHeaders(md: Metadata | undefined): Headers {
  const h = new Headers();
  if (md === undefined) {
    return h;
  }
  for (const [key, vals] of Object.entries(md.entries)) {
    for (const v of vals.values) {
      try {
        h.append(key, v);
      } catch {
        // A name or value a Headers cannot hold (gRPC allows none): skip it
        // rather than fail the RPC.
      }
    }
  }
  return h;
}
