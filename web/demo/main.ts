// The grpcws demo page: a chat on a bidi stream, and one card for each of
// the other RPC kinds, all through @grpcws/client. The page is served by
// the bridge's own host, so every WebSocket goes to the page's origin.

import "./style.css";
import { durationFromMs, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, CloseCode, GrpcWsError, codeName, createClient, isRetryable, withReconnect } from "../src/index.js";
import type { BidiStream } from "../src/index.js";
import { ChatService } from "../src/gen/examples/chat/v1/chat_pb.js";
import type { ChatMessage, ChatRequestSchema, ChatResponseSchema } from "../src/gen/examples/chat/v1/chat_pb.js";
import { EchoService } from "../src/gen/examples/echo/v1/echo_pb.js";

// The bridge listens where the page came from: "/" becomes ws://host/.
const base = new URL(".", location.href);
const chat = createClient(ChatService, base);
const echo = createClient(EchoService, base);

// For the console (and the browser tests): the client and the services.
Object.assign(globalThis, {
  grpcws: { createClient, withReconnect, isRetryable, GrpcWsError, Code, CloseCode, codeName, ChatService, EchoService, chat, echo },
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

function describe(e: unknown): string {
  const err = GrpcWsError.from(e);
  const close = err.closeCode !== undefined ? `, close ${String(err.closeCode)}` : "";
  return `${codeName(err.code).toUpperCase()}${close}: ${err.rawMessage}`;
}

// ---------------------------------------------------------------- status

type Tone = "idle" | "live" | "wait" | "bad";

function setStatus(text: string, tone: Tone): void {
  const s = $("status");
  s.textContent = text;
  s.className = `pill pill-${tone}`;
}

// ---------------------------------------------------------------- chat

let session: AbortController | undefined;
let stream: BidiStream<typeof ChatRequestSchema, typeof ChatResponseSchema> | undefined;
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
        const s = chat.chat({ signal });
        stream = s;
        s.send({ kind: { case: "join", value: { room, nickname } } });
        let first = true;
        for await (const res of s) {
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
    showJoin(describe(e));
  } finally {
    if (session === ctl) {
      stream = undefined;
    }
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
  if (text === "" || stream === undefined) {
    return;
  }
  stream.send({ kind: { case: "say", value: { text } } });
  input.value = "";
});

$("leave").addEventListener("click", () => {
  session?.abort();
  session = undefined;
  stream = undefined;
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
      out.textContent = `GrpcWsError ${describe(e)}`;
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
      const err = GrpcWsError.from(e);
      out.className = err.code === Code.Canceled ? "out muted" : "out bad";
      out.textContent = err.code === Code.Canceled ? "canceled: the backend saw the call end" : `GrpcWsError ${describe(err)}`;
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

async function* chunks(file: File | undefined): AsyncGenerator<Uint8Array> {
  if (file === undefined) {
    const sample = new TextEncoder().encode("gRPC over WebSocket, one frame per message. ".repeat(23));
    for (let i = 0; i < 100; i++) {
      yield sample;
    }
    return;
  }
  for (let off = 0; off < file.size; off += chunkSize) {
    yield new Uint8Array(await file.slice(off, off + chunkSize).arrayBuffer());
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
      const up = echo.upload();
      for await (const chunk of chunks(fileInput.files?.[0])) {
        up.send({ chunk });
        // Pace a large file by what the socket has yet to send.
        while (up.bufferedAmount > 4 * chunkSize) {
          await new Promise((r) => setTimeout(r, 5));
        }
      }
      up.closeSend();
      const res = await up.response;
      out.className = "out ok";
      out.textContent = `the server counted ${res.messages.toLocaleString()} messages, ${formatBytes(res.bytes)}, in ${String(Math.round(performance.now() - started))} ms`;
    } catch (e) {
      out.className = "out bad";
      out.textContent = `GrpcWsError ${describe(e)}`;
    } finally {
      button.disabled = false;
    }
  })();
});

showJoin();
