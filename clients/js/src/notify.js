// notify client: live, resumable notifications from a notify host over WebSocket, or over
// Server-Sent Events where WebSocket is missing or broken.
//
// One `NotifyClient` keeps one connection alive: it reconnects with jittered exponential
// backoff (or after the host's `retry_after_ms`), resumes every stream from the last
// position it processed, drops duplicates by (epoch, offset), re-subscribes channels, and
// acks. See docs/CLIENTS.md for the semantics and docs/PROTOCOL.md for the wire protocol.

export const VERSION = "0.2.0";

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSES = new Map([
  [4004, "tenant_deleted"],
  [4005, "disconnected"],
  [1002, "protocol_error"],
  [1007, "invalid_payload"],
  [1009, "message_too_big"],
]);

/** The credentials expired: reconnect with a fresh token. */
const CREDENTIALS_EXPIRED = 4003;

/** HTTP refusals of the handshake that retrying cannot fix (401 only once the token is fresh). */
const FINAL_STATUSES = new Set([401, 403, 404]);

/** How long the diagnosis of a failed connection may take. */
const DIAGNOSE_TIMEOUT_MS = 5_000;

/** How long a connection must last before the backoff starts again from its first step. */
const STABLE_MS = 10_000;

/** A token is refreshed this long before it expires (or at two thirds of its life, if later). */
const REFRESH_MARGIN_MS = 60_000;

/** The longest wait a timer takes (setTimeout's limit is about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

const DEFAULTS = {
  initialBackoffMs: 500,
  maxBackoffMs: 120_000,
  pingIntervalMs: 20_000,
  autoAck: false,
  delta: true,
};

/** The digits of the Fossil delta format's integers, by value. */
const FOSSIL_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
const FOSSIL_VALUE = new Map([...FOSSIL_DIGITS].map((c, i) => [c.charCodeAt(0), i]));

/** The Fossil delta format's checksum of `bytes`: the one a delta ends with. */
function fossilChecksum(bytes) {
  let [s0, s1, s2, s3] = [0, 0, 0, 0];
  let i = 0;
  for (; bytes.length - i >= 4; i += 4) {
    s0 = (s0 + bytes[i]) | 0;
    s1 = (s1 + bytes[i + 1]) | 0;
    s2 = (s2 + bytes[i + 2]) | 0;
    s3 = (s3 + bytes[i + 3]) | 0;
  }
  s3 = (s3 + (s2 << 8) + (s1 << 16) + (s0 << 24)) | 0;
  const rest = bytes.length - i;
  if (rest >= 3) s3 = (s3 + (bytes[i + 2] << 8)) | 0;
  if (rest >= 2) s3 = (s3 + (bytes[i + 1] << 16)) | 0;
  if (rest >= 1) s3 = (s3 + (bytes[i] << 24)) | 0;
  return s3 >>> 0;
}

/**
 * Applies a Fossil delta (https://fossil-scm.org/home/doc/tip/www/delta_format.wiki) to
 * `source`; throws unless the result has the size and checksum the delta promises.
 */
export function applyFossilDelta(source, delta) {
  let at = 0;
  const int = () => {
    let value = 0;
    let digit;
    while (at < delta.length && (digit = FOSSIL_VALUE.get(delta[at])) !== undefined) {
      value = value * 64 + digit;
      at += 1;
    }
    return value;
  };
  const expect = (byte) => {
    if (delta[at++] !== byte) throw new Error("malformed delta");
  };
  const size = int();
  expect(0x0a);
  const out = new Uint8Array(size);
  let length = 0;
  while (at < delta.length) {
    const count = int();
    const op = delta[at++];
    if (op === 0x40 /* @ copy */) {
      const offset = int();
      expect(0x2c);
      if (length + count > size || offset + count > source.length) throw new Error("delta copies out of range");
      out.set(source.subarray(offset, offset + count), length);
    } else if (op === 0x3a /* : insert */) {
      if (length + count > size || at + count > delta.length) throw new Error("delta inserts out of range");
      out.set(delta.subarray(at, at + count), length);
      at += count;
    } else if (op === 0x3b /* ; checksum */) {
      if (length !== size || count !== fossilChecksum(out)) throw new Error("delta checksum mismatch");
      return out;
    } else {
      throw new Error("malformed delta");
    }
    length += count;
  }
  throw new Error("unterminated delta");
}

/** The base64 `text` as bytes. */
function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** An error the client surfaces through its `error` event. */
export class NotifyError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "NotifyError";
    this.code = code;
    Object.assign(this, details);
  }
}

/** A tiny event emitter that works the same in browsers and Node. */
class Emitter {
  #handlers = new Map();

  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  /** Calls every handler; returns what each returned (a handler that threw: a rejection). */
  emit(type, ...args) {
    const handlers = [...(this.#handlers.get(type) ?? [])];
    return handlers.map((handler) => {
      try {
        return handler(...args);
      } catch (error) {
        const failed = Promise.reject(error);
        failed.catch(() => {});
        return failed;
      }
    });
  }
}

/** The stream an event frame came through: "user", "broadcast" or "channel:<name>". */
export function streamOf(frame) {
  if (frame.channel !== undefined) return `channel:${frame.channel}`;
  if (frame.broadcast) return "broadcast";
  return "user";
}

/**
 * Positions per stream, for resuming and de-duplication. An event is new when its epoch
 * differs from the one remembered (the stream's numbering started over) or its offset is
 * higher.
 */
export class Positions {
  #map = new Map();

  constructor(initial = {}) {
    for (const [stream, position] of Object.entries(initial)) this.#map.set(stream, { ...position });
  }

  get(stream) {
    return this.#map.get(stream);
  }

  /** Remembers `position` for `stream`, whatever it had. */
  set(stream, position) {
    this.#map.set(stream, { epoch: position.epoch, offset: position.offset });
  }

  /** Remembers `position` unless it is older than what the stream has. */
  advance(stream, position) {
    if (!this.isNew(stream, position)) return false;
    this.#map.set(stream, { epoch: position.epoch, offset: position.offset });
    return true;
  }

  /** Starts a stream at `position` if nothing is remembered for it yet; returns whether it did. */
  seed(stream, position) {
    if (this.#map.has(stream) || position?.epoch === undefined) return false;
    this.#map.set(stream, { epoch: position.epoch, offset: position.offset });
    return true;
  }

  isNew(stream, position) {
    const known = this.#map.get(stream);
    return !known || known.epoch !== position.epoch || position.offset > known.offset;
  }

  delete(stream) {
    return this.#map.delete(stream);
  }

  toJSON() {
    return Object.fromEntries(this.#map);
  }
}

function since(position) {
  return position ? `${position.epoch}:${position.offset}` : undefined;
}

/** `http(s)://` or `ws(s)://` base URL plus a path and query, as a `scheme` URL ("ws" or "http"). */
function endpoint(base, path, query, scheme = "ws") {
  const url = new URL(path, base);
  const secure = url.protocol === "https:" || url.protocol === "wss:";
  url.protocol = `${scheme}${secure ? "s" : ""}:`;
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
  }
  return url.toString();
}

/** The bytes of base64url `text` (a VAPID public key). */
function fromBase64Url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** Whether a subscription's `applicationServerKey` (bytes) is the base64url `key`. */
function sameKey(bytes, key) {
  if (!bytes) return false;
  const have = new Uint8Array(bytes);
  const want = fromBase64Url(key);
  return have.length === want.length && have.every((b, i) => b === want[i]);
}

/** The SSE cursor of `positions`: `STREAM:EPOCH:OFFSET` entries joined by commas. */
function cursorOf(positions) {
  const entries = Object.entries(positions.toJSON()).map(([stream, p]) => `${stream}:${p.epoch}:${p.offset}`);
  return entries.length ? entries.join(",") : undefined;
}

/** The `data` of each message of an SSE body, as a string; comments and other fields are skipped. */
async function* sseMessages(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (data.length) yield data.join("\n");
        data = [];
      } else if (line.startsWith("data:")) {
        data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
    }
  }
}

/** An HTTP refusal as {status, code, message, retryAfterMs}. */
async function refusalOf(response) {
  const body = await response.json().catch(() => ({}));
  const retryAfter = Number(response.headers.get("retry-after"));
  return {
    status: response.status,
    code: body?.error?.code ?? `http_${response.status}`,
    message: body?.error?.message ?? `the host answered ${response.status}`,
    retryAfterMs: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
  };
}

/**
 * A connection to one tenant of a notify host.
 *
 * Events: `state` ({state, ...}), `event` (frame, context), `positions` (what to save to
 * resume after a reload), `recovered` ({stream, recovered: false}), `unread` ({unread,
 * acked, offset, epoch}), `subscribed`, `unsubscribed` ({channel, reason?}), `refreshed`
 * ({expiresAt}: the connection took a fresh token), `transport`, `error` (NotifyError or
 * Error), `frame` (every raw frame).
 */
export class NotifyClient extends Emitter {
  #options;
  #socket = null;
  #state = "idle";
  #attempt = 0;
  #retryAfterMs = null;
  #timer = null;
  #pinger = null;
  #closed = false;
  #channels = new Map();
  #token = null;
  #freshToken = false;
  #events = Promise.resolve();
  #disconnectReason = null;
  #transport;
  #fallback;
  /**
   * Upgrades in a row that failed while the host answered the plain request: one can be a
   * host that was down for the upgrade and back for the diagnosis, two in a row mean
   * something on the way breaks WebSocket.
   */
  #brokenUpgrades = 0;
  /**
   * Per channel subscribed with delta updates, its last event ({id, data}, data as the
   * UTF-8 bytes the host sent): the base the next delta applies to.
   */
  #bases = new Map();
  /** Channels being subscribed again after a delta did not apply: their `unsubscribed` is ours. */
  #rebasing = new Set();
  #encoder = new TextEncoder();
  #decoder = new TextDecoder("utf-8", { fatal: true });
  /** The user's read cursor ({epoch, acked}) as last reported, for tenants with acks. */
  #cursor = null;
  /** Resets the backoff once a connection has lasted `STABLE_MS`. */
  #stable = null;
  /** Fetches a fresh token and hands it to the open connection before its credentials expire. */
  #refresher = null;
  /** The open connection's id (its `welcome`), which an SSE refresh names. */
  #connectionId = null;
  /** Per channel subscribed with a subscription token: the token, or its getter. */
  #channelTokens = new Map();
  #onOnline = () => this.#reconnectNow();

  /**
   * @param {object} options
   * @param {string} options.url base URL of the host (`https://…`, `wss://…`)
   * @param {string} options.tenant tenant id
   * @param {string | (() => string | Promise<string>)} [options.token] a JWT, or a getter
   *   called before every connection attempt once the previous token was refused or expired,
   *   and before the open connection's token expires (the new one is handed over without
   *   reconnecting)
   * @param {string} [options.user] the user id, for tenants in `insecure` mode
   * @param {Record<string, string>} [options.params] more query parameters (an auth plugin's)
   * @param {string[]} [options.channels] channels to subscribe at once
   * @param {Record<string, {epoch: string, offset: number}>} [options.positions] positions
   *   to resume from (as saved from `client.positions.toJSON()`)
   * @param {boolean} [options.autoAck] ack each user-stream event after its handlers return
   * @param {boolean} [options.delta] ask for delta updates on channels (WebSocket; the
   *   default): events the publisher sent with `delta` arrive as the difference from the
   *   channel's previous event and are rebuilt before the handlers see them
   * @param {number} [options.initialBackoffMs] first reconnect delay ceiling (doubling;
   *   each wait is between half the ceiling and the ceiling)
   * @param {number} [options.maxBackoffMs] largest reconnect delay ceiling
   * @param {number} [options.pingIntervalMs] application ping period (0: none)
   * @param {"auto" | "websocket" | "sse"} [options.transport] "auto" (the default) uses
   *   WebSocket and falls back to SSE when there is no WebSocket or the host is reachable
   *   over HTTP but the upgrade fails (a proxy that breaks WebSocket)
   * @param {typeof WebSocket} [options.WebSocket] the WebSocket constructor to use
   * @param {typeof fetch | null} [options.fetch] used for SSE and acks over SSE, and to learn
   *   why a WebSocket connection failed (null: never ask; every failure is retried)
   */
  constructor(options) {
    super();
    if (!options?.url || !options?.tenant) throw new TypeError("url and tenant are required");
    this.#options = { ...DEFAULTS, ...options };
    this.positions = new Positions(options.positions);
    for (const channel of options.channels ?? []) this.#channels.set(channel, "pending");
    const transport = options.transport ?? "auto";
    if (!["auto", "websocket", "sse"].includes(transport)) throw new TypeError(`unknown transport ${transport}`);
    this.#transport = transport === "sse" ? "sse" : "websocket";
    this.#fallback = transport === "auto";
  }

  /** The transport in use: "websocket" or "sse". */
  get transport() {
    return this.#transport;
  }

  /** "idle", "connecting", "connected", "disconnected" or "closed". */
  get state() {
    return this.#state;
  }

  /** Opens the connection; the client keeps it open until `close()`. */
  connect() {
    this.#closed = false;
    globalThis.addEventListener?.("online", this.#onOnline);
    if (this.#state === "idle" || this.#state === "disconnected" || this.#state === "closed") this.#open();
    return this;
  }

  /** Closes the connection for good. */
  close() {
    this.#closed = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    clearTimeout(this.#timer);
    clearTimeout(this.#stable);
    clearTimeout(this.#refresher);
    this.#stopPing();
    const socket = this.#socket;
    this.#socket = null;
    socket?.close(1000);
    this.#setState("closed", { code: 1000, reason: "closed by the client" });
  }

  /**
   * Subscribes to `channel`, now and after every reconnect, resuming from its position.
   * `token` (a subscription token from your backend, or a function of the channel returning
   * one, asked on every subscription) grants a channel the connection's own token does not;
   * over SSE such a channel is not subscribed (`error` with the code
   * `subscription_token_needs_websocket`).
   */
  subscribe(channel, { token } = {}) {
    if (this.#channels.has(channel)) return;
    if (token !== undefined) this.#channelTokens.set(channel, token);
    this.#channels.set(channel, "pending");
    if (this.#transport === "sse" && token !== undefined) {
      this.#signal("error", new NotifyError("subscription_token_needs_websocket", `${channel}: subscription tokens are presented over WebSocket only`, { channel }));
    } else if (this.#transport === "sse") this.#reopen();
    else this.#sendSubscribe(channel);
  }

  /**
   * Subscribes this browser to Web Push through `registration` (the page's
   * `ServiceWorkerRegistration`) and registers the subscription as a device of the signed-in
   * user (docs/PUSH.md), with this client's credentials. Without `vapidPublicKey`, the
   * tenant's key is read from the host. A subscription made with another key is replaced.
   * Resolves to the device as the host keeps it; rejects with a `NotifyError` when the host
   * refuses it.
   */
  async registerPush(registration, vapidPublicKey, { label } = {}) {
    const key = vapidPublicKey ?? (await this.#webPushKey());
    const manager = registration.pushManager;
    let subscription = await manager.getSubscription();
    if (subscription && !sameKey(subscription.options?.applicationServerKey, key)) {
      await subscription.unsubscribe();
      subscription = null;
    }
    subscription ??= await manager.subscribe({ userVisibleOnly: true, applicationServerKey: fromBase64Url(key) });
    const body = JSON.stringify({ platform: "web", subscription: subscription.toJSON(), label });
    return this.#pushRequest("POST", "/devices", body);
  }

  /**
   * Removes this browser's push device from the host and unsubscribes it. Resolves to
   * whether there was a subscription.
   */
  async unregisterPush(registration) {
    const subscription = await registration.pushManager.getSubscription();
    if (!subscription) return false;
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(subscription.endpoint)));
    const id = `web-${[...digest.slice(0, 12)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
    await this.#pushRequest("DELETE", `/devices/${id}`).catch((error) => {
      if (error.code !== "unknown_device") throw error;
    });
    await subscription.unsubscribe();
    return true;
  }

  /** The tenant's VAPID public key (`GET /v1/push/{tenant}/web`). */
  async #webPushKey() {
    const url = endpoint(this.#options.url, `/v1/push/${encodeURIComponent(this.#options.tenant)}/web`, {}, "http");
    const response = await this.#fetcher()(url);
    if (!response.ok) {
      const refusal = await refusalOf(response);
      throw new NotifyError(refusal.code, refusal.message, { status: refusal.status });
    }
    return (await response.json()).vapid_public_key;
  }

  /** A request to the tenant's push routes with this client's credentials. */
  async #pushRequest(method, path, body) {
    const { user_since, broadcast_since, ...auth } = await this.#query();
    const url = endpoint(this.#options.url, `/v1/push/${encodeURIComponent(this.#options.tenant)}${path}`, auth, "http");
    const headers = body === undefined ? {} : { "content-type": "application/json" };
    const response = await this.#fetcher()(url, { method, headers, body });
    if (!response.ok) {
      const refusal = await refusalOf(response);
      throw new NotifyError(refusal.code, refusal.message, { status: refusal.status });
    }
    return response.status === 204 ? undefined : response.json();
  }

  /** Leaves `channel` and forgets its position. */
  unsubscribe(channel) {
    this.#channelTokens.delete(channel);
    if (!this.#channels.delete(channel)) return;
    this.#bases.delete(channel);
    this.#rebasing.delete(channel);
    if (this.positions.delete(`channel:${channel}`)) this.#positionsChanged();
    if (this.#transport === "sse") this.#reopen();
    else this.#send({ type: "unsubscribe", channel });
  }

  /** Acks a user-stream event (or an {epoch, offset} position of the user stream). */
  ack(event) {
    if (this.#transport === "sse") return this.#ackOverHttp(event);
    return this.#send({ type: "ack", epoch: event.epoch, offset: event.offset });
  }

  /** Sends an application ping (the host answers `pong`). */
  ping() {
    return this.#send({ type: "ping" });
  }

  async #open() {
    clearTimeout(this.#timer);
    this.#setState("connecting");
    let query;
    try {
      query = await this.#query();
    } catch (error) {
      this.#signal("error", new NotifyError("token_unavailable", `the token getter failed: ${error.message}`, { cause: error }));
      return this.#retry({ code: 1006, reason: "the token getter failed" });
    }
    if (this.#closed) return;
    const Socket = this.#options.WebSocket ?? globalThis.WebSocket;
    if (this.#transport === "websocket" && !Socket) {
      if (!this.#fallback) return this.#stop(new NotifyError("no_websocket", "no WebSocket implementation: pass options.WebSocket"), {});
      this.#switchToSse("this runtime has no WebSocket");
    }
    if (this.#transport === "sse" && !this.#fetcher()) {
      return this.#stop(new NotifyError("no_fetch", "SSE needs fetch, and none is available (options.fetch)"), {});
    }
    if (this.#transport === "sse") this.#openSse(query);
    else this.#openWebSocket(query, Socket);
  }

  #openWebSocket(query, Socket) {
    const url = endpoint(this.#options.url, `/v1/ws/${encodeURIComponent(this.#options.tenant)}`, query);
    let socket;
    try {
      socket = new Socket(url);
    } catch (error) {
      // A URL the runtime will not open (a page on https asking for ws://): no retry helps.
      return this.#stop(new NotifyError("bad_url", `cannot open ${url}: ${error.message}`, { cause: error }), {});
    }
    this.#socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      this.#brokenUpgrades = 0;
    };
    socket.onmessage = (message) => this.#receive(message.data);
    const ended = async (code, reason) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      this.#stopPing();
      clearTimeout(this.#stable);
      clearTimeout(this.#refresher);
      if (opened) this.#closedBy(code, reason);
      else this.#failed(await this.#diagnose(url));
    };
    socket.onclose = (close) => ended(close.code, close.reason);
    // Some implementations report a refused upgrade only as an error, without a close.
    socket.onerror = () => {
      if (!opened) {
        socket.onerror = null;
        socket.onclose = null;
        ended(1006, "connection failed");
      }
    };
  }

  /** Reads the event stream of `GET /v1/sse/{tenant}`; the host ends it with a `close` frame. */
  #openSse(query) {
    const { user_since, broadcast_since, ...rest } = query;
    const channels = this.#channelList();
    const params = { ...rest, channels, last_event_id: cursorOf(this.positions) };
    const url = endpoint(this.#options.url, `/v1/sse/${encodeURIComponent(this.#options.tenant)}`, params, "http");
    const abort = new AbortController();
    const stream = { readyState: 1, channels, send: () => false, close: () => abort.abort() };
    this.#socket = stream;
    const mine = () => this.#socket === stream;
    (async () => {
      let response;
      try {
        response = await this.#fetcher()(url, { headers: { accept: "text/event-stream" }, signal: abort.signal, cache: "no-store" });
      } catch {
        if (mine()) this.#failed(undefined);
        return;
      }
      if (!response.ok) {
        const refusal = await refusalOf(response);
        if (mine()) this.#failed(refusal);
        return;
      }
      let close = { code: 1006, reason: "the stream ended" };
      try {
        for await (const data of sseMessages(response.body)) {
          if (!mine()) return;
          const frame = JSON.parse(data);
          if (frame.type === "close") close = frame;
          else this.#receive(data);
        }
      } catch {
        // A dropped connection ends the stream like a missing close frame.
      }
      if (!mine()) return;
      this.#socket = null;
      clearTimeout(this.#stable);
      clearTimeout(this.#refresher);
      this.#closedBy(close.code, close.reason);
    })();
  }

  /** The channels an SSE stream asks for: those a subscription token grants need WebSocket. */
  #channelList() {
    return [...this.#channels.keys()].filter((c) => !this.#channelTokens.has(c)).join(",") || undefined;
  }

  /**
   * Closes the SSE stream and opens a new one at once (its channels changed). A stream
   * still opening is checked when its `welcome` arrives.
   */
  #reopen() {
    if (this.#state !== "connected") return;
    const old = this.#socket;
    this.#socket = null;
    old?.close();
    this.#open();
  }

  #switchToSse(reason) {
    this.#transport = "sse";
    this.#fallback = false;
    this.#signal("transport", { transport: "sse", reason });
  }

  #fetcher() {
    return this.#options.fetch === undefined ? globalThis.fetch : this.#options.fetch;
  }

  /** Acks over HTTP, since an SSE stream has no way back to the host. */
  #ackOverHttp(event) {
    if (this.#state !== "connected") return false;
    (async () => {
      const query = await this.#query();
      const { user_since, broadcast_since, ...auth } = query;
      const url = endpoint(this.#options.url, `/v1/sse/${encodeURIComponent(this.#options.tenant)}/ack`, auth, "http");
      const body = JSON.stringify({ epoch: event.epoch, offset: event.offset });
      const response = await this.#fetcher()(url, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (!response.ok) {
        const refusal = await refusalOf(response);
        return this.#signal("error", new NotifyError(refusal.code, refusal.message, { status: refusal.status }));
      }
      this.#receive(JSON.stringify({ type: "acked", ...(await response.json()) }));
    })().catch((error) => this.#signal("error", error));
    return true;
  }

  async #query() {
    const query = { ...(this.#options.params ?? {}) };
    if (this.#options.user !== undefined) query.user = this.#options.user;
    const token = await this.#currentToken();
    if (token !== undefined) query.token = token;
    query.user_since = since(this.positions.get("user"));
    query.broadcast_since = since(this.positions.get("broadcast"));
    return query;
  }

  /** The token for the next attempt: the getter is asked when there is none or it failed. */
  async #currentToken() {
    const { token } = this.#options;
    if (typeof token !== "function") return token;
    if (this.#token === null) {
      this.#token = await token();
      this.#freshToken = true;
    }
    return this.#token;
  }

  #closedBy(code, reason) {
    const final = FINAL_CLOSES.get(code);
    if (final) {
      const why = this.#disconnectReason ?? reason;
      const error = new NotifyError(final, `the host closed the connection for good (${code} ${why})`, { closeCode: code, reason: why });
      return this.#stop(error, { code, reason: why });
    }
    if (code === CREDENTIALS_EXPIRED) this.#token = null;
    if (!this.#closed) this.#retry({ code, reason });
  }

  /**
   * The connection failed before it opened; `refusal` is the host's answer, if any. A
   * WebSocket hides the HTTP status, so the same URL is fetched without the upgrade first
   * (`#diagnose`): the host checks credentials before the upgrade and answers 400
   * `not_websocket` when they are fine, which means something between breaks WebSocket.
   */
  #failed(refusal) {
    const fresh = this.#freshToken;
    this.#freshToken = false;
    if (this.#closed) return;
    const status = refusal?.status;
    const broken = refusal?.code === "not_websocket" && this.#fallback;
    this.#brokenUpgrades = broken ? this.#brokenUpgrades + 1 : 0;
    if (broken && this.#brokenUpgrades >= 2) {
      this.#switchToSse("the WebSocket upgrade failed on the way to the host");
      this.#retryAfterMs = 0;
    } else if (broken) {
      this.#retryAfterMs = 0;
    } else if (status === 401 && typeof this.#options.token === "function" && !fresh) {
      // The token may have expired meanwhile: one more try with a fresh one.
      this.#token = null;
      this.#retryAfterMs = 0;
    } else if (FINAL_STATUSES.has(status)) {
      return this.#stop(new NotifyError(refusal.code, refusal.message, { status }), { code: 1006, reason: refusal.code });
    } else if (refusal?.retryAfterMs !== undefined) {
      this.#retryAfterMs = refusal.retryAfterMs;
    }
    this.#retry({ code: 1006, reason: refusal?.message ?? "connection failed", ...(refusal?.code && { error: refusal.code }) });
  }

  /** The host's refusal of `url` ({status, code, message, retryAfterMs}), if it answers. */
  async #diagnose(url) {
    const fetcher = this.#options.fetch === undefined ? globalThis.fetch : this.#options.fetch;
    if (!fetcher) return undefined;
    const http = url.replace(/^ws/, "http");
    try {
      return await refusalOf(await fetcher(http, { signal: AbortSignal.timeout(DIAGNOSE_TIMEOUT_MS) }));
    } catch {
      return undefined;
    }
  }

  #stop(error, details) {
    this.#closed = true;
    globalThis.removeEventListener?.("online", this.#onOnline);
    this.#setState("closed", details);
    this.#signal("error", error);
  }

  /** Reports the disconnection (`details`, with the attempt and the wait) and waits to reopen. */
  #retry(details) {
    const wait = this.#retryAfterMs ?? this.#backoff();
    this.#retryAfterMs = null;
    this.#attempt += 1;
    this.#setState("disconnected", { ...details, attempt: this.#attempt, retryInMs: Math.round(wait) });
    this.#timer = setTimeout(() => this.#open(), wait);
  }

  /** The browser is back online: a client waiting out its backoff tries at once. */
  #reconnectNow() {
    if (this.#closed || this.#state !== "disconnected") return;
    this.#attempt = 0;
    this.#open();
  }

  /**
   * "Equal jitter": a random wait between half the ceiling and the ceiling, which doubles
   * with every failed attempt up to `maxBackoffMs`. Clients that keep failing spread out and
   * slow down to minutes; none comes back sooner than half its ceiling.
   */
  #backoff() {
    const { initialBackoffMs, maxBackoffMs } = this.#options;
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** Math.min(this.#attempt, 30));
    return ceiling / 2 + (Math.random() * ceiling) / 2;
  }

  #receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    this.#signal("frame", frame);
    switch (frame.type) {
      case "welcome":
        return this.#welcome(frame);
      case "event": {
        const event = frame.channel !== undefined && this.#bases.has(frame.channel) ? this.#rebase(frame, data) : frame;
        if (!event) return undefined;
        // One at a time, in order: a handler may be async, and positions advance in order.
        this.#events = this.#events.then(() => this.#event(event));
        return this.#events;
      }
      case "subscribed":
        return this.#subscribed(frame);
      case "unsubscribed":
        if (this.#rebasing.has(frame.channel)) return undefined;
        // Also a backend's doing (server-side subscriptions): the client follows it.
        this.#channels.delete(frame.channel);
        this.#bases.delete(frame.channel);
        if (this.positions.delete(`channel:${frame.channel}`)) this.#positionsChanged();
        return this.#signal("unsubscribed", { channel: frame.channel, ...(frame.reason && { reason: frame.reason }) });
      case "refreshed":
        this.#scheduleRefresh(frame.expires_at);
        return this.#signal("refreshed", { expiresAt: frame.expires_at ?? null });
      case "acked":
        this.#cursor = { epoch: frame.epoch, acked: frame.offset };
        return this.#signal("unread", { epoch: frame.epoch, offset: frame.offset, acked: frame.offset, unread: frame.unread });
      case "disconnected":
        this.#disconnectReason = frame.reason ?? null;
        return undefined;
      case "reconnect":
        this.#retryAfterMs = frame.retry_after_ms ?? null;
        return undefined;
      case "error":
        return this.#signal("error", new NotifyError(frame.code, frame.message, { channel: frame.channel }));
      default:
        return undefined;
    }
  }

  #welcome(frame) {
    this.#freshToken = false;
    this.#connectionId = frame.connection_id;
    this.#scheduleRefresh(frame.expires_at);
    clearTimeout(this.#stable);
    this.#stable = setTimeout(() => (this.#attempt = 0), STABLE_MS);
    this.#setState("connected", { connectionId: frame.connection_id, user: frame.user, transport: this.#transport });
    const changed = Object.entries(frame.streams ?? {}).map(([name, stream]) => this.#resumed(name, stream));
    if (changed.some(Boolean)) this.#positionsChanged();
    const user = frame.streams?.user;
    if (user?.unread !== undefined) {
      this.#cursor = { epoch: user.epoch, acked: user.acked };
      this.#signal("unread", { epoch: user.epoch, offset: user.offset, acked: user.acked, unread: user.unread });
    }
    if (this.#transport === "websocket") {
      for (const channel of this.#channels.keys()) this.#sendSubscribe(channel);
      this.#startPing();
    } else if (this.#socket?.channels !== this.#channelList()) {
      this.#reopen();
    }
  }

  /**
   * With a token getter, asks it for a new token before `expiresAt` (Unix seconds): a minute
   * before, or at two thirds of the time left, whichever is later.
   */
  #scheduleRefresh(expiresAt) {
    clearTimeout(this.#refresher);
    if (typeof this.#options.token !== "function" || typeof expiresAt !== "number") return;
    const left = expiresAt * 1000 - Date.now();
    const wait = Math.min(Math.max(left - REFRESH_MARGIN_MS, (left * 2) / 3, 0), MAX_TIMER_MS);
    this.#refresher = setTimeout(() => this.#refresh(), wait);
  }

  /** Hands a fresh token to the open connection; the host answers `refreshed` (or an error). */
  async #refresh() {
    const socket = this.#socket;
    let token;
    try {
      token = await this.#options.token();
    } catch (error) {
      return this.#signal("error", new NotifyError("token_unavailable", `the token getter failed: ${error.message}`, { cause: error }));
    }
    if (this.#socket !== socket || this.#state !== "connected") return undefined;
    this.#token = token;
    if (this.#transport === "websocket") return this.#send({ type: "refresh", token });
    const path = `/v1/sse/${encodeURIComponent(this.#options.tenant)}/refresh`;
    const url = endpoint(this.#options.url, path, { ...(this.#options.params ?? {}), connection_id: this.#connectionId, token }, "http");
    try {
      const response = await this.#fetcher()(url, { method: "POST" });
      if (!response.ok) {
        const refusal = await refusalOf(response);
        this.#signal("error", new NotifyError(refusal.code, refusal.message, { status: refusal.status }));
      }
    } catch (error) {
      this.#signal("error", error);
    }
    return undefined;
  }

  #subscribed(frame) {
    this.#rebasing.delete(frame.channel);
    this.#channels.set(frame.channel, "subscribed");
    if (this.#resumed(`channel:${frame.channel}`, frame)) this.#positionsChanged();
    this.#signal("subscribed", { channel: frame.channel, recovered: frame.recovered !== false });
  }

  /**
   * Takes in what the host reported of a stream it joined ({epoch, offset, recovered});
   * returns whether the remembered position changed. A stream whose history started over
   * (another epoch) is remembered at offset 0 of the new epoch: the host replays that epoch
   * from its beginning, and the next connect resumes from there, recovered.
   */
  #resumed(stream, reported) {
    if (reported.recovered !== false) return this.positions.seed(stream, reported);
    this.#signal("recovered", { stream, recovered: false });
    const known = this.positions.get(stream);
    if (reported.epoch === undefined || known?.epoch === reported.epoch) return false;
    this.positions.set(stream, { epoch: reported.epoch, offset: 0 });
    return true;
  }

  #positionsChanged() {
    this.#signal("positions", this.positions.toJSON());
  }

  /** A user-stream event is one more unread until some device acks it. */
  #countUnread(frame) {
    if (!this.#cursor) return;
    const acked = this.#cursor.epoch === frame.epoch ? this.#cursor.acked : 0;
    this.#signal("unread", { epoch: frame.epoch, offset: frame.offset, acked, unread: Math.max(0, frame.offset - acked) });
  }

  /**
   * Delivers one event to the handlers. Its position is remembered (and `positions` fires)
   * before they run, so a handler that saves the positions saves this event as seen.
   */
  async #event(frame) {
    const stream = streamOf(frame);
    const positioned = frame.epoch !== undefined;
    if (positioned && !this.positions.isNew(stream, frame)) return;
    if (positioned) {
      this.positions.advance(stream, frame);
      this.#positionsChanged();
      if (stream === "user") this.#countUnread(frame);
    }
    let acked = false;
    const context = {
      stream,
      ack: () => {
        acked = true;
        return this.ack(frame);
      },
    };
    const results = await Promise.allSettled(this.emit("event", frame, context));
    for (const result of results) if (result.status === "rejected") this.#signal("error", result.reason);
    const handled = results.every((result) => result.status === "fulfilled");
    if (this.#options.autoAck && handled && stream === "user" && positioned && !acked) this.ack(frame);
  }

  #sendSubscribe(channel) {
    const position = this.positions.get(`channel:${channel}`);
    const frame = { type: "subscribe", channel };
    if (position) frame.since = position;
    if (this.#options.delta) {
      frame.delta = "fossil";
      // Whole events first: the host sends a new subscription no delta.
      this.#bases.set(channel, null);
    }
    const token = this.#channelTokens.get(channel);
    if (token === undefined) return this.#send(frame);
    // A getter is asked on every (re)subscription: the token is checked when presented.
    const socket = this.#socket;
    Promise.resolve(typeof token === "function" ? token(channel) : token)
      .then((value) => this.#socket === socket && this.#send({ ...frame, token: value }))
      .catch((error) => this.#signal("error", new NotifyError("token_unavailable", `the subscription token getter failed: ${error.message}`, { cause: error, channel })));
    return true;
  }

  /**
   * Takes in an event of a channel subscribed with delta updates (`text` as received): a
   * whole event becomes the channel's base; a delta is applied to the base, giving the
   * whole event. Returns the whole event, or null when a delta cannot be applied: the
   * channel is then subscribed again from its position, so the host replays the event
   * whole (without history it is lost, and `recovered` says so).
   */
  #rebase(frame, text) {
    const channel = frame.channel;
    if (frame.delta === undefined) {
      const at = text.indexOf(',"data":');
      this.#bases.set(channel, { id: frame.id, data: this.#encoder.encode(text.slice(at + 8, -1)) });
      return frame;
    }
    if (this.#rebasing.has(channel)) return null;
    const { delta, base: baseId, ...fields } = frame;
    const base = this.#bases.get(channel);
    try {
      if (base?.id !== baseId) throw new Error("the delta's base is not the last event");
      const data = applyFossilDelta(base.data, fromBase64(delta));
      const event = { ...fields, data: JSON.parse(this.#decoder.decode(data)) };
      this.#bases.set(channel, { id: frame.id, data });
      return event;
    } catch {
      this.#resubscribe(channel);
      return null;
    }
  }

  #resubscribe(channel) {
    this.#rebasing.add(channel);
    if (!this.positions.get(`channel:${channel}`)) this.#signal("recovered", { stream: `channel:${channel}`, recovered: false });
    this.#send({ type: "unsubscribe", channel });
    this.#sendSubscribe(channel);
  }

  #send(frame) {
    const socket = this.#socket;
    if (!socket || socket.readyState !== 1 || this.#state !== "connected") return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  #startPing() {
    this.#stopPing();
    if (this.#options.pingIntervalMs > 0) this.#pinger = setInterval(() => this.ping(), this.#options.pingIntervalMs);
  }

  #stopPing() {
    clearInterval(this.#pinger);
    this.#pinger = null;
  }

  #setState(state, details = {}) {
    this.#state = state;
    this.#signal("state", { state, ...details });
  }

  /** Emits `type`; a handler that fails is reported as an `error` (except by `error` itself). */
  #signal(type, ...args) {
    for (const result of this.emit(type, ...args)) {
      if (result instanceof Promise && type !== "error") result.catch((error) => this.#signal("error", error));
    }
  }
}
