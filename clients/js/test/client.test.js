// The SDK against real hosts: delivery, channels, acks, refusals, token refresh, and a
// host killed and restarted mid-stream.

import { test } from "node:test";
import assert from "node:assert/strict";

import { NotifyClient } from "../src/notify.js";
import { Host, Redis, eventually, freePort, hs256, record } from "./harness.js";

const SECRET = "sdk-test-secret-0123456789";

function tenants() {
  return `
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
history = { size = 1000, ttl = "10m", acks = true }
[tenants.secure]
publish_key = "secure-key"
auth = { mode = "jwt", hs256_secret = "${SECRET}" }
`;
}

async function singleHost(extra = "") {
  const port = await freePort();
  return Host.start(`[server]\nlisten = "127.0.0.1:${port}"\n${extra}\n${tenants()}`);
}

function client(host, options) {
  return new NotifyClient({ url: host.url, tenant: "demo", initialBackoffMs: 50, maxBackoffMs: 500, ...options });
}

/** A WebSocket whose upgrade always fails, as behind a proxy that breaks WebSocket. */
class BrokenWebSocket {
  constructor() {
    setTimeout(() => this.onerror?.(new Event("error")), 0);
  }
  close() {}
}

/** How a test connects: WebSocket, or SSE after the WebSocket upgrade failed. */
const TRANSPORTS = [
  ["websocket", {}],
  ["sse (fallback)", { WebSocket: BrokenWebSocket }],
];

for (const [transport, options] of TRANSPORTS) test(`events, channels and acks arrive over ${transport}`, async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  const alice = client(host, { user: "alice", channels: ["news"], autoAck: true, ...options });
  const seen = record(alice);
  t.after(() => alice.close());
  alice.connect();
  await eventually(() => seen.states.some((s) => s.state === "connected"));
  await eventually(() => alice.positions.get("channel:news"));

  await host.publish("demo-key", { users: ["alice"], event: "direct", data: { n: 1 } });
  await host.publish("demo-key", { channels: ["news"], event: "headline", data: "hi" });
  await host.publish("demo-key", { channels: ["sports"], event: "elsewhere" });
  await host.publish("demo-key", { broadcast: true, event: "everyone" });
  await eventually(() => seen.events.length >= 3);
  assert.deepEqual(seen.events.map((e) => e.event), ["direct", "headline", "everyone"]);

  // autoAck acked the user event: the host's cursor is there.
  await eventually(() => seen.unread.some((u) => u.unread === 0 && u.acked === seen.events[0].offset));

  alice.unsubscribe("news");
  await eventually(() => alice.positions.get("channel:news") === undefined);
  alice.subscribe("sports");
  await eventually(() => alice.positions.get("channel:sports"));
  await host.publish("demo-key", { channels: ["sports"], event: "goal" });
  await eventually(() => seen.events.some((e) => e.event === "goal"));
  assert.deepEqual(seen.errors, []);
  assert.equal(alice.transport, transport === "websocket" ? "websocket" : "sse");
});

test("a resumed connection gets what it missed, once", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  const first = client(host, { user: "bob", channels: ["news"] });
  const seen = record(first);
  first.connect();
  await eventually(() => first.positions.get("channel:news"));
  await host.publish("demo-key", { users: ["bob"], event: "one" });
  await eventually(() => seen.events.length === 1);
  first.close();

  // Published while bob is away; a new client starts from the saved positions.
  await host.publish("demo-key", { users: ["bob"], event: "two" });
  await host.publish("demo-key", { channels: ["news"], event: "three" });
  const again = client(host, { user: "bob", channels: ["news"], positions: first.positions.toJSON() });
  const later = record(again);
  t.after(() => again.close());
  again.connect();
  await eventually(() => later.events.length >= 2);
  await host.publish("demo-key", { users: ["bob"], event: "four" });
  await eventually(() => later.events.some((e) => e.event === "four"));
  // Without acks, the user stream replays after the position; the first event is not repeated.
  assert.deepEqual(later.events.map((e) => e.event).sort(), ["four", "three", "two"]);
  assert.deepEqual(later.recovered, []);
});

test("refusals that cannot succeed are errors, not retries", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  const unknown = new NotifyClient({ url: host.url, tenant: "nope", user: "x", initialBackoffMs: 20 });
  const seen = record(unknown);
  unknown.connect();
  await eventually(() => unknown.state === "closed");
  assert.equal(seen.errors[0].code, "unknown_tenant");
  assert.equal(seen.errors[0].status, 404);

  let asked = 0;
  const badToken = new NotifyClient({
    url: host.url,
    tenant: "secure",
    initialBackoffMs: 20,
    token: () => {
      asked += 1;
      return hs256("not-the-secret-at-all", "carol", 60);
    },
  });
  const refused = record(badToken);
  badToken.connect();
  await eventually(() => badToken.state === "closed");
  assert.equal(refused.errors[0].status, 401);
  assert.equal(asked, 1, "the token was fresh: no second try");
});

test("an expired token that could not be refreshed is replaced through the getter on reconnect", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  let asked = 0;
  const carol = new NotifyClient({
    url: host.url,
    tenant: "secure",
    initialBackoffMs: 20,
    token: async () => {
      asked += 1;
      // The second token, for the refresh before the first expires, is one the host refuses.
      return hs256(asked === 2 ? "not-the-tenant-secret-0123456789" : SECRET, "carol", 2);
    },
  });
  const seen = record(carol);
  t.after(() => carol.close());
  carol.connect();
  await eventually(() => seen.errors.some((e) => e.code === "refresh_refused"));
  // The host closes with 4003 when the token expires; the client comes back with a new one.
  await eventually(() => seen.states.some((s) => s.code === 4003));
  await eventually(() => asked >= 3 && carol.state === "connected");
  await host.publish("secure-key", { users: ["carol"], event: "still-here" });
  await eventually(() => seen.events.some((e) => e.event === "still-here"));
});

for (const [transport, options] of TRANSPORTS) test(`a host killed and restarted mid-stream costs no event and duplicates none (${transport})`, async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.dispose());
  const broker = `[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:${redis.port}"\ntimeout = "2s"\nmax_backoff = "200ms"\n`;
  const [portA, portB] = [await freePort(), await freePort()];
  const a = await Host.start(`[server]\nlisten = "127.0.0.1:${portA}"\n${broker}${tenants()}`);
  const b = await Host.start(`[server]\nlisten = "127.0.0.1:${portB}"\n${broker}${tenants()}`);
  t.after(() => a.dispose());
  t.after(() => b.dispose());

  const dave = client(a, { user: "dave", channels: ["feed"], ...options });
  const seen = record(dave);
  t.after(() => dave.close());
  dave.connect();
  await eventually(() => dave.positions.get("channel:feed"));

  // Published through B throughout, while A (dave's node) is killed and started again.
  let published = 0;
  const publish = async () => {
    published += 1;
    await b.publish("demo-key", { users: ["dave"], channels: ["feed"], event: "tick", data: published });
  };
  for (let i = 0; i < 20; i++) await publish();
  await a.stop("SIGKILL");
  for (let i = 0; i < 20; i++) await publish();
  await a.run();
  for (let i = 0; i < 20; i++) await publish();

  const perStream = (stream) => seen.events.filter((e) => (stream === "user" ? e.user : e.channel)).map((e) => e.data);
  const all = Array.from({ length: published }, (_, i) => i + 1);
  await eventually(() => perStream("user").length >= published && perStream("channel").length >= published);
  assert.deepEqual(perStream("user"), all, "every event of the user stream, once, in order");
  assert.deepEqual(perStream("channel"), all, "every event of the channel, once, in order");
  assert.ok(seen.states.filter((s) => s.state === "connected").length >= 2, "it reconnected");
  assert.equal(dave.transport, transport === "websocket" ? "websocket" : "sse");
});

/** A WebSocket whose first `failures` upgrades fail, then the runtime's own. */
function failingFirst(failures) {
  return class {
    constructor(url) {
      return failures-- > 0 ? new BrokenWebSocket() : new WebSocket(url);
    }
  };
}

test("one failed upgrade while the host answers is retried over WebSocket; two in a row switch to SSE", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  // One failure: what a host restarted between the upgrade and the diagnosis looks like.
  const once = client(host, { user: "gina", WebSocket: failingFirst(1) });
  const seenOnce = record(once);
  t.after(() => once.close());
  once.connect();
  await eventually(() => once.state === "connected");
  assert.equal(once.transport, "websocket");
  assert.deepEqual(seenOnce.errors, []);

  const twice = client(host, { user: "hana", WebSocket: failingFirst(2) });
  const seenTwice = record(twice);
  t.after(() => twice.close());
  twice.connect();
  await eventually(() => twice.state === "connected");
  assert.equal(twice.transport, "sse");
  await host.publish("demo-key", { users: ["hana"], event: "over-sse" });
  await eventually(() => seenTwice.events.some((e) => e.event === "over-sse"));
});

test("a user disconnected by the backend stays disconnected", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  const erin = client(host, { user: "erin" });
  const seen = record(erin);
  erin.connect();
  await eventually(() => erin.state === "connected");
  const response = await fetch(`${host.url}/v1/users/erin/disconnect`, {
    method: "POST",
    headers: { authorization: "Bearer demo-key" },
    body: JSON.stringify({ reason: "signed out" }),
  });
  assert.equal(response.status, 202);
  await eventually(() => erin.state === "closed");
  assert.equal(seen.errors[0].code, "disconnected");
  assert.equal(seen.errors[0].reason, "signed out");
});

test("channels a backend subscribes the user to are kept across reconnects", async (t) => {
  const host = await singleHost();
  t.after(() => host.dispose());
  const fay = client(host, { user: "fay" });
  const seen = record(fay);
  t.after(() => fay.close());
  fay.connect();
  await eventually(() => fay.state === "connected");
  const response = await fetch(`${host.url}/v1/users/fay/subscriptions`, {
    method: "POST",
    headers: { authorization: "Bearer demo-key" },
    body: JSON.stringify({ channels: ["promo"] }),
  });
  assert.equal(response.status, 202);
  await eventually(() => fay.positions.get("channel:promo"));
  await host.publish("demo-key", { channels: ["promo"], event: "sale" });
  await eventually(() => seen.events.some((e) => e.event === "sale"));

  // A new host process: the client comes back and subscribes the channel again by itself.
  await host.restart();
  await eventually(() => seen.states.filter((s) => s.state === "connected").length >= 2);
  await eventually(async () => {
    await host.publish("demo-key", { channels: ["promo"], event: "after-restart" });
    return seen.events.some((e) => e.event === "after-restart");
  });
  assert.deepEqual(seen.errors, []);
});

test("SSE without fetch is an error, not a retry loop", async () => {
  const lonely = new NotifyClient({ url: "http://127.0.0.1:9", tenant: "demo", user: "x", transport: "sse", fetch: null });
  const seen = record(lonely);
  lonely.connect();
  await eventually(() => lonely.state === "closed");
  assert.equal(seen.errors[0].code, "no_fetch");
});

test("a client that keeps failing slows down, each wait at least half its doubling ceiling", async (t) => {
  const port = await freePort(); // nothing listens there
  const failing = new NotifyClient({ url: `http://127.0.0.1:${port}`, tenant: "demo", user: "x", initialBackoffMs: 20, maxBackoffMs: 320 });
  t.after(() => failing.close());
  const seen = record(failing);
  failing.connect();
  const waits = await eventually(() => {
    const down = seen.states.filter((s) => s.state === "disconnected");
    return down.length >= 7 && down;
  });
  for (const [i, { attempt, retryInMs }] of waits.slice(0, 7).entries()) {
    const ceiling = Math.min(320, 20 * 2 ** i);
    assert.equal(attempt, i + 1);
    assert.ok(retryInMs >= ceiling / 2 - 1 && retryInMs <= ceiling + 1, `attempt ${attempt}: waits ${retryInMs} ms, ceiling ${ceiling}`);
  }
  assert.deepEqual(seen.errors, [], "an unreachable host is retried, never given up");
});
