// The /dashboard page in headless Chromium: a sign-in card and nothing else without the admin
// token, a clear error with a wrong one, and with the right one this node's health, charts,
// the tenant with its live connection, an uploaded plugin with its calls, rollback and
// removal behind a confirmation, refused connects by reason; a webhook endpoint paused after
// failing, resumed from the page; and empty states that say what to do.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { Host, eventually } from "../test/harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "../../../target/demo-screenshots");
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "../../..");
const PLUGIN = join(ROOT, "plugins/target/wasm32-wasip2/release/redact.wasm");
const ADMIN = "dashboard-admin-token";
const HOST_BIN = process.env.NOTIFY_HOST_BIN ?? join(ROOT, "target/debug/notify-host");
const STEP_MS = 20_000;

const CONFIG = `[server]
listen = "127.0.0.1:0"
admin_token = "${ADMIN}"
demo = true
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
`;

async function call(host, method, path, body, headers = {}) {
  const res = await fetch(`${host.url}${path}`, { method, body, headers: { authorization: `Bearer ${ADMIN}`, ...headers } });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.text()}`);
}

/** The text of every cell of a table, row by row. */
function cells(page, table) {
  return page.$$eval(`#${table} tbody tr`, (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
}

const field = (page, name) => page.textContent(`#health [data-field="${name}"]`);

/** The plugins table's row for `hook`. */
async function pluginRow(page, hook) {
  return (await cells(page, "plugins")).find((row) => row[1] === hook);
}

test("the dashboard signs in, and shows node health, charts, tenants, plugins with their actions, and refusals", async (t) => {
  mkdirSync(SHOTS, { recursive: true });
  const host = await Host.start(CONFIG);
  t.after(() => host.dispose());
  await call(host, "PUT", "/v1/admin/tenants/demo/plugins/transform", readFileSync(PLUGIN), {
    "notify-plugin-config": JSON.stringify({ fields: "ssn" }),
  });
  // A refused connect: a user id that is not valid.
  assert.equal((await fetch(`${host.url}/v1/sse/demo?user=${encodeURIComponent("bad user")}`)).status, 401);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  // A live connection, from the demo page.
  const client = await browser.newPage();
  await client.goto(`${host.url}/demo`);
  await client.fill("#user", "alice");
  await client.click("#connect");
  await client.waitForSelector('#status[data-state="connected"]', { timeout: STEP_MS });
  await call(host, "POST", "/v1/publish", JSON.stringify({ users: ["alice"], event: "hello" }), {
    authorization: "Bearer demo-key",
    "content-type": "application/json",
  });

  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.on("request", (request) => request.url().endsWith("/favicon.ico") && problems.push("asked for /favicon.ico"));
  await page.goto(`${host.url}/dashboard`);
  assert.ok(await page.isVisible("#signin"), "a sign-in card first");
  assert.ok(!(await page.isVisible("#console")), "nothing of the cluster before the token");
  await page.screenshot({ path: join(SHOTS, "dashboard-signin.png"), fullPage: true });

  await page.fill("#token", "wrong-token");
  await page.click("#load");
  await page.waitForSelector("#signin-error:not([hidden])", { timeout: STEP_MS });
  assert.match(await page.textContent("#signin-error"), /^forbidden: /);
  assert.ok(!(await page.isVisible("#console")));

  await page.fill("#token", ADMIN);
  await page.click("#load");
  await eventually(async () => {
    const tenants = await cells(page, "tenants");
    return tenants.length === 1 && tenants[0][0] === "demo" && tenants[0][3] === "1";
  }, STEP_MS);
  assert.ok(await page.isVisible("#console") && !(await page.isVisible("#signin")));
  const [tenant] = await cells(page, "tenants");
  assert.deepEqual(tenant.slice(0, 4), ["demo", "config", "insecure", "1"]);
  const nodes = await cells(page, "nodes");
  assert.equal(nodes.length, 1);
  assert.match(nodes[0][0], /\(this node\)$/);
  assert.deepEqual([nodes[0][1], nodes[0][2], nodes[0][5], nodes[0][6]], ["ready", "0.1.0", "memory", "1"]);
  assert.match(nodes[0][4], /^\d+\.\d MiB$/);

  // This node's health, from its /metrics and /readyz.
  assert.match(await field(page, "node"), /^node-/);
  const workspace = /^version = "(.+)"$/m.exec(readFileSync(join(ROOT, "Cargo.toml"), "utf8"))[1];
  assert.equal(await field(page, "version"), workspace, "the host's version");
  assert.equal(await field(page, "ready"), "ready");
  assert.match(await field(page, "uptime"), /\d+ (s|min|h|d)/);
  assert.match(await field(page, "memory"), /^\d+\.\d MiB resident$/);
  assert.equal(await field(page, "broker"), "memory (single node)");
  assert.equal(await page.textContent('[data-chart="connections"] h3 span'), "1");
  await page.waitForFunction(() => {
    const line = document.querySelector('[data-chart="events"] svg polyline');
    return line && line.getAttribute("points").split(" ").length >= 2;
  }, null, { timeout: STEP_MS });

  await eventually(async () => {
    const row = await pluginRow(page, "transform");
    return row?.[5] === "active on 1 node" && row[6] === "1";
  }, STEP_MS);
  let row = await pluginRow(page, "transform");
  assert.equal(row[3], "retry", "the default failure policy");
  assert.equal(row[4], "fields");
  assert.match(row[2], /^uploaded .* · [0-9a-f]{8}$/, "a version is its time and hash, not a bare hash");
  assert.equal(row[8], "none", "no earlier version yet");
  assert.ok(await page.isDisabled('#plugins button[data-action="roll-back"]'), "nothing to roll back to");
  const refusals = await cells(page, "refusals");
  assert.ok(refusals.some(([reason, n]) => reason === "unauthorized" && Number(n) >= 1), JSON.stringify(refusals));
  await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });

  // A second upload, then a rollback and a removal, each asked for once more.
  await call(host, "PUT", "/v1/admin/tenants/demo/plugins/transform", readFileSync(PLUGIN), {
    "notify-plugin-config": JSON.stringify({ fields: "ssn", stamp: "clean" }),
  });
  await eventually(async () => (await pluginRow(page, "transform"))?.[4] === "fields, stamp", STEP_MS);
  assert.match((await pluginRow(page, "transform"))[8], /^1 version/);
  const questions = [];
  let answer = false;
  page.on("dialog", (dialog) => {
    questions.push(dialog.message());
    return answer ? dialog.accept() : dialog.dismiss();
  });
  await page.click('#plugins button[data-action="remove"]');
  await eventually(async () => questions.length === 1, STEP_MS);
  assert.equal((await pluginRow(page, "transform"))[4], "fields, stamp", "a dismissed removal changes nothing");
  answer = true;
  await page.click('#plugins button[data-action="roll-back"]');
  await eventually(async () => (await pluginRow(page, "transform"))?.[4] === "fields", STEP_MS);
  assert.match(questions[1], /Roll demo's transform plugin back/);
  await page.click('#plugins button[data-action="remove"]');
  await eventually(async () => (await pluginRow(page, "transform"))?.[5] === "off", STEP_MS);
  row = await pluginRow(page, "transform");
  assert.equal(row[2], "none");
  await page.screenshot({ path: join(SHOTS, "dashboard-actions.png"), fullPage: true });

  await page.click("#signout");
  assert.ok(await page.isVisible("#signin") && !(await page.isVisible("#console")));
  assert.deepEqual(problems, []);
});

test("a tenant's identity-provider key set shows with its keys, and a failing one in red with the reason", async (t) => {
  const { publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "idp-1", alg: "RS256", use: "sig" };
  const idp = createServer((req, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] })));
  await new Promise((resolve) => idp.listen(0, "127.0.0.1", resolve));
  t.after(() => idp.close());
  const closed = createServer();
  await new Promise((resolve) => closed.listen(0, "127.0.0.1", resolve));
  const deadPort = closed.address().port;
  await new Promise((resolve) => closed.close(resolve));
  const jwt = (url) => `{ mode = "jwt", jwks_url = "${url}", jwks_timeout_ms = 500 }`;
  const host = await Host.start(`${CONFIG}[tenants.idp]\npublish_key = "idp-publish-key"\nauth = ${jwt(`http://127.0.0.1:${idp.address().port}/certs`)}
[tenants.broken]\npublish_key = "broken-publish-key"\nauth = ${jwt(`http://127.0.0.1:${deadPort}/certs`)}\n`);
  t.after(() => host.dispose());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${host.url}/dashboard`);
  await page.fill("#token", ADMIN);
  await page.click("#load");
  const row = async (id) => (await cells(page, "tenants")).find((r) => r[0] === id);
  await eventually(async () => (await row("idp"))?.[2].includes("1 key, fetched") && (await row("broken"))?.[2].includes("failed"), STEP_MS);
  assert.match((await row("idp"))[2], /^jwt · key set: 1 key, fetched \d+ s ago$/);
  assert.match((await row("broken"))[2], /^jwt · key set: 0 keys, never fetched · last fetch failed: connecting to 127\.0\.0\.1:\d+/);
  const broken = await page.$$eval("#tenants tbody tr", (trs) => trs.find((tr) => tr.cells[0].textContent === "broken").cells[2].className);
  assert.equal(broken, "off");
});

test("a tenant that pushes shows its providers, its rule and what its pushes did", async (t) => {
  const vapid = JSON.parse(execFileSync(HOST_BIN, ["push", "vapid-keys"]).toString());
  const host = await Host.start(`${CONFIG}[tenants.shop]\npublish_key = "shop-publish-key"\nhistory = { size = 10, acks = true }
[tenants.shop.push]\nwhen = "unread_after"\n[tenants.shop.push.web]\nvapid_private_key = "${vapid.private_key}"\ncontact = "mailto:ops@shop.example"\n`);
  t.after(() => host.dispose());
  // A subscription at a loopback address: refused as push.allow_private is off.
  const subscription = { endpoint: "http://127.0.0.1:9/push/1", keys: { p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM", auth: "tBHItJI5svbpez7KI4CCXg" } };
  await call(host, "POST", "/v1/users/ann/devices", JSON.stringify({ platform: "web", subscription }), { authorization: "Bearer shop-publish-key", "content-type": "application/json" });
  await host.publish("shop-publish-key", { users: ["ann"], event: "order.shipped", push: { when: "always" } });
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${host.url}/dashboard`);
  await page.fill("#token", ADMIN);
  await page.click("#load");
  const row = async () => (await cells(page, "push")).find((r) => r[0] === "shop");
  await eventually(async () => (await row())?.[4] === "network 1", STEP_MS);
  assert.deepEqual(await row(), ["shop", "web", "unread after 30 s", "0", "network 1", "0", "0", "0", "0"]);
  assert.equal((await cells(page, "push")).length, 1, "tenants that do not push are not listed");
});

test("an empty cluster shows what to do instead of empty tables", async (t) => {
  const host = await Host.start(`[server]\nlisten = "127.0.0.1:0"\nadmin_token = "${ADMIN}"\n`);
  t.after(() => host.dispose());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${host.url}/dashboard`);
  await page.fill("#token", ADMIN);
  await page.click("#load");
  await page.waitForSelector('[data-empty="tenants"]:not([hidden])', { timeout: STEP_MS });
  assert.match(await page.textContent('[data-empty="tenants"]'), /No tenants yet\. Create one with notify-host tenant create/);
  assert.equal((await cells(page, "nodes")).length, 1, "this node is listed without any tenant");
  for (const table of ["tenants", "plugins", "webhooks", "push", "refusals"]) {
    assert.ok(!(await page.isVisible(`#${table}`)), `no header-only ${table} table`);
    assert.ok(await page.isVisible(`[data-empty="${table}"]`), `${table} says why it is empty`);
  }
  assert.equal(await page.textContent('#health [data-field="ready"]'), "ready", "a node with an admin API is ready");
  await page.screenshot({ path: join(SHOTS, "dashboard-empty.png"), fullPage: true });
});

test("a webhook endpoint that keeps failing shows as paused, and resumes from the page", async (t) => {
  let status = 500;
  const receiver = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(status).end());
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  t.after(() => receiver.close());
  const host = await Host.start(`${CONFIG}[webhooks]
allow_private = true
initial_backoff = "20ms"
max_backoff = "50ms"
pause_after = "300ms"
`);
  t.after(() => host.dispose());
  const url = `http://127.0.0.1:${receiver.address().port}/hooks`;
  await call(host, "POST", "/v1/admin/tenants/demo/webhooks", JSON.stringify({ url, events: ["user.online"] }), {
    "content-type": "application/json",
  });
  // A connection whose user.online the endpoint refuses.
  const sse = new AbortController();
  t.after(() => sse.abort());
  const stream = await fetch(`${host.url}/v1/sse/demo?user=ann`, { signal: sse.signal });
  assert.equal(stream.status, 200);

  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  page.on("dialog", (dialog) => dialog.accept());
  await page.goto(`${host.url}/dashboard`);
  await page.fill("#token", ADMIN);
  await page.click("#load");
  const hook = async () => (await cells(page, "webhooks"))[0];
  await eventually(async () => (await hook())?.[4].startsWith("paused since"), STEP_MS);
  const row = await hook();
  assert.equal(row[0], "demo");
  assert.match(row[1], /^we_[0-9a-f]{16} \(api\)$/);
  assert.deepEqual([row[2], row[3]], [url, "user.online"]);
  assert.match(row[4], /every request failed for .*500/);
  assert.ok(Number(row[7]) >= 1, "failed requests counted");
  await page.screenshot({ path: join(SHOTS, "dashboard-webhook-paused.png"), fullPage: true });

  status = 200;
  await page.click('#webhooks button[data-action="resume"]');
  await eventually(async () => (await hook())?.[4] === "active", STEP_MS);
  assert.equal(await page.isVisible('#webhooks button[data-action="resume"]'), false);
});
