// Identity as product teams have it, against an independent implementation: `jose` makes
// the keys, publishes them as a JWKS on a loopback identity provider and signs the tokens;
// notify fetches the key set, follows its rotation, and the SDK refreshes short-lived tokens
// on the open connection by itself (over WebSocket and over SSE).

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import { SignJWT, exportJWK, generateKeyPair } from "jose";

import { NotifyClient } from "../src/notify.js";
import { Host, eventually, freePort } from "./harness.js";

const ISSUER = "https://idp.example.test/realms/acme";
const AUDIENCE = "notify";
const ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/** A loopback identity provider publishing `keys` (public JWKs) at /certs. */
async function provider() {
  const idp = { keys: [], requests: 0 };
  const server = createServer((req, res) => {
    idp.requests += 1;
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=60" });
    res.end(JSON.stringify({ keys: idp.keys }));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  idp.url = `http://127.0.0.1:${server.address().port}/certs`;
  idp.close = () => new Promise((resolve) => server.close(resolve));
  return idp;
}

/** A key pair for `alg`, its public JWK named `kid`. */
async function keyFor(alg, kid) {
  const { publicKey, privateKey } = await generateKeyPair(alg, { crv: alg === "EdDSA" ? "Ed25519" : undefined, extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { alg, kid, privateKey, jwk };
}

function sign(key, sub, seconds, claims = {}) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setSubject(sub)
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + seconds)
    .sign(key.privateKey);
}

async function hostFor(idp) {
  const port = await freePort();
  const auth = `{ mode = "jwt", jwks_url = "${idp.url}", issuer = "${ISSUER}", audience = "${AUDIENCE}", jwks_cooldown_secs = 1 }`;
  return Host.start(`[server]\nlisten = "127.0.0.1:${port}"\n[tenants.acme]\npublish_key = "acme-publish-key"\nauth = ${auth}\n`);
}

/** Connects with `token` (a string or a getter); resolves with the client once connected. */
async function connected(host, token, options = {}) {
  const client = new NotifyClient({ url: host.url, tenant: "acme", token, initialBackoffMs: 50, maxBackoffMs: 500, ...options });
  const states = [];
  const errors = [];
  client.on("state", (s) => states.push(s));
  client.on("error", (e) => errors.push(e));
  client.connect();
  await eventually(() => states.some((s) => s.state === "connected") || errors.find((e) => e.status === 401));
  return { client, states, errors };
}

test("tokens of every algorithm verify against the provider's key set, which rotates without a restart", async (t) => {
  const idp = await provider();
  t.after(() => idp.close());
  const keys = await Promise.all(ALGORITHMS.map((alg) => keyFor(alg, `k-${alg}`)));
  idp.keys = keys.map((k) => k.jwk);
  const host = await hostFor(idp);
  t.after(() => host.dispose());

  for (const key of keys) {
    const { client, states } = await connected(host, await sign(key, `user-${key.alg}`, 300));
    t.after(() => client.close());
    const up = states.find((s) => s.state === "connected");
    assert.ok(up, `${key.alg}: ${JSON.stringify(states)}`);
    assert.equal(up.user, `user-${key.alg}`);
    client.close();
  }

  // Rotation: the provider swaps its key for a new kid; notify learns it from the first token.
  const rotated = await keyFor("ES256", "rotated");
  idp.keys = [rotated.jwk];
  const { client, states } = await connected(host, await sign(rotated, "rotated-user", 300));
  t.after(() => client.close());
  assert.equal(states.find((s) => s.state === "connected")?.user, "rotated-user");
  client.close();
  // The old key is gone once the set was fetched again; its tokens are refused.
  const old = await sign(keys[0], "old-user", 300);
  const response = await fetch(`${host.url}/v1/sse/acme?token=${old}`);
  assert.equal(response.status, 401);
  assert.match((await response.json()).error.message, /no key with kid "k-RS256"/);
});

for (const transport of ["websocket", "sse"]) test(`the SDK refreshes short-lived tokens by itself over ${transport}`, async (t) => {
  const idp = await provider();
  t.after(() => idp.close());
  const key = await keyFor("RS256", "live");
  idp.keys = [key.jwk];
  const host = await hostFor(idp);
  t.after(() => host.dispose());

  // Each token lives 3 s; the SDK asks for the next one at two thirds of that.
  let issued = 0;
  const getter = async () => {
    issued += 1;
    return sign(key, "ana", 3);
  };
  const { client, states } = await connected(host, getter, { transport });
  t.after(() => client.close());
  const refreshed = [];
  client.on("refreshed", (info) => refreshed.push(info));
  const events = [];
  client.on("event", (e) => events.push(e));
  await eventually(() => refreshed.length >= 2, 20_000);
  // Two refreshes later the first token is long expired, and the same connection delivers.
  await host.publish("acme-publish-key", { users: ["ana"], event: "still-here" });
  await eventually(() => events.some((e) => e.event === "still-here"));
  assert.equal(states.filter((s) => s.state === "connected").length, 1, `one connection throughout: ${JSON.stringify(states)}`);
  assert.ok(refreshed.every((r) => r.expiresAt > Math.floor(Date.now() / 1000) - 10));
  assert.ok(issued >= 3);
});

test("a subscription token from the backend grants the SDK a channel its connection token does not", async (t) => {
  const idp = await provider();
  t.after(() => idp.close());
  const key = await keyFor("ES256", "subs");
  idp.keys = [key.jwk];
  const host = await hostFor(idp);
  t.after(() => host.dispose());
  const asked = [];
  // The backend signs a short-lived token for one channel and one user.
  const channelToken = async (channel) => {
    asked.push(channel);
    return sign(key, "zoe", 60, { channel });
  };
  const { client } = await connected(host, await sign(key, "zoe", 300, { channels: ["news"] }));
  t.after(() => client.close());
  const subscribed = [];
  const errors = [];
  client.on("subscribed", (s) => subscribed.push(s.channel));
  client.on("error", (e) => errors.push(e));
  const events = [];
  client.on("event", (e) => events.push(e));
  client.subscribe("vip.1", { token: channelToken });
  client.subscribe("vip.2");
  await eventually(() => subscribed.includes("vip.1") && errors.some((e) => e.code === "forbidden_channel" && e.channel === "vip.2"));
  await host.publish("acme-publish-key", { channels: ["vip.1"], event: "members-only" });
  await eventually(() => events.some((e) => e.event === "members-only"));
  assert.deepEqual(asked, ["vip.1"]);
});
