// A new user's first program with @grpcws/client, as its README shows:
// a client made with createClient from the generated EchoService and a
// grpcws transport, then a unary call, a failing call and a bidi call
// against `grpcws --demo`. pack-test.mjs copies it into an empty project
// next to the installed tarball and the generated code in src/gen.
//
//	node dist/main.js ws://127.0.0.1:PORT/
//
// It exits 0 when every answer is the expected one, and 1 with a message
// on the first that is not.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcwsTransport } from "@grpcws/client";
import { WebSocket } from "ws";
import { EchoService } from "./gen/examples/echo/v1/echo_pb.js";

const baseUrl = process.argv[2];
if (baseUrl === undefined) {
  fail("usage: node dist/main.js ws://HOST:PORT/");
}

// Node 20 has no global WebSocket: the ws package's is passed explicitly
// (on Node 22 and later the global one would do too).
const echo = createClient(EchoService, createGrpcwsTransport({ baseUrl, WebSocket }));
const callOptions = { timeoutMs: 10_000 };

function fail(message: string): never {
  console.error(`main: FAIL: ${message}`);
  process.exit(1);
}

function expect(what: string, got: unknown, want: unknown): void {
  if (got !== want) {
    fail(`${what}: got ${String(got)}, want ${String(want)}`);
  }
}

async function unary(): Promise<void> {
  const res = await echo.echo({ message: "hello", payload: new Uint8Array([1, 2, 3]) }, callOptions);
  expect("Echo message", res.message, "hello");
  expect("Echo payload", Array.from(res.payload).join(","), "1,2,3");
  console.log(`main: Echo answered ${JSON.stringify(res.message)}`);
}

async function failing(): Promise<void> {
  try {
    await echo.echo({ message: "x", fail: { code: Code.NotFound, message: "no such echo" } }, callOptions);
  } catch (e) {
    // instanceof holds only if the package and this program share one
    // @connectrpc/connect: the package must take it as a peer, not bundle it.
    if (!(e instanceof ConnectError)) {
      fail(`Echo with fail: threw ${String(e)}, not a ConnectError of this program's @connectrpc/connect`);
    }
    expect("Echo with fail: code", Code[e.code], Code[Code.NotFound]);
    expect("Echo with fail: message", e.rawMessage, "no such echo");
    console.log(`main: Echo with fail threw ${e.message}`);
    return;
  }
  fail("Echo with fail: resolved; want a ConnectError");
}

async function bidi(): Promise<void> {
  const words = ["one", "two", "three"];
  // Each request waits for the answer to the one before it, so the call
  // only finishes if requests and responses really interleave on the one
  // WebSocket: a transport that held requests back until the end would
  // stall here until the timeout.
  let answered: () => void = () => {};
  async function* requests() {
    for (const message of words) {
      const next = new Promise<void>((resolve) => {
        answered = resolve;
      });
      yield { message };
      await next;
    }
  }
  const got: { message: string; index: bigint }[] = [];
  for await (const res of echo.bidi(requests(), callOptions)) {
    got.push({ message: res.message, index: res.index });
    answered();
  }
  expect("Bidi: number of responses", got.length, words.length);
  got.forEach((res, i) => {
    expect(`Bidi response ${i}: message`, res.message, words[i]);
    expect(`Bidi response ${i}: index`, res.index, BigInt(i + 1));
  });
  console.log(`main: Bidi answered ${got.map((r) => `${r.index}:${r.message}`).join(" ")}`);
}

setTimeout(() => fail("not done after 20 s"), 20_000).unref();
try {
  await unary();
  await failing();
  await bidi();
} catch (e) {
  fail(e instanceof Error ? (e.stack ?? e.message) : String(e));
}
console.log("main: ok");
