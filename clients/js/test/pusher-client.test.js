// pusher-js and Laravel Echo (npm), unchanged, against notify's Pusher protocol at
// /app/{key}: connecting, public, private and presence channels (signed by an auth endpoint
// written with the official `pusher` library's authorizeChannel), client events, events
// from the Pusher HTTP API and from notify's own publish, two nodes over Redis with one
// killed, and the refusals pusher-js acts on.

import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";

import Echo from "laravel-echo";
import Pusher from "pusher";
import PusherJs from "pusher-js";

import { Host, Redis, eventually, freePort } from "./harness.js";

// pusher-js closes a socket the server already closed when the server refuses it (4000-4099,
// as after terminate_connections), and its Node WebSocket (faye) then arms a 30 s timer that
// nothing clears: it would hold this process open for 30 s after the tests. Such timers
// do not keep the process alive here.
const setTimer = globalThis.setTimeout;
globalThis.setTimeout = (fn, ms, ...args) => {
  const timer = setTimer(fn, ms, ...args);
  if (ms === 30_000) timer.unref();
  return timer;
};

const APP = { appId: "4242", key: "pusher-key-1", secret: "pusher-secret-0123456789" };

async function host(t, extra = "", app = "") {
  const port = await freePort();
  const h = await Host.start(`[server]
listen = "127.0.0.1:${port}"
${extra}
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
pusher = { app_id = "${APP.appId}", key = "${APP.key}", secret = "${APP.secret}"${app} }
`);
  t.after(() => h.dispose());
  return { host: h, port, url: h.url, server: new Pusher({ ...APP, host: "127.0.0.1", port: String(port), useTLS: false }) };
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

/** An auth endpoint as an application writes it with the official library; presence
 * channels get the user the client names in its `user` parameter (an app would take it
 * from its session). */
async function authEndpoint(t, server) {
  const http = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const form = new URLSearchParams(body);
      if (req.url === "/pusher/user-auth") {
        const user = server.authenticateUser(form.get("socket_id"), { id: form.get("user"), name: form.get("user") });
        res.writeHead(200, { "content-type": "application/json" });
        return res.end(JSON.stringify(user));
      }
      const channel = form.get("channel_name");
      const user = form.get("user");
      const presence = channel.startsWith("presence-") ? { user_id: user, user_info: { name: user.toUpperCase() } } : undefined;
      const auth = server.authorizeChannel(form.get("socket_id"), channel, presence);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(auth));
    });
  });
  await new Promise((resolve) => http.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    http.closeAllConnections();
    http.close();
  });
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

test("an event published with a socket_id reaches every subscriber but that connection", async (t) => {
  const { port, server } = await host(t);
  const [sender, other] = [client(t, port), client(t, port)];
  const [mine, theirs] = [await subscribed(sender, "chat"), await subscribed(other, "chat")];
  await server.trigger("chat", "said", { text: "hi" }, { socket_id: sender.connection.socket_id });
  await server.trigger("chat", "marker", {});
  await eventually(() => theirs.events.length === 2 && mine.events.length === 1);
  assert.deepEqual(theirs.events.map(([e]) => e), ["said", "marker"]);
  assert.deepEqual(mine.events.map(([e]) => e), ["marker"], "the sender did not get its own event");
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

test("client events reach the channel's other subscribers, within Pusher's rate, where the app enables them", async (t) => {
  const { port, server } = await host(t, "", ", client_events = true");
  const endpoint = await authEndpoint(t, server);
  const signed = () => client(t, port, { channelAuthorization: { endpoint, transport: "ajax" } });
  const [annClient, bobClient] = [signed(), signed()];
  const [ann, bob] = [await subscribed(annClient, "private-chat"), await subscribed(bobClient, "private-chat")];
  assert.equal(ann.channel.trigger("client-typing", { who: "ann" }), true);
  await eventually(() => bob.events.length === 1);
  assert.deepEqual(bob.events, [["client-typing", { who: "ann" }]]);

  const errors = [];
  annClient.connection.bind("error", (e) => errors.push(e.data?.code));
  for (let i = 0; i < 15; i++) ann.channel.trigger("client-burst", { i });
  await eventually(() => errors.includes(4301));
  await server.trigger("private-chat", "marker", {});
  await eventually(() => bob.events.some(([e]) => e === "marker"));
  const burst = bob.events.filter(([e]) => e === "client-burst").length;
  assert.ok(burst >= 9 && burst <= 12, `about 10 of 15 got through the rate (${burst})`);
  assert.deepEqual(ann.events.filter(([e]) => e.startsWith("client-")), [], "the sender gets none of its own");
  assert.equal(annClient.connection.state, "connected", "a client event over the rate does not close the connection");

  // On a presence channel, a client event names its sender's member.
  const [annMember, bobMember] = [member(t, port, endpoint, "ann"), member(t, port, endpoint, "bob")];
  const annRoom = await joined(annMember, "presence-room");
  const bobRoom = await joined(bobMember, "presence-room");
  const said = [];
  bobRoom.channel.bind("client-hi", (data, metadata) => said.push(`${metadata?.user_id}: ${data.text}`));
  annRoom.channel.trigger("client-hi", { text: "hello" });
  await eventually(() => said.length === 1);
  assert.deepEqual(said, ["ann: hello"]);

  const { port: offPort, server: offServer } = await host(t);
  const offEndpoint = await authEndpoint(t, offServer);
  const off = client(t, offPort, { channelAuthorization: { endpoint: offEndpoint, transport: "ajax" } });
  const offChannel = await subscribed(off, "private-chat");
  const refused = new Promise((resolve) => off.connection.bind("error", resolve));
  offChannel.channel.trigger("client-typing", {});
  assert.match((await refused).data.message, /not enabled/);
});

test("a signed-in user gets the events sent to them, and terminate_connections closes their connections", async (t) => {
  const { port, server } = await host(t);
  const endpoint = await authEndpoint(t, server);
  const signedIn = (user) => {
    const pusher = client(t, port, {
      userAuthentication: { endpoint: endpoint.replace("/pusher/auth", "/pusher/user-auth"), transport: "ajax", params: { user } },
    });
    const got = [];
    pusher.user.bind("notice", (d) => got.push(d.text));
    pusher.signin();
    return { pusher, got };
  };
  const ann = signedIn("ann");
  const bob = signedIn("bob");
  await eventually(() => ann.pusher.user.user_data?.id === "ann" && bob.pusher.user.user_data?.id === "bob");
  await eventually(async () => {
    await server.sendToUser("ann", "notice", { text: "for ann" });
    return ann.got.length > 0;
  });
  assert.deepEqual([...new Set(ann.got)], ["for ann"]);
  assert.deepEqual(bob.got, [], "only the user it was sent to");

  const errors = [];
  ann.pusher.connection.bind("error", (e) => errors.push(e.error?.data?.code ?? e.data?.code));
  const terminated = await server.terminateUserConnections("ann");
  assert.equal(terminated.status, 200);
  await eventually(() => errors.includes(4009));
  await eventually(() => ann.pusher.connection.state === "disconnected");
  assert.equal(bob.pusher.connection.state, "connected", "other users stay");

  const forged = client(t, port, {
    userAuthentication: { customHandler: (_p, callback) => callback(null, { auth: `${APP.key}:${"0".repeat(64)}`, user_data: '{"id":"eve"}' }) },
  });
  const closed = new Promise((resolve) => forged.connection.bind("error", resolve));
  forged.signin();
  await closed;
  await eventually(() => forged.connection.state === "disconnected");
});

test("cache channels replay their last event to each new subscriber, or tell it there is none", async (t) => {
  const { port, server } = await host(t);
  const cacheMiss = async (pusher, name) => {
    const channel = pusher.subscribe(name);
    return new Promise((resolve) => channel.bind("pusher:cache_miss", () => resolve(true)));
  };
  assert.equal(await cacheMiss(client(t, port), "cache-prices"), true, "nothing published yet");
  await server.trigger("cache-prices", "price", { v: 1 });
  await server.trigger("cache-prices", "price", { v: 2 });
  const late = client(t, port);
  const { events } = await subscribed(late, "cache-prices");
  await eventually(() => events.length === 1);
  assert.deepEqual(events, [["price", { v: 2 }]], "the last event, once");
  await server.trigger("cache-prices", "price", { v: 3 });
  await eventually(() => events.length === 2);
  assert.deepEqual(events[1], ["price", { v: 3 }], "then live events");
});

test("an unknown key is refused with Pusher's code 4001, and pusher-js does not retry", async (t) => {
  const { port } = await host(t);
  const pusher = client(t, port, {}, "not-a-key");
  const error = await new Promise((resolve) => pusher.connection.bind("error", resolve));
  assert.equal(error.error.data.code, 4001);
  assert.equal(error.error.data.message, "App key not-a-key not in this cluster");
  await eventually(() => pusher.connection.state === "failed" || pusher.connection.state === "disconnected");
});

/** A pusher-js client of `user` whose channels are signed by `endpoint`. */
function member(t, port, endpoint, user) {
  return client(t, port, { channelAuthorization: { endpoint, transport: "ajax", params: { user } } });
}

/** Subscribes `pusher` to presence channel `name`; the channel and the member events it sees. */
async function joined(pusher, name) {
  const channel = pusher.subscribe(name);
  const seen = [];
  channel.bind("pusher:member_added", (m) => seen.push(`+${m.id}:${m.info?.name}`));
  channel.bind("pusher:member_removed", (m) => seen.push(`-${m.id}`));
  await new Promise((resolve, reject) => {
    channel.bind("pusher:subscription_succeeded", resolve);
    channel.bind("pusher:subscription_error", reject);
  });
  return { channel, seen, ids: () => Object.keys(channel.members.members).sort() };
}

test("presence channels list their members and tell who comes and goes, once per user", async (t) => {
  const { port, server } = await host(t);
  const endpoint = await authEndpoint(t, server);
  const ann = await joined(member(t, port, endpoint, "ann"), "presence-room");
  assert.deepEqual(ann.ids(), ["ann"]);
  assert.equal(ann.channel.members.me.id, "ann");
  const bobClient = member(t, port, endpoint, "bob");
  const bob = await joined(bobClient, "presence-room");
  assert.deepEqual(bob.ids(), ["ann", "bob"]);
  assert.deepEqual(bob.channel.members.get("ann").info, { name: "ANN" });
  await eventually(() => ann.seen.length === 1);
  assert.deepEqual(ann.seen, ["+bob:BOB"]);
  assert.deepEqual(bob.seen, [], "no one is told of their own arrival");
  const triggered = await server.trigger("presence-room", "ping", {}, { info: "user_count,subscription_count" });
  assert.deepEqual(await triggered.json(), { channels: { "presence-room": { subscription_count: 2, user_count: 2 } } });
  const batch = await server.triggerBatch([
    { channel: "presence-room", name: "a", data: {}, info: "user_count" },
    { channel: "presence-room", name: "b", data: {} },
  ]);
  assert.deepEqual(await batch.json(), { batch: [{ user_count: 2 }, {}] });
  await assert.rejects(server.trigger("news", "x", {}, { info: "user_count" }), (e) => e.status === 400);
  const users = await server.get({ path: "/channels/presence-room/users" });
  assert.deepEqual(await users.json(), { users: [{ id: "ann" }, { id: "bob" }] });
  await assert.rejects(server.get({ path: "/channels/news/users" }), (e) => e.status === 400);

  // A second connection of ann is not a second member.
  const annAgain = member(t, port, endpoint, "ann");
  const second = await joined(annAgain, "presence-room");
  assert.deepEqual(second.ids(), ["ann", "bob"]);
  annAgain.disconnect();
  bobClient.disconnect();
  await eventually(() => ann.seen.length === 2);
  assert.deepEqual(ann.seen, ["+bob:BOB", "-bob"], "ann's second connection leaving removed no one");
  assert.deepEqual(ann.ids(), ["ann"]);

  const forged = client(t, port, {
    channelAuthorization: { customHandler: (_p, callback) => callback(null, { auth: `${APP.key}:${"0".repeat(64)}`, channel_data: '{"user_id":"eve"}' }) },
  });
  await assert.rejects(joined(forged, "presence-room"), (e) => e.type === "AuthError");
});

test("presence members are shared by two nodes over Redis, and a killed node's members are removed", async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.dispose());
  const broker = `[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:${redis.port}"\ntimeout = "2s"\nmax_backoff = "200ms"\nnode_timeout = "2s"\n`;
  const a = await host(t, broker);
  const b = await host(t, broker);
  const endpoint = await authEndpoint(t, a.server);
  const ann = await joined(member(t, a.port, endpoint, "ann"), "presence-room");
  const bob = await joined(member(t, b.port, endpoint, "bob"), "presence-room");
  assert.deepEqual(bob.ids(), ["ann", "bob"], "bob on node B sees ann of node A");
  await eventually(() => ann.seen.length === 1);
  assert.deepEqual(ann.seen, ["+bob:BOB"]);

  // The query routes answer for every node, whichever node is asked.
  const query = async (path, params) => (await a.server.get({ path, params })).json();
  assert.deepEqual(await query("/channels", { filter_by_prefix: "presence-", info: "user_count" }), {
    channels: { "presence-room": { user_count: 2 } },
  });
  assert.deepEqual(await query("/channels/presence-room", { info: "subscription_count,user_count" }), {
    occupied: true, subscription_count: 2, user_count: 2,
  });
  assert.deepEqual(await query("/channels/empty", {}), { occupied: false });
  await assert.rejects(a.server.get({ path: "/channels", params: { info: "user_count" } }), (e) => e.status === 400);

  // Events published on either node reach subscribers of both.
  const got = [];
  ann.channel.bind("note", (d) => got.push(`ann ${d.n}`));
  bob.channel.bind("note", (d) => got.push(`bob ${d.n}`));
  await b.server.trigger("presence-room", "note", { n: 1 });
  await eventually(() => got.length === 2);
  assert.deepEqual(got.sort(), ["ann 1", "bob 1"]);

  // A cache channel's last event is read from the shared history: published through node A,
  // replayed to a subscriber of node B.
  await a.server.trigger("cache-rate", "rate", { eur: 1.1 });
  const onB = await subscribed(client(t, b.port), "cache-rate");
  await eventually(() => onB.events.length === 1);
  assert.deepEqual(onB.events, [["rate", { eur: 1.1 }]]);

  await b.host.stop("SIGKILL");
  await eventually(() => ann.seen.length === 2);
  assert.deepEqual(ann.seen, ["+bob:BOB", "-bob"], "node A's sweep removed the killed node's member");
  assert.deepEqual(ann.ids(), ["ann"]);
  const carol = await joined(member(t, a.port, endpoint, "carol"), "presence-room");
  assert.deepEqual(carol.ids(), ["ann", "carol"], "no ghost of the killed node");
});

test("Laravel Echo listens, whispers and joins presence channels through notify", async (t) => {
  const { port, server } = await host(t, "", ", client_events = true");
  const endpoint = await authEndpoint(t, server);
  const echo = (user) => {
    const e = new Echo({
      broadcaster: "pusher", Pusher: PusherJs, key: APP.key, cluster: "local", wsHost: "127.0.0.1", wsPort: port,
      forceTLS: false, enabledTransports: ["ws"], disableStats: true, authEndpoint: endpoint,
      auth: { headers: {}, params: { user } },
    });
    t.after(() => e.disconnect());
    return e;
  };
  const ann = echo("ann");
  const seen = [];
  const subscribed = (channel) => new Promise((resolve) => channel.subscribed(resolve));
  await subscribed(ann.channel("orders").listen(".order.shipped", (e) => seen.push(`shipped ${e.id}`)));
  await subscribed(ann.private("chat").listenForWhisper("typing", (e) => seen.push(`typing ${e.who}`)));
  const here = new Promise((resolve) =>
    ann.join("room").here(resolve).joining((u) => seen.push(`joining ${u.name}`)).leaving((u) => seen.push(`leaving ${u.name}`)),
  );
  assert.deepEqual(await here, [{ name: "ANN" }]);

  await server.trigger("orders", "order.shipped", { id: 7 });
  await eventually(() => seen.includes("shipped 7"));

  const bob = echo("bob");
  const bobChat = bob.private("chat");
  await subscribed(bobChat);
  bobChat.whisper("typing", { who: "bob" });
  await eventually(() => seen.includes("typing bob"));
  const bobHere = new Promise((resolve) => bob.join("room").here(resolve));
  assert.deepEqual((await bobHere).map((u) => u.name).sort(), ["ANN", "BOB"]);
  await eventually(() => seen.includes("joining BOB"));
  bob.leave("room");
  await eventually(() => seen.includes("leaving BOB"));
  assert.deepEqual(seen, ["shipped 7", "typing bob", "joining BOB", "leaving BOB"]);
});

test("Pusher-format webhooks: each event type Pusher sends, signed so the official library verifies them", async (t) => {
  const received = [];
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      received.push({ headers: req.headers, rawBody: body });
      res.writeHead(200).end();
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    receiver.closeAllConnections();
    receiver.close();
  });
  const hook = `[[tenants.demo.webhooks]]\nurl = "http://127.0.0.1:${receiver.address().port}/pusher"\nformat = "pusher"\nbatch = { max_events = 1 }\n`;
  const port = await freePort();
  const h = await Host.start(`[server]
listen = "127.0.0.1:${port}"
[broker]
kind = "memory"
presence_debounce = "100ms"
[webhooks]
allow_private = true
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
pusher = { app_id = "${APP.appId}", key = "${APP.key}", secret = "${APP.secret}", client_events = true }
${hook}`);
  t.after(() => h.dispose());
  const server = new Pusher({ ...APP, host: "127.0.0.1", port: String(port), useTLS: false });
  const endpoint = await authEndpoint(t, server);
  const events = () =>
    received.flatMap((r) => {
      const webhook = server.webhook(r);
      assert.ok(webhook.isValid(), "signed with the app's key and secret");
      return webhook.getEvents();
    });
  const names = () => events().map((e) => `${e.name} ${e.channel}${e.user_id ? " " + e.user_id : ""}`);

  const ann = member(t, port, endpoint, "ann");
  const room = await joined(ann, "presence-room");
  await eventually(() => names().includes("member_added presence-room ann"));
  await eventually(() => names().includes("channel_occupied presence-room"));
  room.channel.trigger("client-wave", { hand: "left" });
  await eventually(() => events().some((e) => e.name === "client_event"));
  const wave = events().find((e) => e.name === "client_event");
  assert.deepEqual(
    { channel: wave.channel, event: wave.event, data: JSON.parse(wave.data), user_id: wave.user_id, socket_id: wave.socket_id },
    { channel: "presence-room", event: "client-wave", data: { hand: "left" }, user_id: "ann", socket_id: ann.connection.socket_id },
  );
  const cache = client(t, port).subscribe("cache-empty");
  await new Promise((resolve) => cache.bind("pusher:cache_miss", resolve));
  await eventually(() => names().includes("cache_miss cache-empty"));
  ann.unsubscribe("presence-room");
  await eventually(() => names().includes("member_removed presence-room ann"));
  await eventually(() => names().includes("channel_vacated presence-room"));
  assert.equal(typeof server.webhook(received[0]).getTime().getTime(), "number");
  const tampered = { ...received[0], rawBody: received[0].rawBody.replace("presence-room", "presence-roam") };
  assert.equal(server.webhook(tampered).isValid(), false, "a changed body does not verify");
});
