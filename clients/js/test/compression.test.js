// WebSocket compression (permessage-deflate) with a client nobody here wrote: Node's `ws`
// package, with its own compression of what it sends on and off, against one host and
// across two hosts sharing Redis; a client without compression on the same broadcast.

import { test } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";

import { Host, Redis, eventually, freePort } from "./harness.js";

const TENANT = `[tenants.demo]\npublish_key = "demo-key"\nauth = { mode = "insecure" }\n`;
const TEXT = "Ihre Bestellung wurde versandt — 注文は発送されました — ".repeat(30);

/** A `ws` client of `user` recording what it receives; `deflate`: its perMessageDeflate option. */
async function open(host, user, deflate) {
  const url = `ws://${host.addr}/v1/ws/demo?user=${user}`;
  const socket = new WebSocket(url, { perMessageDeflate: deflate });
  const frames = [];
  socket.on("message", (data) => frames.push(JSON.parse(data.toString("utf8"))));
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  await eventually(() => frames.some((f) => f.type === "welcome"));
  return { socket, frames };
}

/** Subscribes to `channel` (a message the client compresses when its threshold is 0). */
async function subscribe(client, channel) {
  client.socket.send(JSON.stringify({ type: "subscribe", channel }));
  await eventually(() => client.frames.some((f) => f.type === "subscribed" && f.channel === channel));
}

const CLIENT_COMPRESSION = [
  ["client compression on", { threshold: 0 }],
  ["client compression off", { threshold: 1 << 30 }],
];

for (const [name, deflate] of CLIENT_COMPRESSION) {
  test(`ws with ${name}: events intact on one host, uncompressed to a client without it`, async (t) => {
    const port = await freePort();
    const host = await Host.start(`[server]\nlisten = "127.0.0.1:${port}"\n${TENANT}`);
    t.after(() => host.dispose());
    const compressed = await open(host, "ann", deflate);
    const plain = await open(host, "bob", false);
    t.after(() => compressed.socket.close());
    t.after(() => plain.socket.close());
    assert.match(compressed.socket.extensions, /^permessage-deflate/);
    assert.equal(plain.socket.extensions, "");
    await subscribe(compressed, "news");
    await subscribe(plain, "news");

    const sizes = [{ text: "short" }, { text: TEXT }, { text: TEXT.repeat(20) }];
    for (const data of sizes) await host.publish("demo-key", { channels: ["news"], event: "story", data });
    for (const client of [compressed, plain]) {
      await eventually(() => client.frames.filter((f) => f.type === "event").length === sizes.length);
      assert.deepEqual(client.frames.filter((f) => f.type === "event").map((f) => f.data), sizes);
    }
  });

  test(`ws with ${name}: events published on one host arrive intact through another over Redis`, async (t) => {
    const redis = await Redis.start();
    t.after(() => redis.dispose());
    const broker = `[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:${redis.port}"\n`;
    const [a, b] = await Promise.all(
      [await freePort(), await freePort()].map((port) => Host.start(`[server]\nlisten = "127.0.0.1:${port}"\n${broker}${TENANT}`)),
    );
    t.after(() => a.dispose());
    t.after(() => b.dispose());
    const client = await open(b, "ann", deflate);
    t.after(() => client.socket.close());
    await subscribe(client, "news");

    // Published on A until B carries the channel, then one of each size.
    await eventually(async () => {
      await a.publish("demo-key", { channels: ["news"], event: "probe" });
      return client.frames.some((f) => f.event === "probe");
    });
    const sizes = [{ n: 1 }, { text: TEXT }];
    for (const data of sizes) await a.publish("demo-key", { users: ["ann"], channels: ["news"], event: "story", data });
    await eventually(() => client.frames.filter((f) => f.event === "story").length === 2 * sizes.length);
    const got = client.frames.filter((f) => f.event === "story");
    assert.deepEqual(got.filter((f) => f.user).map((f) => f.data), sizes, "the user stream");
    assert.deepEqual(got.filter((f) => f.channel).map((f) => f.data), sizes, "the channel");
  });
}
