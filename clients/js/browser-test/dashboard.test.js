// The /dashboard page in headless Chromium: nothing without the admin token, a clear error
// with a wrong one, and with the right one the node, the tenant, its live connection, an
// uploaded plugin with its calls, and refused connects by reason.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { Host, eventually } from "../test/harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "../../../target/demo-screenshots");
const PLUGIN = join(dirname(fileURLToPath(import.meta.url)), "../../../plugins/target/wasm32-wasip2/release/redact.wasm");
const ADMIN = "dashboard-admin-token";
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

test("the dashboard shows nodes, tenants, plugins and refusals to an admin", async (t) => {
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
  await page.goto(`${host.url}/dashboard`);
  assert.deepEqual(await cells(page, "tenants"), [], "nothing before the token");

  await page.fill("#token", "wrong-token");
  await page.click("#load");
  await page.waitForSelector('#status[data-state="error"]', { timeout: STEP_MS });
  assert.match(await page.textContent("#status"), /^forbidden: /);

  await page.fill("#token", ADMIN);
  await page.click("#load");
  await eventually(async () => {
    const tenants = await cells(page, "tenants");
    return tenants.length === 1 && tenants[0][0] === "demo" && tenants[0][3] === "1";
  }, STEP_MS);
  const [tenant] = await cells(page, "tenants");
  assert.deepEqual(tenant.slice(0, 4), ["demo", "config", "insecure", "1"]);
  const nodes = await cells(page, "nodes");
  assert.equal(nodes.length, 1);
  assert.match(nodes[0][0], /\(this node\)$/);
  assert.equal(nodes[0][1], "1");
  await eventually(async () => {
    const plugins = await cells(page, "plugins");
    return plugins.length === 1 && plugins[0][1] === "transform" && plugins[0][4] === "active" && plugins[0][5] === "1";
  }, STEP_MS);
  const refusals = await cells(page, "refusals");
  assert.ok(refusals.some(([reason, n]) => reason === "unauthorized" && Number(n) >= 1), JSON.stringify(refusals));
  await page.screenshot({ path: join(SHOTS, "dashboard.png"), fullPage: true });
  assert.deepEqual(problems, []);
});
