// The client as a package: `npm pack` makes an installable tarball with its types, licences
// and changelog; an app installs it, type-checks against it with TypeScript, bundles it with
// esbuild, and the bundled page, served from another origin than the host, receives events
// in headless Chromium. (The plain `<script type="module">` way is production.test.js's page.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { Host, eventually, freePort } from "../test/harness.js";
import { serveApp } from "./origins.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const PACKAGE = join(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(PACKAGE, "node_modules/.bin");
const run = (cwd, command, args) => execFileSync(command, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });

const APP = `import { NotifyClient, VERSION, type NotifyEvent, type StateChange } from "@notify/client";

interface Order { order: number }

declare global { interface Window { received: string[]; version: string } }

const params = new URLSearchParams(location.search);
const client = new NotifyClient({ url: params.get("host")!, tenant: "shop", user: "ann" });
window.received = [];
window.version = VERSION;
client.on("state", (change: StateChange) => { document.title = change.state; });
client.on("event", (event: NotifyEvent) => {
  const { order } = event.data as Order;
  window.received.push(\`\${event.event} \${order}\`);
});
client.connect();
`;

const TSCONFIG = {
  compilerOptions: { strict: true, noEmit: true, target: "es2022", module: "esnext", moduleResolution: "bundler", lib: ["es2022", "dom"] },
  include: ["main.ts"],
};

test("npm pack makes a package an app installs, type-checks, bundles and runs from another origin", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "notify-package-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const [packed] = JSON.parse(run(PACKAGE, "npm", ["pack", "--json", "--pack-destination", dir]));
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, ["CHANGELOG.md", "LICENSE-APACHE", "LICENSE-MIT", "README.md", "notify.d.ts", "package.json", "src/notify.js", "src/sw.js", "sw.d.ts"]);
  const manifest = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8"));
  assert.equal(packed.version, manifest.version);
  assert.match(readFileSync(join(PACKAGE, "CHANGELOG.md"), "utf8"), new RegExp(`^## ${manifest.version.replaceAll(".", "\\.")}$`, "m"));
  for (const licence of ["LICENSE-MIT", "LICENSE-APACHE"]) {
    assert.equal(readFileSync(join(PACKAGE, licence), "utf8"), readFileSync(join(PACKAGE, "../..", licence), "utf8"), `${licence} as the repository's`);
  }

  const app = join(dir, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "shop", private: true, type: "module" }));
  run(app, "npm", ["install", "--offline", "--no-audit", "--no-fund", join(dir, packed.filename)]);
  writeFileSync(join(app, "main.ts"), APP);
  writeFileSync(join(app, "tsconfig.json"), JSON.stringify(TSCONFIG));
  run(app, join(BIN, "tsc"), ["-p", "."]);
  run(app, join(BIN, "esbuild"), ["main.ts", "--bundle", "--format=esm", "--outfile=dist/app.js"]);
  writeFileSync(join(app, "dist/index.html"), '<!doctype html><link rel="icon" href="data:,"><script type="module" src="/app.js"></script>');

  const page = await serveApp({ "/": join(app, "dist/index.html"), "/app.js": join(app, "dist/app.js") });
  t.after(() => page.close());
  const host = await Host.start(`[server]
listen = "127.0.0.1:${await freePort()}"
[tenants.shop]
publish_key = "shop-publish-key"
auth = { mode = "insecure" }
allowed_origins = ["${page.origin}"]
`);
  t.after(() => host.dispose());
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  t.after(() => browser.close());
  const tab = await browser.newPage();
  await tab.goto(`${page.origin}/?host=${encodeURIComponent(host.url)}`);
  await eventually(async () => (await tab.title()) === "connected");
  await host.publish("shop-publish-key", { users: ["ann"], event: "order.paid", data: { order: 42 } });
  await eventually(async () => (await tab.evaluate(() => window.received)).length === 1);
  assert.deepEqual(await tab.evaluate(() => [window.received, window.version]), [["order.paid 42"], manifest.version]);
});
