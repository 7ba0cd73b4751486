#!/usr/bin/env node
// pack-test installs @grpcws/client the way a new user would, and runs it:
//
//  1. npm pack the web/ workspace, and check what the tarball holds;
//  2. npm install the tarball into an empty ESM project, with
//     @connectrpc/connect, @bufbuild/protobuf, ws, typescript, @types/node,
//     @types/ws and @bufbuild/protoc-gen-es at the versions the root
//     package-lock.json pins;
//  3. buf generate the echo service's code there (the repository's buf,
//     the project's protoc-gen-es);
//  4. type-check (strict, NodeNext, skipLibCheck off) and
//     compile packtest/src/main.ts;
//  5. run it against `grpcws --demo` on a free port of 127.0.0.1: a unary
//     call, a failing call and a bidi call.
//
// Usage, from the repository's root after npm ci: node web/scripts/pack-test.mjs
// (make test-pack). Every step has a time limit; on any failure it prints
// the step's output and exits 1. The sidecar is stopped and the temporary
// directory removed however it ends; PACK_TEST_KEEP=1 keeps the directory.
//
// The program passes the ws package's WebSocket even where Node has a
// global one (22 and later), so that it runs the same on every Node the
// package supports (engines: >=20).
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const fixtures = join(here, "packtest");
const buf = join(root, "node_modules/.bin/buf");

const minute = 60_000;
const started = Date.now();
const children = new Set();
let tmp;

function log(message) {
  console.log(`pack-test: ${message} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
}

class StepError extends Error {}

/**
 * run runs a command to its end, its output captured, and rejects with
 * that output if it fails or outlasts timeoutMs. Each child leads its own
 * process group, so that a timeout or a signal ends what it started too.
 */
function run(cmd, args, { cwd = root, timeoutMs = minute } = {}) {
  return new Promise((resolvePromise, reject) => {
    const line = [cmd, ...args].join(" ");
    const child = spawn(cmd, args, { cwd, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    const timer = setTimeout(() => {
      kill(child, "SIGKILL");
      reject(new StepError(`${line}: no result after ${timeoutMs / 1000} s\n${output}`));
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      children.delete(child);
      reject(new StepError(`${line}: ${err.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      if (code === 0) {
        resolvePromise(output);
      } else {
        reject(new StepError(`${line} (in ${cwd}): exit ${code ?? signal}\n${output}`));
      }
    });
  });
}

function kill(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** pinned returns the version of a package that the root lockfile pins. */
function pinned(lock, name) {
  const version = lock.packages?.[`node_modules/${name}`]?.version;
  if (version === undefined) {
    throw new StepError(`package-lock.json pins no version of ${name}: add it to the root or web/ devDependencies`);
  }
  return version;
}

/** checkTarball fails unless the packed files are lib/, package.json and README.md, built from src/. */
async function checkTarball(tarball) {
  const files = (await run("tar", ["-tzf", tarball]))
    .split("\n")
    .filter((f) => f !== "" && !f.endsWith("/"))
    .map((f) => f.replace(/^package\//, ""));
  const problems = [];
  for (const want of ["package.json", "README.md", "lib/index.js", "lib/index.d.ts"]) {
    if (!files.includes(want)) problems.push(`missing ${want}`);
  }
  const sources = new Set(readdirSync(join(root, "web/src"), { recursive: true }).map(String));
  for (const f of files) {
    if (f === "package.json" || f === "README.md" || f === "LICENSE") continue;
    const m = /^lib\/(.+?)(\.d\.ts|\.js)$/.exec(f);
    if (m === null) {
      problems.push(`unexpected file ${f} (only lib/*.js and lib/*.d.ts belong in the package)`);
    } else if (/(^|\/)(test|__tests__)\/|\.test$|\.spec$/.test(m[1])) {
      problems.push(`test file ${f}`);
    } else if (!sources.has(`${m[1]}.ts`)) {
      // tsc never deletes from lib/: a file whose source is gone is a stale build.
      problems.push(`${f} has no source web/src/${m[1]}.ts: a stale build? (rm -rf web/lib)`);
    }
  }
  if (problems.length > 0) {
    throw new StepError(`${tarball}:\n  ${problems.join("\n  ")}\nfiles: ${files.join(" ")}`);
  }
  return files.length;
}

/**
 * startSidecar starts grpcws --demo on free ports of 127.0.0.1 and
 * resolves with its address once it prints that it is listening.
 */
function startSidecar(bin) {
  return new Promise((resolvePromise, reject) => {
    const args = ["--demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "warn"];
    const child = spawn(bin, args, { detached: true, stdio: ["ignore", "pipe", "pipe"] });
    children.add(child);
    let stdout = "";
    let stderr = "";
    let ready = false;
    const timer = setTimeout(() => {
      kill(child, "SIGKILL");
      reject(new StepError(`grpcws ${args.join(" ")}: not listening after 30 s\n${stdout}${stderr}`));
    }, 30_000);
    child.stderr.on("data", (d) => {
      stderr += d;
      if (ready) process.stderr.write(d); // its warnings while the program runs
    });
    child.stdout.on("data", (d) => {
      stdout += d;
      // grpcws: listening on ADDR (admin ADDR)
      const m = /^grpcws: listening on (\S+) \(admin /m.exec(stdout);
      if (m !== null && !ready) {
        ready = true;
        clearTimeout(timer);
        resolvePromise({ child, addr: m[1] });
      }
    });
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(new StepError(`grpcws: ${err.message}`));
    });
    child.on("exit", (code, signal) => {
      children.delete(child);
      if (!ready) {
        clearTimeout(timer);
        reject(new StepError(`grpcws ${args.join(" ")}: exit ${code ?? signal} before listening\n${stdout}${stderr}`));
      }
    });
  });
}

/** stopSidecar sends SIGTERM and waits up to 10 s for the exit, then kills it. */
async function stopSidecar(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", (code, signal) => r(code ?? signal)));
  kill(child, "SIGTERM");
  const timeout = new Promise((r) => setTimeout(r, 10_000, "timeout").unref());
  if ((await Promise.race([exited, timeout])) === "timeout") {
    console.error("pack-test: grpcws did not stop within 10 s of SIGTERM: killed");
    kill(child, "SIGKILL");
  }
}

function cleanup() {
  for (const child of children) kill(child, "SIGKILL");
  if (tmp === undefined) return;
  if (process.env.PACK_TEST_KEEP) {
    console.log(`pack-test: kept ${tmp}`);
  } else {
    rmSync(tmp, { recursive: true, force: true });
  }
}

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.on(signal, () => {
    console.error(`pack-test: ${signal}: stopping`);
    cleanup();
    process.exit(1);
  });
}

async function main() {
  tmp = mkdtempSync(join(tmpdir(), "grpcws-pack-test-"));
  const packDir = join(tmp, "pack");
  const app = join(tmp, "app");
  mkdirSync(packDir);
  mkdirSync(app);
  log(`node ${process.version}, working in ${tmp}`);

  const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"));
  const deps = [
    "@connectrpc/connect",
    "@bufbuild/protobuf",
    "ws",
    "typescript",
    "@types/node",
    "@types/ws",
    "@bufbuild/protoc-gen-es",
  ].map((name) => `${name}@${pinned(lock, name)}`);

  // The sidecar builds while npm works; it is awaited before it runs.
  const bin = join(tmp, "grpcws");
  const built = run("go", ["build", "-o", bin, "./cmd/grpcws"], { timeoutMs: 5 * minute });
  built.catch(() => {}); // reported where it is awaited

  log("[1/5] npm pack --workspace web (its prepack builds lib/)");
  await run("npm", ["pack", "--workspace", "web", "--pack-destination", packDir, "--silent"], { timeoutMs: 2 * minute });
  const tarballs = readdirSync(packDir).filter((f) => f.endsWith(".tgz"));
  if (tarballs.length !== 1) {
    throw new StepError(`npm pack made ${tarballs.length} tarballs in ${packDir}: ${tarballs.join(" ")}`);
  }
  const tarball = join(packDir, tarballs[0]);
  const count = await checkTarball(tarball);
  log(`packed ${tarballs[0]}: ${count} files, lib/index.js and lib/index.d.ts, no sources or tests`);

  log(`[2/5] npm install the tarball and ${deps.join(" ")}`);
  writeFileSync(
    join(app, "package.json"),
    JSON.stringify({ name: "grpcws-pack-test", version: "0.0.0", private: true, type: "module" }, null, 2) + "\n",
  );
  // --prefer-offline: the cache that npm ci filled serves what it can; the
  // registry is asked for the rest. A cold cache is slow: 5 minutes.
  await run(
    "npm",
    ["install", "--save-exact", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", tarball, ...deps],
    { cwd: app, timeoutMs: 5 * minute },
  );

  log("[3/5] buf generate the echo service");
  for (const f of ["buf.yaml", "buf.gen.yaml", "tsconfig.json", "src/main.ts"]) {
    cpSync(join(fixtures, f), join(app, f));
  }
  cpSync(join(root, "proto/examples/echo/v1/echo.proto"), join(app, "proto/examples/echo/v1/echo.proto"));
  await run(buf, ["generate"], { cwd: app });
  const generated = join(app, "src/gen/examples/echo/v1/echo_pb.ts");
  if (!readFileSync(generated, "utf8").includes("export const EchoService")) {
    throw new StepError(`${generated} has no EchoService`);
  }

  log("[4/5] tsc: type-check (strict) and compile main.ts");
  await run(join(app, "node_modules/.bin/tsc"), ["-p", "tsconfig.json"], { cwd: app });

  try {
    await built;
  } catch (err) {
    throw new StepError(`go build ./cmd/grpcws: ${err.message}`);
  }
  log("[5/5] grpcws --demo, and main.js against it");
  const sidecar = await startSidecar(bin);
  try {
    const baseUrl = `ws://${sidecar.addr}/`;
    const out = await run(process.execPath, ["dist/main.js", baseUrl], { cwd: app, timeoutMs: 30_000 });
    process.stdout.write(out);
  } finally {
    await stopSidecar(sidecar.child);
  }
  log("ok");
}

try {
  await main();
} catch (err) {
  console.error(`pack-test: FAIL: ${err instanceof StepError ? err.message : err.stack}`);
  process.exitCode = 1;
} finally {
  cleanup();
}
