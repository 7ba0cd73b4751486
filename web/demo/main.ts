// The grpcws demo page: a chat on a bidi stream, and one card for each of
// the other RPC kinds. Every call goes through a client of
// @connectrpc/connect's createClient over the transport of @grpcws/client.
// The page is served by the bridge's own host, so every WebSocket goes to
// the page's origin.

import "./style.css";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import type { WritableIterable } from "@connectrpc/connect/protocol";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { CloseCode, closeCodeOf, createGrpcwsTransport, isRetryable, withReconnect } from "../src/index.js";
import { ChatService } from "../src/gen/examples/chat/v1/chat_pb.js";
import type { ChatMessage, ChatRequestSchema } from "../src/gen/examples/chat/v1/chat_pb.js";
import { EchoService, FailureSchema } from "../src/gen/examples/echo/v1/echo_pb.js";
import type { UploadRequestSchema } from "../src/gen/examples/echo/v1/echo_pb.js";

// The bridge listens where the page came from: "http://host/" becomes
// ws://host/. Every call of the page is a stream of the transport's one
// WebSocket.
const transport = createGrpcwsTransport({ baseUrl: new URL(".", location.href).href });
const chat = createClient(ChatService, transport);
const echo = createClient(EchoService, transport);

// For the console (and the browser tests): the clients, the transport and
// what it takes to make and read calls.
Object.assign(globalThis, {
  grpcws: {
    createClient,
    createGrpcwsTransport,
    ConnectError,
    Code,
    CloseCode,
    closeCodeOf,
    codeToString,
    createWritableIterable,
    withReconnect,
    isRetryable,
    ChatService,
    EchoService,
    FailureSchema,
    transport,
    chat,
    echo,
  },
});

function $<T extends HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (e === null) {
    throw new Error(`no element #${id}`);
  }
  return e as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className !== "") {
    e.className = className;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

/**
 * describe says what went wrong: "NOT_FOUND: no such greeting", or with
 * the close code when the bridge refused or the connection dropped,
 * "UNAVAILABLE, close 1006: ...".
 */
function describe(err: ConnectError): string {
  const closeCode = closeCodeOf(err);
  const close = closeCode !== undefined ? `, close ${String(closeCode)}` : "";
  return `${codeToString(err.code).toUpperCase()}${close}: ${err.rawMessage}`;
}

// ---------------------------------------------------------------- status

type Tone = "idle" | "live" | "wait" | "bad";

function setStatus(text: string, tone: Tone): void {
  const s = $("status");
  s.textContent = text;
  s.className = `pill pill-${tone}`;
}

// ---------------------------------------------------------------- chat

type ChatRequestInit = MessageInitShape<typeof ChatRequestSchema>;

let session: AbortController | undefined;
// What the user says goes into the current attempt's requests; each
// attempt of the stream has its own.
let outbox: WritableIterable<ChatRequestInit> | undefined;
let me = "";

const nickInput = $<HTMLInputElement>("nickname");
const roomInput = $<HTMLInputElement>("room");
nickInput.value = localStorage.getItem("grpcws.nickname") ?? `guest-${String(Math.floor(1000 + Math.random() * 9000))}`;
roomInput.value = roomFromHash() || "lobby";

function roomFromHash(): string {
  try {
    return decodeURIComponent(location.hash.slice(1)).trim();
  } catch {
    return "";
  }
}

function hue(name: string): number {
  let h = 0;
  for (const c of name) {
    h = (h * 31 + (c.codePointAt(0) ?? 0)) % 360;
  }
  return h;
}

function avatar(name: string): HTMLElement {
  const a = el("span", "avatar", [...name][0]?.toUpperCase() ?? "?");
  a.style.background = `hsl(${String(hue(name))} 55% 48%)`;
  return a;
}

function showJoin(error?: string): void {
  $("join-view").hidden = false;
  $("room-view").hidden = true;
  const je = $("join-error");
  je.hidden = error === undefined;
  je.textContent = error ?? "";
  const members = $("members");
  members.replaceChildren(el("li", "muted small", "Join a room to see who is in it."));
}

function addMessage(m: ChatMessage): void {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const li = el("li", m.system ? "msg system" : m.nickname === me ? "msg mine" : "msg");
  if (!m.system) {
    const meta = el("div", "meta");
    const time = m.time ? timestampDate(m.time).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
    if (m.nickname !== me) {
      const who = el("b", "", m.nickname);
      who.style.color = `hsl(${String(hue(m.nickname))} 55% 45%)`;
      meta.append(who, ` · ${time}`);
    } else {
      meta.textContent = time;
    }
    li.append(meta);
  }
  li.append(el("div", "bubble", m.text));
  list.append(li);
  if (atBottom || m.nickname === me) {
    list.scrollTop = list.scrollHeight;
  }
}

function addNote(text: string): void {
  const li = el("li", "msg system");
  li.append(el("div", "bubble", text));
  $("messages").append(li);
}

function setMembers(nicknames: readonly string[]): void {
  const ul = $("members");
  ul.replaceChildren(
    ...nicknames.map((n) => {
      const li = el("li", "member");
      li.append(avatar(n), el("span", "name", n === me ? `${n} (you)` : n));
      return li;
    }),
  );
  $("member-count").textContent = nicknames.length === 1 ? "1 member" : `${String(nicknames.length)} members`;
}

async function join(room: string, nickname: string): Promise<void> {
  session?.abort();
  const ctl = new AbortController();
  session = ctl;
  me = nickname;
  localStorage.setItem("grpcws.nickname", nickname);
  history.replaceState(null, "", `#${encodeURIComponent(room)}`);
  $("join-view").hidden = true;
  $("room-view").hidden = false;
  $("room-name").textContent = room;
  $("me").textContent = nickname;
  $("member-count").textContent = "";
  $("messages").replaceChildren();
  setStatus("connecting…", "wait");
  try {
    await withReconnect(
      async ({ attempt, signal, connected }) => {
        const requests = createWritableIterable<ChatRequestInit>();
        outbox = requests;
        // The join goes first. Nothing waits for a write: the stream's
        // outcome is the loop's.
        requests.write({ kind: { case: "join", value: { room, nickname } } }).catch(() => undefined);
        let first = true;
        try {
          for await (const res of chat.chat(requests, { signal })) {
            if (first) {
              first = false;
              connected();
              setStatus("live", "live");
              if (attempt > 0) {
                addNote("reconnected");
              }
            }
            switch (res.kind.case) {
              case "message":
                addMessage(res.kind.value);
                break;
              case "members":
                setMembers(res.kind.value.nicknames);
                break;
            }
          }
        } finally {
          requests.close();
          if (outbox === requests) {
            outbox = undefined;
          }
        }
      },
      {
        signal: ctl.signal,
        onRetry: (err, _attempt, delay) => {
          setStatus(`reconnecting in ${(delay / 1000).toFixed(1)} s`, "wait");
          addNote(`connection lost (${describe(err)})`);
        },
      },
    );
    setStatus("left", "idle");
    showJoin();
  } catch (e) {
    if (ctl.signal.aborted) {
      return; // left, or joined another room
    }
    setStatus("not connected", "bad");
    showJoin(describe(ConnectError.from(e)));
  }
}

$<HTMLFormElement>("join-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const nickname = nickInput.value.trim();
  const room = roomInput.value.trim();
  if (nickname !== "" && room !== "") {
    void join(room, nickname);
  }
});

$<HTMLFormElement>("say-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("say");
  const text = input.value.trim();
  if (text === "" || outbox === undefined) {
    return;
  }
  outbox.write({ kind: { case: "say", value: { text } } }).catch(() => undefined);
  input.value = "";
});

$("leave").addEventListener("click", () => {
  session?.abort();
  session = undefined;
  setStatus("not connected", "idle");
  showJoin();
});

// ---------------------------------------------------------------- unary

$<HTMLFormElement>("echo-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const out = $("echo-out");
  const message = $<HTMLInputElement>("echo-text").value;
  const failCode = Number($<HTMLSelectElement>("echo-fail").value);
  const failMessages: Record<number, string> = {
    5: "nicht gefunden: no such greeting ✗",
    7: "not for you",
    14: "the backend is taking a break",
  };
  const started = performance.now();
  out.className = "out muted";
  out.textContent = "calling…";
  echo
    .echo({ message, fail: { code: failCode, message: failMessages[failCode] ?? "" } })
    .then((res) => {
      out.className = "out ok";
      out.textContent = `“${res.message}” in ${String(Math.round(performance.now() - started))} ms`;
    })
    .catch((e: unknown) => {
      out.className = "out bad";
      out.textContent = `ConnectError ${describe(ConnectError.from(e))}`;
    });
});

// ---------------------------------------------------------------- server streaming

let ticker: AbortController | undefined;
const tickerCount = 20;

$("ticker-start").addEventListener("click", () => {
  const ctl = new AbortController();
  ticker = ctl;
  const out = $("ticker-out");
  const bar = $("ticker-bar");
  const start = $<HTMLButtonElement>("ticker-start");
  const stop = $<HTMLButtonElement>("ticker-stop");
  start.disabled = true;
  stop.disabled = false;
  bar.style.width = "0";
  out.className = "out muted";
  out.textContent = "waiting for the first tick…";
  void (async () => {
    try {
      const s = echo.ticker({ message: "tick", count: tickerCount, interval: durationFromMs(250) }, { signal: ctl.signal });
      for await (const t of s) {
        bar.style.width = `${String((100 * t.index) / tickerCount)}%`;
        out.textContent = `${t.message} ${String(t.index)} of ${String(tickerCount)}`;
      }
      out.className = "out ok";
      out.textContent = `${String(tickerCount)} ticks, then OK`;
    } catch (e) {
      const err = ConnectError.from(e);
      out.className = err.code === Code.Canceled ? "out muted" : "out bad";
      out.textContent = err.code === Code.Canceled ? "canceled: the backend saw the call end" : `ConnectError ${describe(err)}`;
    } finally {
      start.disabled = false;
      stop.disabled = true;
    }
  })();
});

$("ticker-stop").addEventListener("click", () => {
  ticker?.abort();
});

// ---------------------------------------------------------------- client streaming

const chunkSize = 64 << 10;
const fileInput = $<HTMLInputElement>("upload-file");

fileInput.addEventListener("change", () => {
  const f = fileInput.files?.[0];
  $("upload-file-name").textContent = f ? `${f.name} (${formatBytes(f.size)})` : "Choose a file…";
});

function formatBytes(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${String(v)} B`;
  if (v < 1 << 20) return `${(v / 1024).toFixed(1)} KiB`;
  return `${(v / (1 << 20)).toFixed(1)} MiB`;
}

/** requests are the upload's messages: the file in chunks, or 100 chunks of sample data. */
async function* requests(file: File | undefined): AsyncGenerator<MessageInitShape<typeof UploadRequestSchema>> {
  if (file === undefined) {
    const sample = new TextEncoder().encode("gRPC over WebSocket, one frame per message. ".repeat(23));
    for (let i = 0; i < 100; i++) {
      yield { chunk: sample };
    }
    return;
  }
  for (let off = 0; off < file.size; off += chunkSize) {
    yield { chunk: new Uint8Array(await file.slice(off, off + chunkSize).arrayBuffer()) };
  }
}

$("upload-start").addEventListener("click", () => {
  const out = $("upload-out");
  const button = $<HTMLButtonElement>("upload-start");
  button.disabled = true;
  out.className = "out muted";
  out.textContent = "uploading…";
  const started = performance.now();
  void (async () => {
    try {
      // The transport reads the next chunk only while little of the call
      // is left to send, so a large file is never all in memory.
      const res = await echo.upload(requests(fileInput.files?.[0]));
      out.className = "out ok";
      out.textContent = `the server counted ${res.messages.toLocaleString()} messages, ${formatBytes(res.bytes)}, in ${String(Math.round(performance.now() - started))} ms`;
    } catch (e) {
      out.className = "out bad";
      out.textContent = `ConnectError ${describe(ConnectError.from(e))}`;
    } finally {
      button.disabled = false;
    }
  })();
});

showJoin();
