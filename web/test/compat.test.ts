// The real clients of grpcwebproxy's users, in Node, against the test
// server's bridge (grpc-websockets) and HTTP gateway (gRPC-Web, Connect):
// the scenarios of web/compat/scenarios.ts, which web/compat_test.go runs
// in Chromium, with the same expectations.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { WebSocket } from "ws";
import { NodeHttpTransport } from "@improbable-eng/grpc-web-node-http-transport";
import { FetchTransport, WebsocketTransport } from "nice-grpc-web";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { connect, failMessage, improbable, improbableTransports, nice } from "../compat/scenarios.js";
import type { Result, Scenarios } from "../compat/scenarios.js";
import { startServer } from "./server.js";
import type { TestServer } from "./server.js";

// improbable-eng's WebSocket transport takes the global WebSocket, which
// Node 20 has only behind a flag; nice-grpc-web's takes ws by itself (each
// test file runs in a process of its own).
Object.assign(globalThis, { WebSocket });

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

const clients: { name: string; websocket: boolean; make(base: string, id: string): Scenarios }[] = [
  { name: "improbable-ws", websocket: true, make: (base, id) => improbable(base, improbableTransports.websocket(), id, true) },
  // improbable-eng's HTTP transports are for browsers; Node has a package of its own.
  { name: "improbable-http", websocket: false, make: (base, id) => improbable(base, NodeHttpTransport(), id, false) },
  { name: "nice-ws", websocket: true, make: (base, id) => nice(base, WebsocketTransport(), id, true) },
  { name: "nice-fetch", websocket: false, make: (base, id) => nice(base, FetchTransport(), id, false) },
  { name: "connect", websocket: false, make: (base, id) => connect(createConnectTransport({ baseUrl: base }), id) },
  { name: "connect-grpcweb", websocket: false, make: (base, id) => connect(createGrpcWebTransport({ baseUrl: base }), id) },
];

/** check compares what matters of got with want: see web/compat_test.go. */
function check(got: Result, want: Partial<Result>) {
  for (const [k, v] of Object.entries(want)) {
    assert.deepEqual(got[k as keyof Result], v, `${k}: got ${JSON.stringify(got)}`);
  }
}

for (const c of clients) {
  describe(c.name, () => {
    const id = () => `${c.name}-${randomUUID()}`;
    it("unary", async () => {
      const i = id();
      check(await c.make(server.http, i).unary(), { code: 0, message: "", responses: ["grüß dich ✓"], header: i, trailer: i });
    });
    it("server streaming", async () => {
      const i = id();
      check(await c.make(server.http, i).serverStream(), { code: 0, responses: ["1", "2", "3"], header: i, trailer: i });
    });
    if (c.websocket) {
      it("client streaming", async () => {
        const i = id();
        const s = c.make(server.http, i);
        assert.ok(s.clientStream);
        check(await s.clientStream(), { code: 0, responses: ["3/6"], header: i, trailer: i });
      });
      it("bidi", async () => {
        const i = id();
        const s = c.make(server.http, i);
        assert.ok(s.bidi);
        check(await s.bidi(), { code: 0, responses: ["one#1", "two 👋#2"], header: i, trailer: i });
      });
    }
    it("an error with a non-ASCII message, and the trailers", async () => {
      const i = id();
      check(await c.make(server.http, i).fail(), { code: 5, message: failMessage, responses: [], trailer: i });
    });
    it("an error after messages", async () => {
      const i = id();
      check(await c.make(server.http, i).failStream(), { code: 9, message: "à la fin", responses: ["1", "2"], header: i, trailer: i });
    });
    it("an unknown method", async () => {
      check(await c.make(server.http, id()).unknown(), { code: 12, responses: [] });
    });
    it("a deadline, at the backend too", async () => {
      const i = id();
      check(await c.make(server.http, i).deadline(), { code: 4 });
      const calls = await server.waitCalls(i, (cs) => cs.some((x) => x.done));
      assert.ok(calls.some((x) => x.method.endsWith("/Echo") && x.hasDeadline && x.done), JSON.stringify(calls));
    });
    it("a cancel reaches the backend", async () => {
      const i = id();
      check(await c.make(server.http, i).cancel(), { code: -1, responses: ["1", "2"] });
      const calls = await server.waitCalls(i, (cs) => cs.some((x) => x.done));
      assert.deepEqual(calls.map((x) => [x.method, x.code]), [["/examples.echo.v1.EchoService/Ticker", "Canceled"]]);
    });
  });
}
