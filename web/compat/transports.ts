// The test page of web/connect_test.go: one client, made by createClient
// from the generated EchoService, over two transports: connect-web's
// createConnectTransport (the Connect protocol over fetch, through the
// bridge's HTTP protocols) and createGrpcwsTransport (WebSocket). The same
// calls through each return the same Outcomes, as JSON, so that the test
// can compare them. Exposed as globalThis.transports.

import { toJson } from "@bufbuild/protobuf";
import type { DescMessage, JsonValue, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import type { CallOptions, Transport } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { closeCodeOf, createGrpcwsTransport } from "../src/index.js";
import { EchoService, FailureSchema } from "../src/gen/examples/echo/v1/echo_pb.js";
import type { BidiRequestSchema } from "../src/gen/examples/echo/v1/echo_pb.js";

/** What one call returned, in a form that JSON.stringify keeps whole. */
export interface Outcome {
  /** The responses, in the protobuf JSON of their type. */
  responses: JsonValue[];
  /** The response headers and trailers whose names start with "x-echo-". */
  header: Record<string, string>;
  trailer: Record<string, string>;
  /** The error the call ended with, if any. */
  error?: {
    code: string; // "not_found"
    rawMessage: string;
    /** The details that are examples.echo.v1.Failure, in its JSON. */
    details: JsonValue[];
    /** The error's metadata whose names start with "x-echo-", each value once. */
    metadata: Record<string, string>;
    /** The WebSocket close code behind it, for an error that came from a close. */
    closeCode?: number;
  };
}

/** The calls of one transport, by name. */
export type Outcomes = Record<string, Outcome>;

/** The message of the failing calls: non-ASCII, and a "%" that Connect's and gRPC's encodings treat apart. */
export const failMessage = "nicht gefunden: Straße ✗ 見つかりません 100%";

/**
 * echoed returns the headers whose names start with "x-echo-". The values
 * of binary ("-bin") headers are base64 with padding: gRPC allows both
 * forms, and grpc-go sends them without. With distinct, each value is
 * kept once: connect-es's own transports give an error the response
 * headers and the trailers as metadata, where grpcws gives the trailers.
 */
function echoed(h: Headers | undefined, distinct = false): Record<string, string> {
  const out: Record<string, string> = {};
  h?.forEach((v, k) => {
    if (!k.startsWith("x-echo-")) {
      return;
    }
    let values = v.split(", ");
    if (k.endsWith("-bin")) {
      values = values.map((b) => base64Encode(base64Decode(b)));
    }
    if (distinct) {
      values = [...new Set(values)];
    }
    out[k] = values.join(", ");
  });
  return out;
}

/**
 * call runs one call: start makes it with the options it is given, and
 * returns its responses, one for a unary or client-streaming method.
 */
async function call<O extends DescMessage>(
  schema: O,
  start: (opts: CallOptions) => Promise<MessageShape<O>> | AsyncIterable<MessageShape<O>>,
): Promise<Outcome> {
  const out: Outcome = { responses: [], header: {}, trailer: {} };
  const opts: CallOptions = {
    headers: [
      ["x-echo-one", "1"],
      ["x-echo-many", "a"],
      ["x-echo-many", "b"],
      ["x-echo-bin", "/wA="],
    ],
    onHeader: (h) => (out.header = echoed(h)),
    onTrailer: (t) => (out.trailer = echoed(t)),
    timeoutMs: 10_000,
  };
  try {
    const res = start(opts);
    if (Symbol.asyncIterator in res) {
      for await (const m of res) {
        out.responses.push(toJson(schema, m));
      }
    } else {
      out.responses.push(toJson(schema, await res));
    }
  } catch (e) {
    const err = ConnectError.from(e);
    out.error = {
      code: codeToString(err.code),
      rawMessage: err.rawMessage,
      details: err.findDetails(FailureSchema).map((d) => toJson(FailureSchema, d)),
      metadata: echoed(err.metadata, true),
    };
    const closeCode = closeCodeOf(err);
    if (closeCode !== undefined) {
      out.error.closeCode = closeCode;
    }
  }
  return out;
}

async function* from<T>(...items: T[]): AsyncIterable<T> {
  for (const i of items) {
    yield i;
  }
}

/** run makes every call through transport, one after the other. */
async function run(transport: Transport): Promise<Outcomes> {
  const echo = createClient(EchoService, transport);
  const { echo: unary, ticker, upload, bidi } = EchoService.method;
  return {
    unary: await call(unary.output, (o) => echo.echo({ message: "grüß dich ✓", payload: new Uint8Array([0, 1, 2, 255]) }, o)),
    generated: await call(unary.output, (o) => echo.echo({ responseSize: 300 }, o)),
    serverStream: await call(ticker.output, (o) => echo.ticker({ message: "tick", count: 3, interval: durationFromMs(1) }, o)),
    fail: await call(unary.output, (o) => echo.echo({ fail: { code: 5, message: failMessage } }, o)),
    failStream: await call(ticker.output, (o) => echo.ticker({ message: "t", count: 2, fail: { code: 9, message: "à la fin" } }, o)),
    clientStream: await call(upload.output, (o) => echo.upload(from({ chunk: new Uint8Array(1) }, { chunk: new Uint8Array(2) }, { chunk: new Uint8Array(3) }), o)),
    bidi: await call(bidi.output, (o) => {
      // One answer per message, each before the next message is written.
      const requests = createWritableIterable<MessageInitShape<typeof BidiRequestSchema>>();
      const responses = echo.bidi(requests, o);
      return (async function* () {
        const it = responses[Symbol.asyncIterator]();
        for (const message of ["one", "two 👋"]) {
          await requests.write({ message });
          const r = await it.next();
          if (r.done === true) {
            return;
          }
          yield r.value;
        }
        requests.close();
        for (let r = await it.next(); r.done !== true; r = await it.next()) {
          yield r.value;
        }
      })();
    }),
  };
}

/** The transports by name, against base ("http://host:port/"). */
function transports(base: string): Record<string, Transport> {
  return {
    "connect": createConnectTransport({ baseUrl: base }),
    "connect-json": createConnectTransport({ baseUrl: base, useBinaryFormat: false }),
    "grpcws": createGrpcwsTransport({ baseUrl: base }),
    "grpcws-json": createGrpcwsTransport({ baseUrl: base, useBinaryFormat: false }),
  };
}

Object.assign(globalThis, {
  transports: {
    names: (): string[] => Object.keys(transports("http://localhost/")),
    run: (name: string, base: string): Promise<Outcomes> => {
      const t = transports(base)[name];
      if (t === undefined) {
        return Promise.reject(new Error(`no transport named ${name}`));
      }
      return run(t);
    },
  },
});
