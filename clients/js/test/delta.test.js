// Delta updates: the client asks for them on every channel, rebuilds each delta before its
// handlers see the event, and when a delta cannot be applied (a frame lost on the way)
// subscribes again from its position so the host replays the event whole. Its Fossil
// applier agrees with the `fossil-delta` package, which nobody here wrote.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createDelta, applyDelta } from "fossil-delta";

import { NotifyClient, applyFossilDelta } from "../src/notify.js";
import { Host, eventually, freePort, record } from "./harness.js";

const TENANT = `[tenants.demo]\npublish_key = "demo-key"\nauth = { mode = "insecure" }\n`;
const encoder = new TextEncoder();

/** A 2 KB document whose `score` changes from one version to the next. */
function document(score) {
  const players = Array.from({ length: 24 }, (_, i) => ({ name: `Spieler ${i} — 選手`, goals: i % 4 }));
  return { match: "Rot-Weiß v Blau", score, players };
}

function version(score, delta = true) {
  return { channels: ["match"], event: "score", data: document(score), delta };
}

/** A WebSocket that loses the `n`th delta frame its connections receive. */
function losingDelta(n) {
  let deltas = 0;
  return class extends WebSocket {
    set onmessage(handler) {
      super.onmessage = (message) => {
        if (message.data.includes('"delta":"') && ++deltas === n) return;
        handler(message);
      };
    }

    get onmessage() {
      return super.onmessage;
    }
  };
}

async function start(t, tenant = TENANT) {
  const host = await Host.start(`[server]\nlisten = "127.0.0.1:${await freePort()}"\n${tenant}`);
  t.after(() => host.dispose());
  return host;
}

/** A client of `user` on the `match` channel, recording what it emits and the raw frames. */
async function subscribed(t, host, options = {}) {
  const client = new NotifyClient({ url: host.url, tenant: "demo", user: "ann", channels: ["match"], ...options });
  const seen = record(client);
  seen.frames = [];
  seen.subscribed = 0;
  seen.unsubscribed = 0;
  client.on("frame", (frame) => seen.frames.push(frame));
  client.on("subscribed", () => (seen.subscribed += 1));
  client.on("unsubscribed", () => (seen.unsubscribed += 1));
  client.connect();
  t.after(() => client.close());
  await eventually(() => seen.subscribed === 1);
  return { client, seen };
}

test("the Fossil applier agrees with the fossil-delta package and refuses a damaged delta", () => {
  let seed = 7;
  const random = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 200; round += 1) {
    const before = encoder.encode(JSON.stringify({ ...document(round), note: "é".repeat(random(40)) }));
    const after = encoder.encode(JSON.stringify({ ...document(round + random(3)), note: "☕".repeat(random(40)) }));
    const delta = createDelta(before, after);
    assert.deepEqual(applyFossilDelta(before, delta), after);
  }
  const [before, after] = [encoder.encode(JSON.stringify(document(1))), encoder.encode(JSON.stringify(document(2)))];
  const delta = createDelta(before, after);
  const damaged = delta.slice();
  damaged[damaged.length - 10] ^= 1;
  assert.throws(() => applyFossilDelta(before, damaged));
  assert.throws(() => applyFossilDelta(before.slice(1), delta), "another base");
  assert.throws(() => applyFossilDelta(before, delta.slice(0, -1)), "cut short");
});

test("events published with delta arrive rebuilt, and travel as deltas the fossil-delta package applies too", async (t) => {
  const host = await start(t);
  const { seen } = await subscribed(t, host);
  const plain = await subscribed(t, host, { user: "bob", delta: false });
  for (let score = 0; score < 5; score += 1) await host.publish("demo-key", version(score));
  await eventually(() => seen.events.length === 5 && plain.seen.events.length === 5);
  assert.deepEqual(seen.events.map((e) => e.data), [0, 1, 2, 3, 4].map(document));
  assert.deepEqual(plain.seen.events.map((e) => e.data), [0, 1, 2, 3, 4].map(document));
  assert.ok(seen.events.every((e) => e.delta === undefined && e.base === undefined), "handlers see whole events");
  const deltas = seen.frames.filter((f) => f.type === "event" && f.delta !== undefined);
  assert.equal(deltas.length, 4, "all but the first came as deltas");
  assert.equal(plain.seen.frames.filter((f) => f.delta !== undefined).length, 0, "not to a client that did not ask");
  // The host's first delta, applied by the other implementation to the first event's data.
  const first = seen.frames.find((f) => f.type === "event" && f.delta === undefined);
  const base = encoder.encode(JSON.stringify(first.data));
  const delta = Uint8Array.from(atob(deltas[0].delta), (c) => c.charCodeAt(0));
  assert.deepEqual(JSON.parse(new TextDecoder().decode(new Uint8Array(applyDelta(base, delta)))), document(1));
  assert.equal(seen.errors.length, 0);
});

test("a lost delta: the client subscribes again from its position and the host replays what it missed whole", async (t) => {
  const host = await start(t);
  const { seen } = await subscribed(t, host, { WebSocket: losingDelta(2) });
  for (let score = 0; score < 6; score += 1) await host.publish("demo-key", version(score));
  await eventually(() => seen.events.length === 6);
  assert.deepEqual(seen.events.map((e) => e.data.score), [0, 1, 2, 3, 4, 5], "each once, in order");
  assert.deepEqual(seen.events.map((e) => e.data), [0, 1, 2, 3, 4, 5].map(document));
  assert.equal(seen.subscribed, 2, "subscribed again once");
  assert.deepEqual(seen.recovered, []);
  assert.equal(seen.frames.filter((f) => f.type === "unsubscribed").length, 1, "the host's reply to the client's unsubscribe");
  assert.equal(seen.unsubscribed, 0, "which does not leave the channel");
  await host.publish("demo-key", version(6));
  await host.publish("demo-key", version(7));
  await eventually(() => seen.events.length === 8);
  assert.notEqual(seen.frames.findLast((f) => f.type === "event").delta, undefined, "deltas again");
});

test("without history a lost delta is reported as not recovered, and the next event arrives whole", async (t) => {
  const host = await start(t, `${TENANT}history = { size = 0 }\n`);
  const { seen } = await subscribed(t, host, { WebSocket: losingDelta(2) });
  for (let score = 0; score < 4; score += 1) await host.publish("demo-key", version(score));
  await eventually(() => seen.recovered.length === 1 && seen.subscribed === 2);
  assert.deepEqual(seen.recovered, [{ stream: "channel:match", recovered: false }]);
  await host.publish("demo-key", version(4));
  await eventually(() => seen.events.length === 3);
  assert.deepEqual(seen.events.map((e) => e.data), [0, 1, 4].map(document), "2 was lost, 3 was a delta from it");
});
