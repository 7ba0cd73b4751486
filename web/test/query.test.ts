// connect-query over the transport: a query built from a generated method
// runs through the bridge, with TanStack Query's framework-agnostic core,
// as React, Vue or Svelte bindings would run it.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { WebSocket } from "ws";
import { Code, ConnectError } from "@connectrpc/connect";
import { callUnaryMethod, createConnectQueryKey, createQueryOptions } from "@connectrpc/connect-query-core";
import { QueryClient } from "@tanstack/query-core";
import { createGrpcwsTransport } from "../src/index.js";
import { EchoService } from "../src/gen/examples/echo/v1/echo_pb.js";
import { startServer } from "./server.js";
import type { TestServer } from "./server.js";

let server: TestServer;

before(async () => {
  server = await startServer();
});

after(async () => {
  await server.stop();
});

describe("connect-query", () => {
  it("fetches a query built from a generated method, and caches it by its key", async () => {
    const id = randomUUID();
    const transport = createGrpcwsTransport({ baseUrl: server.ws, WebSocket });
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    const input = { message: "über die Brücke" };
    const options = createQueryOptions(EchoService.method.echo, input, { transport, headers: { "x-test-id": id } });
    const first = await queryClient.fetchQuery({ ...options, staleTime: Infinity });
    assert.equal(first.message, "über die Brücke");
    // The second fetch is served from the cache: the backend saw one call.
    const second = await queryClient.fetchQuery({ ...options, staleTime: Infinity });
    assert.equal(second, first);
    assert.equal(queryClient.getQueryData(options.queryKey), first);
    // The key names the method and the input, so a page can invalidate it.
    const key = createConnectQueryKey({ schema: EchoService.method.echo, input, transport, cardinality: "finite" });
    await queryClient.invalidateQueries({ queryKey: key.slice(0, 1) });
    assert.equal(queryClient.getQueryState(options.queryKey)?.isInvalidated, true);
    const calls = await server.waitCalls(id, (c) => c.length === 1 && c[0]!.done);
    assert.equal(calls.length, 1);
    assert.equal(calls[0]?.method, "/examples.echo.v1.EchoService/Echo");
    queryClient.clear();
  });

  it("a failed query holds the ConnectError", async () => {
    const transport = createGrpcwsTransport({ baseUrl: server.ws, WebSocket });
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    const options = createQueryOptions(EchoService.method.echo, { fail: { code: Code.PermissionDenied, message: "nein" } }, { transport });
    await assert.rejects(queryClient.fetchQuery(options), (e: unknown) => e instanceof ConnectError && e.code === Code.PermissionDenied);
    const state = queryClient.getQueryState(options.queryKey);
    assert.equal(state?.status, "error");
    assert.ok(state.error instanceof ConnectError);
    assert.equal(state.error.rawMessage, "nein");
    queryClient.clear();
  });

  it("callUnaryMethod, which mutations use", async () => {
    const transport = createGrpcwsTransport({ baseUrl: server.ws, WebSocket });
    const res = await callUnaryMethod(transport, EchoService.method.echo, { message: "mutate" });
    assert.equal(res.message, "mutate");
  });
});
