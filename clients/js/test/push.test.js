// Web Push from the SDK's side, against a real host: `registerPush` subscribes through a
// browser's PushManager (here a stand-in holding real P-256 keys, as Chromium offline has
// no push service to subscribe with) and registers the device; the host's push reaches a
// loopback push service, is decrypted with the browser's keys (RFC 8291, with node:crypto),
// and the service-worker helper shows it; an ack withdraws it and the helper closes it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { createECDH, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { NotifyClient } from "../src/notify.js";
import { received } from "../src/sw.js";
import { Host, eventually, freePort } from "./harness.js";

const HOST_BIN = process.env.NOTIFY_HOST_BIN ?? join(dirname(fileURLToPath(import.meta.url)), "../../../target/debug/notify-host");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

/** A push service on loopback that keeps what it receives, by path. */
async function pushService() {
  const service = { received: [] };
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      service.received.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  service.origin = `http://127.0.0.1:${server.address().port}`;
  service.close = () => new Promise((resolve) => server.close(resolve));
  return service;
}

/** What a browser's PushManager keeps: one subscription with its own key pair and secret. */
function pushManager(service) {
  const manager = { subscription: null, subscribed: [] };
  manager.getSubscription = async () => manager.subscription;
  manager.subscribe = async ({ applicationServerKey }) => {
    const ecdh = createECDH("prime256v1");
    ecdh.generateKeys();
    const auth = randomBytes(16);
    const endpoint = `${service.origin}/push/${b64url(randomBytes(8))}`;
    manager.subscribed.push(applicationServerKey);
    manager.subscription = {
      endpoint,
      options: { applicationServerKey: applicationServerKey.buffer },
      ecdh,
      auth,
      toJSON: () => ({ endpoint, expirationTime: null, keys: { p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) } }),
      unsubscribe: async () => {
        manager.subscription = null;
        return true;
      },
    };
    return manager.subscription;
  };
  return manager;
}

/** Decrypts an `aes128gcm` Web Push body with the subscription's keys (RFC 8291, 8188). */
function decrypt(subscription, body) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const serverKey = body.subarray(21, 21 + idlen);
  const secret = subscription.ecdh.computeSecret(serverKey);
  const info = Buffer.concat([Buffer.from("WebPush: info\0"), subscription.ecdh.getPublicKey(), serverKey]);
  const ikm = Buffer.from(hkdfSync("sha256", secret, subscription.auth, info, 32));
  const key = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const record = body.subarray(21 + idlen);
  const decipher = createDecipheriv("aes-128-gcm", key, nonce);
  decipher.setAuthTag(record.subarray(record.length - 16));
  const plain = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()]);
  const end = plain.lastIndexOf(2);
  return JSON.parse(plain.subarray(0, end).toString());
}

/** A service worker's global as `received` uses it: its registration's notifications. */
function workerScope() {
  const shown = [];
  const registration = {
    showNotification: async (title, options) => {
      shown.push({ title, ...options, close: () => shown.splice(shown.findIndex((n) => n.title === title), 1) });
    },
    getNotifications: async ({ tag } = {}) => shown.filter((n) => tag === undefined || n.tag === tag),
  };
  return { registration, shown };
}

test("registerPush subscribes with the tenant's key, registers the device, and the push shows and is withdrawn", async (t) => {
  const service = await pushService();
  t.after(() => service.close());
  const vapid = JSON.parse(execFileSync(HOST_BIN, ["push", "vapid-keys"]).toString());
  const port = await freePort();
  const host = await Host.start(
    `[server]\nlisten = "127.0.0.1:${port}"\n[push]\nallow_private = true\n` +
      `[tenants.shop]\npublish_key = "shop-publish-key"\nauth = { mode = "insecure" }\nhistory = { size = 10, acks = true }\n` +
      `[tenants.shop.push]\nwhen = "always"\n[tenants.shop.push.web]\nvapid_private_key = "${vapid.private_key}"\ncontact = "mailto:ops@shop.example"\n`,
  );
  t.after(() => host.dispose());

  const manager = pushManager(service);
  const client = new NotifyClient({ url: host.url, tenant: "shop", user: "ann", transport: "websocket" });
  t.after(() => client.close());
  const device = await client.registerPush({ pushManager: manager }, undefined, { label: "laptop" });
  assert.equal(b64url(manager.subscribed[0]), vapid.public_key, "subscribed with the tenant's key from the host");
  assert.deepEqual([device.platform, device.label], ["web", "laptop"]);
  const again = await client.registerPush({ pushManager: manager });
  assert.equal(again.id, device.id, "the same subscription is the same device");
  assert.equal(manager.subscribed.length, 1, "an existing subscription with the key is kept");
  const listed = await (await fetch(`${host.url}/v1/users/ann/devices`, { headers: { authorization: "Bearer shop-publish-key" } })).json();
  assert.deepEqual(listed.devices.map((d) => d.subscription.endpoint), [manager.subscription.endpoint]);

  const events = [];
  client.on("event", (frame) => events.push(frame));
  const connected = new Promise((resolve) => client.on("state", ({ state }) => state === "connected" && resolve()));
  client.connect();
  await connected;
  const { id } = await host.publish("shop-publish-key", { users: ["ann"], event: "order.shipped", data: { order: 42 }, push: { title: "Shipped", collapse_key: "order-42" } });
  const scope = workerScope();
  const [pushed] = await eventually(() => service.received.length >= 1 && service.received);
  const message = decrypt(manager.subscription, pushed.body);
  assert.deepEqual([message.type, message.id, message.title, message.data], ["notification", id, "Shipped", { order: 42 }]);
  await received(scope, message);
  assert.deepEqual(scope.shown.map((n) => [n.title, n.tag, n.data.id]), [["Shipped", "order-42", id]]);

  const frame = await eventually(() => events.find((e) => e.id === id));
  client.ack(frame);
  const withdrawal = await eventually(() => service.received[1]);
  assert.equal(withdrawal.headers.topic, "order-42");
  const withdraw = decrypt(manager.subscription, withdrawal.body);
  assert.deepEqual(withdraw, { type: "withdraw", id, tag: "order-42" });
  await received(scope, withdraw);
  assert.deepEqual(scope.shown, [], "the service worker closed it");

  assert.equal(await client.unregisterPush({ pushManager: manager }), true);
  assert.equal(manager.subscription, null);
  const after = await (await fetch(`${host.url}/v1/users/ann/devices`, { headers: { authorization: "Bearer shop-publish-key" } })).json();
  assert.deepEqual(after.devices, []);
});
