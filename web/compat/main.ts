// The test page of web/compat_test.go: every real client, bundled by
// esbuild, exposed as globalThis.compat.

import { FetchTransport, WebsocketTransport } from "nice-grpc-web";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { connect, failMessage, google, improbable, improbableTransports, nice, type Scenarios } from "./scenarios.js";

/** clients returns the scenarios of every client and transport, against base ("http://host:port"). */
function clients(base: string): Record<string, Scenarios> {
  return {
    "improbable-ws": improbable(base, improbableTransports.websocket(), "improbable-ws", true),
    "improbable-http": improbable(base, improbableTransports.http(), "improbable-http", false),
    "nice-ws": nice(base, WebsocketTransport(), "nice-ws", true),
    "nice-fetch": nice(base, FetchTransport(), "nice-fetch", false),
    "connect": connect(createConnectTransport({ baseUrl: base }), "connect"),
    "connect-grpcweb": connect(createGrpcWebTransport({ baseUrl: base }), "connect-grpcweb"),
    "grpc-web-text": google(base, "text", "grpc-web-text"),
    "grpc-web-binary": google(base, "binary", "grpc-web-binary"),
  };
}

Object.assign(globalThis, { compat: { clients, failMessage } });
