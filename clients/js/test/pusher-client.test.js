// pusher-js (npm), unchanged, against notify's Pusher protocol at /app/{key}: connecting,
// public and private channels (signed by an auth endpoint written with the official `pusher`
// library's authorizeChannel), events from the Pusher HTTP API and from notify's own
// publish, unsubscribing, and the refusals pusher-js acts on.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import Pusher from "pusher";
import PusherJs from "pusher-js";

import { Host, eventually, freePort } from "./harness.js";

const APP = { appId: "4242", key: "pusher-key-1", secret: "pusher-secret-0123456789" };

async function host(t) {
  const port = await freePort();
  const h = await Host.start(`[server]
listen = "127.0.0.1:${port}"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
pusher = { app_id = "${APP.appId}", key = "${APP.key}", secret = "${APP.secret}" }
`);
  t.after(() => h.dispose());
  return { port, url: h.url, server: new Pusher({ ...APP, host: "127.0.0.1", port: String(port), useTLS: false }) };
}

/** A pusher-js client of `key` on the host at `port`; `options` are pusher-js's. */
function client(t, port, options = {}, key = APP.key) {
  const pusher = new PusherJs(key, {
    cluster: "local",
    wsHost: "127.0.0.1",
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    ...options,
  });
  t.after(() => pusher.disconnect());
  return pusher;
}

/** The channel once subscribed, and every event it gets as `name data`. */
async function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  const events = [];
  channel.bind_global((event, data) => {
    if (!event.startsWith("pusher:")) events.push([event, data]);
  });
  await new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", reject);
  });
  return { channel, events };
}

/** An auth endpoint as an application writes it with the official library. */
async function authEndpoint(t, server) {
  const http = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const form = new URLSearchParams(body);
      const auth = server.authorizeChannel(form.get("socket_id"), form.get("channel_name"));
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(auth));
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  t.after(() => http.close());
  return `http://127.0.0.1:${http.address().port}/pusher/auth`;
}

test("pusher-js connects, subscribes to a public channel and receives events from both APIs", async (t) => {
  const { port, url, server } = await host(t);
  const pusher = client(t, port);
  await new Promise((resolve) => pusher.connection.bind("connected", resolve));
  assert.match(pusher.connection.socket_id, /^\d+\.\d+$/);

  const { channel, events } = await subscribed(pusher, "news");
  await server.trigger("news", "headline", { title: "hello" });
  const published = await fetch(`${url}/v1/publish`, {
    method: "POST",
    headers: { authorization: "Bearer demo-key", "content-type": "application/json" },
    body: JSON.stringify({ channels: ["news"], event: "native", data: { n: 1 } }),
  });
  assert.equal(published.status, 202);
  await server.trigger("news", "text", "plain words");
  await eventually(() => events.length === 3);
  // pusher-js decodes data sent as a JSON string, as the Pusher service sends it.
  assert.deepEqual(events, [["headline", { title: "hello" }], ["native", { n: 1 }], ["text", "plain words"]]);

  pusher.unsubscribe("news");
  await server.trigger("news", "after", {});
  const other = await subscribed(pusher, "other");
  await server.trigger("other", "marker", {});
  await eventually(() => other.events.length === 1);
  assert.equal(events.length, 3, "no event after unsubscribing");
  assert.equal(channel.subscribed, false);
});

test("private channels take a signature from the app's auth endpoint and refuse any other", async (t) => {
  const { port, server } = await host(t);
  const endpoint = await authEndpoint(t, server);
  const pusher = client(t, port, { channelAuthorization: { endpoint, transport: "ajax" } });
  const { events } = await subscribed(pusher, "private-orders");
  await server.trigger("private-orders", "shipped", { id: 7 });
  await eventually(() => events.length === 1);
  assert.deepEqual(events, [["shipped", { id: 7 }]]);

  const forged = client(t, port, {
    channelAuthorization: { customHandler: (_params, callback) => callback(null, { auth: `${APP.key}:${"0".repeat(64)}` }) },
  });
  await assert.rejects(subscribed(forged, "private-orders"), (e) => e.type === "AuthError" && e.status === 401);
  // A signature is good for the socket it was made for only.
  const stolen = server.authorizeChannel(pusher.connection.socket_id, "private-orders");
  const thief = client(t, port, { channelAuthorization: { customHandler: (_params, callback) => callback(null, stolen) } });
  await assert.rejects(subscribed(thief, "private-orders"), (e) => e.type === "AuthError");
});

test("an unknown key is refused with Pusher's code 4001, and pusher-js does not retry", async (t) => {
  const { port } = await host(t);
  const pusher = client(t, port, {}, "not-a-key");
  const error = await new Promise((resolve) => pusher.connection.bind("error", resolve));
  assert.equal(error.error.data.code, 4001);
  assert.equal(error.error.data.message, "App key not-a-key not in this cluster");
  await eventually(() => pusher.connection.state === "failed" || pusher.connection.state === "disconnected");
});
