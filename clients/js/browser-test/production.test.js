// The client in production shape, in headless Chromium: the app's page on one origin, the
// notify host on another, as app.example.com and rt.example.com are. The page
// (browser-test/app/index.html) is written from docs/CLIENTS.md alone. Each test failed
// before the change it covers.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";

import { chromium } from "playwright-core";

import { Host, eventually, freePort } from "../test/harness.js";
import { brokenProxy, serveApp } from "./origins.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

function config(port, origin) {
  return `[server]
listen = "127.0.0.1:${port}"
[tenants.app]
publish_key = "app-publish-key"
auth = { mode = "insecure" }
allowed_origins = ["${origin}"]
history = { size = 100, ttl = "10m", acks = true }
[tenants.plain]
publish_key = "plain-publish-key"
auth = { mode = "insecure" }
allowed_origins = ["${origin}"]
history = { size = 100, ttl = "10m" }
[tenants.strict]
publish_key = "strict-publish-key"
auth = { mode = "insecure" }
allowed_origins = ["https://app.example.com"]
`;
}

let app, host, browser;

before(async () => {
  app = await serveApp();
  host = await Host.start(config(await freePort(), app.origin));
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await host?.dispose();
  await app?.close();
});

/** A fresh page (its own storage) of the app, connecting with `options`. */
async function open(t, options, context) {
  context ??= await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  t.after(async () => {
    assert.deepEqual(problems, [], "no script errors on the page");
    await context.close();
  });
  await page.goto(`${app.origin}/?options=${encodeURIComponent(JSON.stringify(options))}`);
  return page;
}

const seen = (page) => page.evaluate(() => window.seen);
const shown = (page, key) => page.evaluate((key) => JSON.parse(localStorage.getItem(`${key}:shown`) ?? "[]"), key);

/** Waits until `check(window.seen)` holds on the page, and returns `seen`. */
async function until(page, check) {
  return eventually(async () => {
    const s = await seen(page);
    return check(s) && s;
  });
}

const connections = (s) => s.states.filter((c) => c.state === "connected").length;

test("a page on another origin learns why it cannot connect, once, and stops", async (t) => {
  const cases = [
    [{ tenant: "strict", user: "ann" }, "forbidden_origin", 403],
    [{ tenant: "strict", user: "ann", transport: "sse" }, "forbidden_origin", 403],
    [{ tenant: "nobody", user: "ann" }, "unknown_tenant", 404],
    [{ tenant: "nobody", user: "ann", transport: "sse" }, "unknown_tenant", 404],
  ];
  for (const [options, code, status] of cases) {
    const page = await open(t, { url: host.url, ...options });
    const s = await until(page, (s) => s.errors.length > 0);
    assert.deepEqual(s.errors.map((e) => [e.code, e.status]), [[code, status]], JSON.stringify(options));
    assert.deepEqual(s.states.map((c) => c.state), ["connecting", "closed"], "one attempt, then it stops");
  }
});

test("behind a proxy that breaks WebSocket, a page on another origin falls back to SSE", async (t) => {
  const proxy = await brokenProxy(host.addr);
  t.after(() => proxy.close());
  const page = await open(t, { url: proxy.url, tenant: "app", user: "bob" });
  const s = await until(page, (s) => connections(s) === 1);
  assert.deepEqual(s.transports, ["sse"]);
  assert.equal(s.states.at(-1).transport, "sse");
  await host.publish("app-publish-key", { users: ["bob"], event: "hello", data: { via: "sse" } });
  await page.waitForSelector("#events li");
  assert.equal(await page.textContent("#events li"), 'user hello {"via":"sse"}');
});

test("a page reloaded mid-stream shows every event once", async (t) => {
  const page = await open(t, { url: host.url, tenant: "app", user: "cat", channels: ["news"] });
  await until(page, (s) => connections(s) === 1);
  const total = 40;
  const published = (async () => {
    for (let i = 0; i < total; i++) {
      const to = i % 2 ? { channels: ["news"] } : { users: ["cat"] };
      await host.publish("app-publish-key", { ...to, event: "n", data: i });
      await new Promise((resolve) => setTimeout(resolve, 15));
    }
  })();
  for (const at of [8, 24]) {
    await eventually(async () => (await shown(page, "notify:app:cat")).length >= at);
    await page.reload();
  }
  await published;
  const all = await eventually(async () => {
    const list = await shown(page, "notify:app:cat");
    return list.length >= total && list;
  });
  assert.equal(new Set(all).size, all.length, `nothing shown twice: ${all}`);
  assert.equal(all.length, total, "nothing missed");
});

test("after a host restart the client takes the new history: later connects are recovered", async (t) => {
  const page = await open(t, { url: host.url, tenant: "app", user: "dan", channels: ["news"] });
  await until(page, (s) => s.states.some((c) => c.state === "connected") && s.log.includes("state:connected"));
  await host.publish("app-publish-key", { users: ["dan"], event: "one" });
  await host.publish("app-publish-key", { channels: ["news"], event: "two" });
  await host.publish("app-publish-key", { broadcast: true, event: "three" });
  await eventually(async () => (await shown(page, "notify:app:dan")).length === 3);

  await host.restart();
  let s = await until(page, (s) => connections(s) === 2 && s.recovered.length === 3);
  assert.deepEqual(s.recovered.sort(), ["broadcast", "channel:news", "user"], "every stream's history was lost");
  const second = s.log.slice(s.log.lastIndexOf("state:connecting"));
  assert.equal(second[1], "state:connected", `connected comes first: ${second}`);

  await page.reload();
  s = await until(page, (s) => connections(s) === 1 && s.log.some((e) => e.startsWith("unread:")));
  assert.deepEqual(s.recovered, [], "a page load after the restart misses nothing");
  // A channel that never held an event, subscribed now, is recovered on the next connect.
  await page.evaluate(() => new Promise((resolve) => window.client.on("subscribed", resolve) && window.client.subscribe("sport")));
  await page.evaluate(() => {
    window.client.close();
    window.client.connect();
  });
  s = await until(page, (s) => connections(s) === 2 && s.log.filter((e) => e.startsWith("unread:")).length >= 2);
  assert.deepEqual(s.recovered, [], "nothing was missed since the restart");
  await host.publish("app-publish-key", { users: ["dan"], event: "four" });
  await eventually(async () => (await shown(page, "notify:app:dan")).length === 4);
});

test("a page that comes back after the host lost its history gets what the new history holds", async (t) => {
  const context = await browser.newContext();
  const options = { url: host.url, tenant: "plain", user: "gus" };
  const page = await open(t, options, context);
  await until(page, (s) => connections(s) === 1);
  await host.publish("plain-publish-key", { users: ["gus"], event: "before" });
  await eventually(async () => (await shown(page, "notify:plain:gus")).length === 1);
  await page.goto("about:blank");

  await host.restart();
  await host.publish("plain-publish-key", { users: ["gus"], event: "after", data: 1 });
  await host.publish("plain-publish-key", { users: ["gus"], event: "after", data: 2 });
  const back = await open(t, options, context);
  const s = await until(back, (s) => connections(s) === 1 && s.recovered.length === 2);
  assert.deepEqual(s.recovered.sort(), ["broadcast", "user"], "the old history is gone");
  await back.waitForSelector("#events li:nth-child(2)");
  assert.deepEqual(await back.$$eval("#events li", (items) => items.map((li) => li.textContent)), ["user after 1", "user after 2"]);
});

test("the unread count follows every event, not only welcome and acks", async (t) => {
  const page = await open(t, { url: host.url, tenant: "app", user: "eve" });
  await until(page, (s) => s.unread.length === 1);
  await host.publish("app-publish-key", { users: ["eve"], event: "a" });
  await host.publish("app-publish-key", { users: ["eve"], event: "b" });
  await until(page, (s) => s.unread.length === 3);
  await page.evaluate(() => window.client.ack({ ...window.client.positions.get("user"), offset: 1 }));
  const s = await until(page, (s) => s.unread.length === 4);
  assert.deepEqual(s.unread, [0, 1, 2, 1]);
  assert.ok(s.log.indexOf("state:connected") < s.log.indexOf("unread:0"), "connected comes first");
});

test("?channels= means the same over WebSocket as over SSE", async (t) => {
  const page = await open(t, { url: host.url, tenant: "app", user: "fay" });
  const url = `${host.url.replace("http", "ws")}/v1/ws/app?user=fay&channels=news,sport`;
  const frames = page.evaluate(
    (url) =>
      new Promise((resolve, reject) => {
        const frames = [];
        const socket = new WebSocket(url);
        socket.onmessage = (message) => {
          frames.push(JSON.parse(message.data));
          if (frames.some((f) => f.type === "event")) resolve(frames);
        };
        socket.onerror = () => reject(new Error("the socket failed"));
        window.publishNow = () => frames.filter((f) => f.type === "subscribed").length === 2;
      }),
    url,
  );
  await eventually(() => page.evaluate(() => window.publishNow?.()));
  await host.publish("app-publish-key", { channels: ["sport"], event: "goal" });
  const got = await frames;
  assert.deepEqual(got.map((f) => f.type), ["welcome", "subscribed", "subscribed", "event"]);
  assert.deepEqual([got[1].channel, got[2].channel, got[3].channel], ["news", "sport", "sport"]);
});
