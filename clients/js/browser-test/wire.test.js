// Fewer bytes on the wire in headless Chromium, the app's page (browser-test/app/index.html,
// with the client) on another origin than the host as in production. Compression: the
// page's WebSocket offers permessage-deflate, the host accepts it (the handshake answer
// read through the DevTools protocol), and every event arrives intact, above and below the
// tenant's threshold, non-ASCII text included. Delta updates: a channel's versions travel
// as deltas (the frames read through the DevTools protocol) and reach the page rebuilt.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { chromium } from "playwright-core";

import { Host, eventually, freePort } from "../test/harness.js";
import { serveApp } from "./origins.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const TEXT = "Ihre Bestellung wurde versandt — 注文は発送されました — 🚚 ".repeat(40);

let app, host, browser;

before(async () => {
  app = await serveApp();
  const port = await freePort();
  host = await Host.start(`[server]
listen = "127.0.0.1:${port}"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
allowed_origins = ["${app.origin}"]
compression = { enabled = true, min_bytes = 400 }
`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await host?.dispose();
  await app?.close();
});

/**
 * A fresh page of the app with the client's `options`, its WebSocket traffic reported
 * through the DevTools protocol: `listen(cdp)` subscribes before the page loads.
 */
async function open(t, options, listen) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("Network.enable");
  listen(cdp);
  await page.goto(`${app.origin}/?options=${encodeURIComponent(JSON.stringify({ url: host.url, tenant: "demo", ...options }))}`);
  return page;
}

test("a page's WebSocket negotiates permessage-deflate and gets every event intact", async (t) => {
  const handshakes = [];
  const page = await open(t, { user: "ann" }, (cdp) =>
    cdp.on("Network.webSocketHandshakeResponseReceived", (e) => handshakes.push(e.response)),
  );
  await eventually(() => page.evaluate(() => window.client.state === "connected"));
  await page.evaluate(() => {
    window.got = [];
    window.client.on("event", (event) => window.got.push(event));
  });

  const response = await eventually(() => handshakes.find((r) => r.status === 101));
  const headers = Object.fromEntries(Object.entries(response.headers).map(([k, v]) => [k.toLowerCase(), v]));
  assert.match(headers["sec-websocket-extensions"], /^permessage-deflate; server_no_context_takeover; client_no_context_takeover/);

  const sizes = [{ n: 1 }, { text: TEXT }, { text: TEXT.repeat(30), n: 3 }, { text: "ü" }];
  for (const data of sizes) await host.publish("demo-key", { users: ["ann"], event: "story", data });
  const events = await eventually(async () => {
    const got = await page.evaluate(() => window.got);
    return got.length === sizes.length && got;
  });
  assert.deepEqual(events.map((e) => e.data), sizes);

  // What the page sends goes through the same socket (Chromium compresses it).
  await page.evaluate(() => window.client.subscribe("news"));
  await eventually(() => page.evaluate(() => window.client.positions.get("channel:news")));
  await host.publish("demo-key", { channels: ["news"], event: "headline", data: { text: TEXT } });
  await eventually(() => page.evaluate((text) => window.got.some((e) => e.event === "headline" && e.data.text === text), TEXT));
});

test("a page gets a channel's versions as deltas on the wire and whole in its handlers", async (t) => {
  const frames = [];
  const page = await open(t, { user: "bea", channels: ["match"] }, (cdp) =>
    cdp.on("Network.webSocketFrameReceived", (e) => frames.push(e.response.payloadData)),
  );
  await page.evaluate(() => {
    window.got = [];
    window.client.on("event", (event) => window.got.push(event));
  });
  await eventually(() => page.evaluate(() => window.client.positions.get("channel:match")));

  const players = Array.from({ length: 24 }, (_, i) => ({ name: `Spieler ${i} — 選手 🚚`, goals: i % 4 }));
  const versions = [0, 1, 2, 3].map((score) => ({ score, players }));
  for (const data of versions) await host.publish("demo-key", { channels: ["match"], event: "score", data, delta: true });
  const events = await eventually(async () => {
    const got = await page.evaluate(() => window.got);
    return got.length === versions.length && got;
  });
  assert.deepEqual(events.map((e) => e.data), versions);
  assert.ok(events.every((e) => e.delta === undefined));
  const onWire = frames.filter((f) => f.startsWith('{"type":"event"')).map((f) => JSON.parse(f));
  assert.deepEqual(onWire.map((f) => f.delta !== undefined), [false, true, true, true]);
});
