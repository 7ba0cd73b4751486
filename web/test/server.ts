// The test server: the demo backend behind bridges on 127.0.0.1, run as a
// child process (web/internal/testserver). GRPCWS_TESTSERVER names a built
// binary; without it the server is built with `go run`.

import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export interface TestServer {
  /** The base URL, "http://127.0.0.1:PORT". */
  readonly http: string;
  /** The bridge's URL, "ws://127.0.0.1:PORT/". */
  readonly ws: string;
  /** What the backend saw of the calls made with metadata x-test-id: id. */
  calls(id: string): Promise<BackendCall[]>;
  /** waitCalls polls calls(id) until pred holds, for at most 5 s. */
  waitCalls(id: string, pred: (calls: BackendCall[]) => boolean): Promise<BackendCall[]>;
  /** Closes the /doomed/ bridge, as a shutdown would: its calls end, new ones are refused with 1001. */
  closeDoomed(): Promise<void>;
  /** Serves /doomed/ with a new bridge, as a restart would. */
  reviveDoomed(): Promise<void>;
  stop(): Promise<void>;
}

export interface BackendCall {
  readonly method: string;
  readonly code: string;
  readonly ctxErr: string;
  readonly done: boolean;
  readonly hasDeadline: boolean;
  readonly authorization: string;
  readonly metadata: Record<string, string[]>;
}

const webDir = fileURLToPath(new URL("../..", import.meta.url)); // build/test -> web

export async function startServer(): Promise<TestServer> {
  const bin = process.env["GRPCWS_TESTSERVER"];
  const child: ChildProcess = bin
    ? spawn(bin, [], { stdio: ["pipe", "pipe", "inherit"] })
    : spawn("go", ["run", "./internal/testserver"], { cwd: webDir, stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stdout = child.stdout;
  if (stdout === null) {
    throw new Error("testserver: no stdout");
  }
  const base = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("testserver: no URL within 120 s")), 120_000);
    const lines = createInterface({ input: stdout });
    lines.once("line", (line) => {
      clearTimeout(timer);
      resolve(line.trim());
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`testserver exited with ${String(code)}`));
    });
  });
  const calls = async (id: string): Promise<BackendCall[]> => {
    const res = await fetch(`${base}/_test/calls?id=${encodeURIComponent(id)}`);
    return ((await res.json()) as BackendCall[] | null) ?? [];
  };
  return {
    http: base,
    ws: base.replace(/^http/, "ws") + "/",
    calls,
    async waitCalls(id, pred) {
      const deadline = Date.now() + 5_000;
      for (;;) {
        const got = await calls(id);
        if (pred(got) || Date.now() > deadline) {
          return got;
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    },
    async closeDoomed() {
      await fetch(`${base}/_test/close-doomed`, { method: "POST" });
    },
    async reviveDoomed() {
      const res = await fetch(`${base}/_test/revive-doomed`, { method: "POST" });
      if (!res.ok) {
        throw new Error(`revive-doomed: ${String(res.status)} ${await res.text()}`);
      }
    },
    async stop() {
      child.stdin?.end();
      await exited;
    },
  };
}
