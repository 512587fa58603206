// The /demo page in headless Chromium (Debian's package, driven by playwright-core): a
// notification published from the page's form appears live, and one published while the
// page's host is down appears once the page reconnects and resumes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { Host, Redis, freePort } from "../test/harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "../../../target/demo-screenshots");
/** Longest wait for something the page must show. */
const STEP_MS = 20_000;

function config(port, redisPort) {
  return `[server]
listen = "127.0.0.1:${port}"
demo = true
[broker]
kind = "redis"
url = "redis://127.0.0.1:${redisPort}"
timeout = "2s"
max_backoff = "200ms"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
history = { size = 100, ttl = "10m", acks = false }
`;
}

test("the demo page shows live notifications and what it missed while its host restarted", async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const redis = await Redis.start();
  t.after(() => redis.dispose());
  // Two nodes share Redis: the page is served by `a`; `b` publishes while `a` is down.
  const [portA, portB] = [await freePort(), await freePort()];
  const a = await Host.start(config(portA, redis.port));
  const b = await Host.start(config(portB, redis.port));
  t.after(() => a.dispose());
  t.after(() => b.dispose());

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("request", (request) => request.url().endsWith("/favicon.ico") && problems.push("asked for /favicon.ico"));

  await page.goto(`${a.url}/demo`);
  await page.fill("#user", "alice");
  await page.fill("#channels", "news");
  await page.click("#connect");
  await page.waitForSelector('#status[data-state="connected"]', { timeout: STEP_MS });

  // Published from the page's own form, with the key typed in.
  await page.fill("#key", "demo-key");
  await page.selectOption("#kind", "channel");
  await page.fill("#target", "news");
  await page.fill("#event", "headline");
  await page.fill("#data", '{"text": "from the form"}');
  await page.click("#send");
  await page.waitForSelector('#notifications li[data-event="headline"]', { timeout: STEP_MS });
  assert.match(await page.textContent("#notifications"), /channel:news\s*headline \{"text":"from the form"\}/);
  const meta = await page.textContent('#notifications li[data-event="headline"] .meta');
  assert.match(meta, /\d{1,2}:\d{2}:\d{2}.* · id [\w-]+ · offset 1$/, "each event shows its time, id and position");
  await page.screenshot({ path: join(SHOTS, "1-live.png"), fullPage: true });

  // The page's host goes away; an event is published through the other node meanwhile.
  await a.stop("SIGKILL");
  await page.waitForSelector('#status[data-state="disconnected"]', { timeout: STEP_MS });
  await b.publish("demo-key", { users: ["alice"], event: "missed", data: { text: "sent while you were away" } });
  await page.screenshot({ path: join(SHOTS, "2-disconnected.png"), fullPage: true });
  await a.run();

  await page.waitForSelector('#notifications li[data-event="missed"]', { timeout: STEP_MS });
  await page.waitForSelector('#status[data-state="connected"][data-resumes="1"]', { timeout: STEP_MS });
  const status = await page.textContent("#status");
  assert.match(status, /reconnects 1 · resumes 1 · unrecovered streams 0/);
  assert.equal(await page.locator('#notifications li[data-event="missed"]').count(), 1, "shown once");
  assert.equal(await page.locator('#notifications li[data-event="headline"]').count(), 1, "not replayed twice");
  await page.screenshot({ path: join(SHOTS, "3-resumed.png"), fullPage: true });
  assert.deepEqual(problems, []);
});
