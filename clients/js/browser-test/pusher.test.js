// pusher-js's browser build, unchanged, in headless Chromium against two notify nodes over
// Redis: a page on the app's own origin (which also serves the auth endpoint, written with
// the official `pusher` library) per user, each on its own node; public events, presence
// members across the nodes, and pusher-js reconnecting and resubscribing by itself after
// its node is killed and comes back.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import Pusher from "pusher";
import { chromium } from "playwright-core";

import { Host, Redis, eventually, freePort } from "../test/harness.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const APP = { appId: "4242", key: "pusher-key-1", secret: "pusher-secret-0123456789" };
const PUSHER_JS = createRequire(import.meta.url).resolve("pusher-js/dist/web/pusher.min.js");

const PAGE = `<!doctype html><meta charset="utf-8"><script src="/pusher.min.js"></script><script>
const q = new URLSearchParams(location.search);
window.seen = [];
const pusher = new Pusher(q.get("key"), {
  cluster: "local", wsHost: "127.0.0.1", wsPort: Number(q.get("port")), forceTLS: false,
  enabledTransports: ["ws"], disableStats: true,
  channelAuthorization: { endpoint: "/pusher/auth", transport: "ajax", params: { user: q.get("user") } },
});
pusher.connection.bind("state_change", (s) => seen.push("state " + s.current));
pusher.subscribe("news").bind("headline", (d) => seen.push("headline " + d.title));
const room = pusher.subscribe("presence-room");
room.bind("pusher:subscription_succeeded", (m) => seen.push("members " + Object.keys(m.members).sort().join(",")));
room.bind("pusher:member_added", (m) => seen.push("+" + m.id + ":" + m.info.name));
room.bind("pusher:member_removed", (m) => seen.push("-" + m.id));
</script>`;

let redis, a, b, app, browser, server;

/** The app's origin: the page, pusher-js, and the auth endpoint. */
async function serveApp() {
  const http = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/") return res.writeHead(200, { "content-type": "text/html" }).end(PAGE);
    if (url.pathname === "/pusher.min.js") {
      return res.writeHead(200, { "content-type": "text/javascript" }).end(readFileSync(PUSHER_JS));
    }
    if (url.pathname !== "/pusher/auth") return res.writeHead(404).end();
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const form = new URLSearchParams(body);
      const user = form.get("user");
      const channel = form.get("channel_name");
      const presence = channel.startsWith("presence-") ? { user_id: user, user_info: { name: user.toUpperCase() } } : undefined;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(server.authorizeChannel(form.get("socket_id"), channel, presence)));
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  const close = () => {
    http.closeAllConnections();
    return new Promise((resolve) => http.close(resolve));
  };
  return { origin: `http://localhost:${http.address().port}`, close };
}

before(async () => {
  app = await serveApp();
  redis = await Redis.start();
  const config = (port) => `[server]
listen = "127.0.0.1:${port}"
[broker]
kind = "redis"
url = "redis://127.0.0.1:${redis.port}"
timeout = "2s"
max_backoff = "200ms"
node_timeout = "2s"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
allowed_origins = ["${app.origin}"]
pusher = { app_id = "${APP.appId}", key = "${APP.key}", secret = "${APP.secret}" }
`;
  a = await Host.start(config(await freePort()));
  b = await Host.start(config(await freePort()));
  server = new Pusher({ ...APP, host: "127.0.0.1", port: a.addr.split(":")[1], useTLS: false });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  await a?.dispose();
  await b?.dispose();
  await redis?.dispose();
  await app?.close();
});

async function open(t, user, host) {
  const context = await browser.newContext();
  t.after(() => context.close());
  const page = await context.newPage();
  const port = host.addr.split(":")[1];
  await page.goto(`${app.origin}/?key=${APP.key}&port=${port}&user=${user}`);
  return { seen: () => page.evaluate(() => window.seen) };
}

test("pusher-js pages on two nodes share presence and events, and one resubscribes after its node comes back", async (t) => {
  const ann = await open(t, "ann", a);
  await eventually(async () => (await ann.seen()).includes("members ann"));
  const bob = await open(t, "bob", b);
  await eventually(async () => (await bob.seen()).includes("members ann,bob"));
  await eventually(async () => (await ann.seen()).includes("+bob:BOB"));

  await server.trigger("news", "headline", { title: "first" });
  await eventually(async () => (await ann.seen()).includes("headline first") && (await bob.seen()).includes("headline first"));

  // Node B dies: bob's page loses its connection, and node A's sweep tells ann bob left.
  await b.stop("SIGKILL");
  await eventually(async () => (await ann.seen()).includes("-bob"));
  await eventually(async () => (await bob.seen()).some((s) => s === "state connecting" || s === "state unavailable"));
  // Node B comes back on its address: pusher-js reconnects and resubscribes by itself.
  await b.run();
  await eventually(async () => (await bob.seen()).filter((s) => s === "members ann,bob").length === 2, 60_000);
  await eventually(async () => (await ann.seen()).filter((s) => s === "+bob:BOB").length === 2);
  await server.trigger("news", "headline", { title: "second" });
  await eventually(async () => (await bob.seen()).includes("headline second"));
  assert.deepEqual((await ann.seen()).filter((s) => /^[+-]/.test(s)), ["+bob:BOB", "-bob", "+bob:BOB"]);
});
