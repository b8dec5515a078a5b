// Shared by the viewer page, the host console and the ops dashboard. No dependencies.
//
// Safety rule of these pages: text that came from a user or the network is only ever put
// into the page as a text node (h() below, or .textContent); nothing is assigned to
// innerHTML. The gateway also serves the pages with a strict Content-Security-Policy.

export const params = new URLSearchParams(location.search);

/** Build an element. Props: class, dataset, on<event>, attributes; children: nodes or text. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style" && typeof v === "object") Object.assign(el.style, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replace the children of `el` (text only through text nodes). */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Prices and amounts are integer cents on the wire. */
export function money(cents) {
  if (cents === undefined || cents === null || Number.isNaN(Number(cents))) return "–";
  const n = Number(cents);
  return (n < 0 ? "-$" : "$") + (Math.abs(n) / 100).toFixed(2);
}

export function fmtInt(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US");
}

/** An id for request_id / Idempotency-Key: letters, digits and '-' (what the API accepts). */
export function newId(prefix = "") {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return prefix + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.details = details; // the error's other fields (retry_after_s, product_id, sku, …)
  }
}

/** JSON HTTP call with the page's token. Throws ApiError({status, code, message}). */
export async function api(path, { method = "GET", body, token = params.get("token"), headers = {} } = {}) {
  const init = { method, headers: { ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, "network", `network error: ${e.message}`);
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { raw: text };
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    const { code, message, ...details } = err;
    throw new ApiError(res.status, code || `http_${res.status}`, message || text || res.statusText, details);
  }
  return data;
}

/** A small toast area: toast("text", "error"|"ok"|"info"). */
export function toast(text, kind = "info", ms = 4000) {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", { id: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const t = h("div", { class: `toast ${kind}` }, text);
  box.append(t);
  setTimeout(() => t.remove(), ms);
  return t;
}

/**
 * The room connection: `/ws?room=&token=&format=json`, JSON text frames.
 *
 * - Events (batches unpacked) go to onEvent(env, {replay}); `replay` is true for events the
 *   server replays from the room history (seq <= the welcome's seq).
 * - request(t, d) sends a command with a fresh client id and resolves with the reply
 *   (`ack` or a typed reply such as `order.reserved`), or rejects with {code, message}.
 * - Reconnects with back-off and `since=<last seq>`, so nothing critical is missed
 *   (close 1012 on a gateway restart, 1013 for a slow client); close 4403 (banned or kicked
 *   by the room's moderation) is final: no reconnect. The first connection asks
 *   for the room's retained history (`since=0`) so a late joiner sees the live sale, open
 *   lotteries and coupon drops; the server trims old comments and sends counters once.
 */
export class Live {
  constructor(room, token, { onEvent = () => {}, onStatus = () => {}, history = true } = {}) {
    this.room = room;
    this.token = token;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.lastSeq = history ? 0 : null;
    this.welcomeSeq = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.backoff = 500;
    this.closedByUser = false;
    this.ws = null;
    this.me = null;
  }

  connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ room: this.room, token: this.token || "", format: "json" });
    if (this.lastSeq !== null) q.set("since", String(this.lastSeq));
    const ws = (this.ws = new WebSocket(`${proto}//${location.host}/ws?${q}`));
    this.onStatus("connecting");
    ws.onmessage = (m) => this._frame(m.data);
    ws.onclose = (e) => {
      for (const [, p] of this.pending) p.reject({ code: "disconnected", message: "connection closed" });
      this.pending.clear();
      clearInterval(this.pinger);
      if (this.closedByUser) return;
      if (e.code === 4401) {
        this.onStatus("unauthorized", e);
        return;
      }
      if (e.code === 4403) { // banned or kicked (the reason says which): reconnecting is refused for a while
        this.onStatus("refused", e);
        return;
      }
      this.onStatus("reconnecting", e);
      const wait = e.code === 1012 ? 200 : this.backoff;
      this.backoff = Math.min(this.backoff * 2, 10000);
      setTimeout(() => this.connect(), wait + Math.random() * 300);
    };
    ws.onopen = () => {
      this.backoff = 500;
      this.pinger = setInterval(() => this.send("ping", {}), 25000);
    };
  }

  close() {
    this.closedByUser = true;
    this.ws && this.ws.close(1000);
  }

  send(t, d) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return null;
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ t, id, d }));
    return id;
  }

  request(t, d = {}, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const id = this.send(t, d);
      if (id === null) {
        reject({ code: "disconnected", message: "not connected; retrying" });
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject({ code: "timeout", message: `no reply to ${t}` });
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(timer), resolve(v)),
        reject: (v) => (clearTimeout(timer), reject(v)),
      });
    });
  }

  _frame(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if (msg.t === "batch") {
      for (const item of msg.items || []) this._event(item);
    } else {
      this._event(msg);
    }
  }

  _event(env) {
    if (env.id !== undefined && env.id !== null && this.pending.has(env.id)) {
      const p = this.pending.get(env.id);
      this.pending.delete(env.id);
      if (env.t === "error") p.reject(env.d || { code: "error" });
      else p.resolve(env);
      if (env.t === "ack" || env.t === "error" || env.t === "pong") return;
    }
    if (env.t === "pong" || env.t === "ack") return;
    if (env.t === "welcome") {
      this.welcomeSeq = env.d.seq || 0;
      this.me = env.d.user;
      if (this.lastSeq === null || this.lastSeq === 0) this.lastSeq = this.welcomeSeq;
      this.onStatus("live", env);
    }
    if (env.t === "resync") {
      this.ws.close(4000, "resync");
      return;
    }
    const replay = typeof env.seq === "number" && env.seq <= this.welcomeSeq;
    if (typeof env.seq === "number" && env.seq > (this.lastSeq || 0)) this.lastSeq = env.seq;
    try {
      this.onEvent(env, { replay });
    } catch (e) {
      console.error("event handler failed", env, e);
    }
  }
}

/** Human countdown "m:ss" to an epoch-ms deadline. */
export function countdown(deadlineMs) {
  const s = Math.max(0, Math.round((deadlineMs - Date.now()) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export function timeOf(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
