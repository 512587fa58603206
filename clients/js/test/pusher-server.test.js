// The official Pusher server library for Node (`pusher` on npm) publishing to notify through
// the Pusher HTTP API, unchanged: a trigger, a trigger to several channels, a batch, each
// reaching notify's own clients of those channels; a wrong secret and a wrong key refused as
// Pusher refuses them.

import { test } from "node:test";
import assert from "node:assert/strict";

import Pusher from "pusher";

import { NotifyClient } from "../src/notify.js";
import { Host, eventually, freePort, record } from "./harness.js";

const APP = { appId: "app-1", key: "pusher-key-1", secret: "pusher-secret-0123456789" };

test("the official pusher library triggers events that notify's clients receive", async (t) => {
  const port = await freePort();
  const host = await Host.start(`[server]
listen = "127.0.0.1:${port}"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
pusher = { app_id = "${APP.appId}", key = "${APP.key}", secret = "${APP.secret}" }
`);
  t.after(() => host.dispose());
  const ann = new NotifyClient({ url: host.url, tenant: "demo", user: "ann", channels: ["news", "alerts"] });
  const seen = record(ann);
  t.after(() => ann.close());
  ann.connect();
  await eventually(() => ann.positions.get("channel:news") && ann.positions.get("channel:alerts"));

  const pusher = new Pusher({ ...APP, host: "127.0.0.1", port: String(port), useTLS: false });
  const answer = await pusher.trigger("news", "headline", { title: "hello" });
  assert.equal(answer.status, 200);
  assert.deepEqual(await answer.json(), {});
  await pusher.trigger(["news", "alerts"], "both", "plain text");
  await pusher.triggerBatch([
    { channel: "news", name: "first", data: { n: 1 } },
    { channel: "alerts", name: "second", data: { n: 2 } },
  ]);
  const events = () => seen.events.map((e) => `${e.channel} ${e.event} ${e.data}`);
  await eventually(() => events().length === 5);
  // Pusher's data is a string (the library JSON-encodes objects); notify delivers it as is.
  assert.deepEqual(events().sort(), [
    'alerts second {"n":2}',
    "alerts both plain text",
    'news first {"n":1}',
    'news headline {"title":"hello"}',
    "news both plain text",
  ].sort());

  const wrongSecret = new Pusher({ ...APP, secret: "not-the-secret-0123", host: "127.0.0.1", port: String(port), useTLS: false });
  await assert.rejects(wrongSecret.trigger("news", "x", {}), (e) => e.status === 401 && /^Invalid signature/.test(e.body));
  const wrongKey = new Pusher({ ...APP, key: "not-the-key", host: "127.0.0.1", port: String(port), useTLS: false });
  await assert.rejects(wrongKey.trigger("news", "x", {}), (e) => e.status === 401 && /auth_key/.test(e.body));
  const otherApp = new Pusher({ ...APP, appId: "app-2", host: "127.0.0.1", port: String(port), useTLS: false });
  await assert.rejects(otherApp.trigger("news", "x", {}), (e) => e.status === 404);
  assert.equal(events().length, 5, "nothing refused was delivered");
});
