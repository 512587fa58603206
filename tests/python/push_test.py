"""Web Push against independent implementations: a loopback push service receives each
message, checks the VAPID `Authorization` header with PyJWT (ES256, `aud`, `exp`, `sub`) and
decrypts the body with `http_ece` (RFC 8291, aes128gcm) using the key pair a browser would
hold. First `notify-host push send` alone, then a host pushing published events to
registered devices: at once, or when unread after a delay (read cursors moved by acks over
WebSocket), a gone subscription removed, a hanging push service holding only its own
tenant's pushes, and two nodes over Redis of which the one that took the publish is killed
before the delay ends."""

import base64
import json
import os
import subprocess
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HOST_BIN, ROOT, STEP, Host, Process, free_port, tls_files, until  # noqa: E402

import asyncio  # noqa: E402
import ssl  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402

import websockets  # noqa: E402


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def notify(*args, env=None):
    return subprocess.run([HOST_BIN, "push", *args], capture_output=True, text=True, timeout=STEP,
                          env={**os.environ, **(env or {})})


class WebPushTest(unittest.TestCase):
    def setUp(self):
        # What a browser's PushManager.subscribe() makes: a P-256 key pair and an auth secret.
        self.browser_key = ec.generate_private_key(ec.SECP256R1())
        point = self.browser_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.p256dh, self.auth = b64(point), b64(os.urandom(16))
        keys = notify("vapid-keys")
        self.assertEqual(keys.returncode, 0, keys.stderr)
        self.vapid = json.loads(keys.stdout)

    def send(self, service, data, *extra):
        # `--flag=value`: a random base64url value may begin with `-`.
        return notify("send", f"--endpoint={service.origin}/push/sub-1", f"--p256dh={self.p256dh}",
                      f"--auth={self.auth}", "--contact=mailto:ops@example.com", f"--data={data}", *extra,
                      env={"NOTIFY_VAPID_PRIVATE_KEY": self.vapid["private_key"]})

    def test_a_message_decrypts_to_what_was_sent_with_a_valid_vapid_token(self):
        service = CheckingPushService()
        self.addCleanup(service.close)
        service.vapid_public = self.vapid["public_key"]
        data = json.dumps({"title": "Order shipped", "body": "Order 42 is on its way", "n": "é" * 100})
        sent = self.send(service, data, "--ttl", "120", "--urgency", "high", "--topic", "order-42")
        self.assertEqual((sent.returncode, sent.stdout.strip()), (0, "201"), sent.stderr)

        path, headers, body = service.received[0]
        self.assertEqual(service.errors, [], "the VAPID token (ES256, aud, exp, sub) and the content encoding")
        self.assertEqual(path, "/push/sub-1")
        self.assertEqual((headers["ttl"], headers["urgency"], headers["topic"]), ("120", "high", "order-42"))
        plain = http_ece.decrypt(body, private_key=self.browser_key, auth_secret=unb64(self.auth), version="aes128gcm")
        self.assertEqual(plain.decode(), data)

    def test_a_gone_subscription_and_bad_input_are_errors(self):
        service = CheckingPushService(statuses={"/push/sub-1": 410})
        self.addCleanup(service.close)
        gone = self.send(service, "{}")
        self.assertEqual((gone.returncode, gone.stdout.strip()), (1, "410"))
        self.assertIn("410", gone.stderr)
        too_big = self.send(service, "x" * 5000)
        self.assertEqual(too_big.returncode, 1)
        self.assertIn("at most 3993", too_big.stderr)
        self.p256dh = b64(b"\x04" + b"\x00" * 64)
        self.assertIn("p256dh", self.send(service, "{}").stderr)
        self.assertEqual(len(service.received), 1, "nothing sent for refused input")


ADMIN = "admin-token-0123456789"
PUBLISH_KEY = "demo-key"


class Browser:
    """What a browser's PushManager.subscribe() makes: a P-256 key pair and an auth secret,
    and the endpoint its push service gave it."""

    def __init__(self, service, name):
        self.key = ec.generate_private_key(ec.SECP256R1())
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.auth = os.urandom(16)
        self.path = f"/push/{name}"
        self.subscription = {"endpoint": service.origin + self.path, "expirationTime": None,
                             "keys": {"p256dh": b64(point), "auth": b64(self.auth)}}

    def decrypt(self, body):
        return json.loads(http_ece.decrypt(body, private_key=self.key, auth_secret=self.auth, version="aes128gcm"))


class CheckingPushService:
    """A push service that checks every message's VAPID token against `vapid_public` (when
    set) and keeps (path, headers, body) per message. `statuses` answers a path with another
    status than 201; a path in `hang` gets no answer until the service closes."""

    def __init__(self, statuses=None, hang=()):
        self.statuses, self.hang = statuses or {}, set(hang)
        self.received, self.errors, self.vapid_public = [], [], None
        self.released = threading.Event()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    service.check(headers)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    service.errors.append(repr(e))
                service.received.append((self.path, headers, body))
                if self.path in service.hang:
                    service.released.wait(STEP * 3)
                self.send_response(service.statuses.get(self.path, 201))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def check(self, headers):
        scheme, _, params = headers["authorization"].partition(" ")
        assert scheme == "vapid", scheme
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        if self.vapid_public is not None:
            assert fields["k"] == self.vapid_public, "signed with another key than the tenant's"
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(fields["k"]))
        claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=self.origin)
        assert claims["exp"] <= time.time() + 24 * 3600, claims
        assert claims["sub"] == "mailto:ops@example.com", claims
        assert headers["content-encoding"] == "aes128gcm"

    def to(self, browser):
        return [(h, b) for path, h, b in self.received if path == browser.path]

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def http(port, method, path, body=None, key=PUBLISH_KEY, origin=None):
    """(status, JSON answer or None) of a request to the host."""
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    if origin:
        headers["origin"] = origin
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=STEP) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def metrics_text(port):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(request, timeout=STEP) as r:
        return r.read().decode()


def metric(port, name, tenant="demo"):
    """The sum of metric `name`'s samples for `tenant`."""
    total = 0
    for line in metrics_text(port).splitlines():
        if line.startswith(name + "{") and f'tenant="{tenant}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def vapid_keys():
    keys = notify("vapid-keys")
    assert keys.returncode == 0, keys.stderr
    return json.loads(keys.stdout)


def push_tenant(vapid, when="unread_after", delay="1s", keys=""):
    return (f'history = {{ size = 100, acks = true }}\n{keys}[tenants.demo.push]\nwhen = "{when}"\ndelay = "{delay}"\n'
            f'[tenants.demo.push.web]\nvapid_private_key = "{vapid["private_key"]}"\ncontact = "mailto:ops@example.com"\n')


HOOK_SECRET = "whsec_" + base64.b64encode(b"push-failed-webhook-secret-0123").decode()


class Hooks:
    """A webhook endpoint that keeps every event it receives."""

    def __init__(self):
        self.events = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                hooks.events.extend(body["data"]["events"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class EscalationTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.service = CheckingPushService(statuses={"/push/gone": 410}, hang={"/push/hung"})
        self.addCleanup(self.service.close)
        self.vapid = vapid_keys()
        self.service.vapid_public = self.vapid["public_key"]
        self.hooks = Hooks()
        self.addCleanup(self.hooks.close)
        hook = (f'webhooks = [{{ url = "{self.hooks.url}", secret = "{HOOK_SECRET}", events = ["push.failed"], '
                f'batch = {{ max_events = 1, max_wait = "10ms" }} }}]\n')
        extra = (f'admin_token = "{ADMIN}"\n[push]\nallow_private = true\ntimeout = "60s"\nconcurrency = 1\n'
                 '[webhooks]\nallow_private = true\n')
        other = f'[tenants.other]\npublish_key = "other-key"\nauth = {{ mode = "insecure" }}\n' + push_tenant(
            vapid_keys(), when="always").replace("tenants.demo", "tenants.other")
        other += '[tenants.plain]\npublish_key = "plain-key"\n'
        self.host = Host(self, extra=extra, tenant_extra=push_tenant(self.vapid, keys=hook) + other)
        await self.host.ready()
        self.port = self.host.port

    def register(self, user, browser, key=PUBLISH_KEY):
        status, device = http(self.port, "POST", f"/v1/users/{user}/devices",
                              {"platform": "web", "subscription": browser.subscription, "label": "test"}, key=key)
        self.assertEqual(status, 200, device)
        return device

    def publish(self, body, key=PUBLISH_KEY):
        status, answer = http(self.port, "POST", "/v1/publish", body, key=key)
        self.assertEqual(status, 202, answer)
        return answer["id"]

    def devices(self, user):
        status, answer = http(self.port, "GET", f"/v1/users/{user}/devices")
        self.assertEqual(status, 200, answer)
        return [d["id"] for d in answer["devices"]]

    async def test_a_published_event_reaches_the_browser_encrypted_and_signed(self):
        status, key = http(self.port, "GET", "/v1/push/demo/web", key=None)
        self.assertEqual((status, key), (200, {"vapid_public_key": self.vapid["public_key"]}))
        ann = Browser(self.service, "ann")
        device = self.register("ann", ann)
        self.assertEqual(self.devices("ann"), [device["id"]])
        self.assertEqual(self.register("ann", ann)["id"], device["id"], "registering again replaces")
        self.assertEqual(self.devices("ann"), [device["id"]])
        data = {"order": 42, "status": "shipped", "note": "é" * 50}
        id = self.publish({"users": ["ann"], "event": "order.shipped", "data": data, "push": {
            "when": "always", "title": "Order shipped", "body": "Order 42 is on its way",
            "url": "https://shop.example/orders/42", "collapse_key": "order-42", "ttl": "2m", "urgency": "high"}})
        headers, body = (await until(lambda: self.service.to(ann)))[0]
        self.assertEqual(self.service.errors, [])
        self.assertEqual((headers["ttl"], headers["urgency"], headers["topic"]), ("120", "high", "order-42"))
        shown = ann.decrypt(body)
        self.assertEqual((shown["id"], shown["event"], shown["data"]), (id, "order.shipped", data))
        self.assertEqual((shown["title"], shown["body"], shown["url"], shown["tag"]),
                         ("Order shipped", "Order 42 is on its way", "https://shop.example/orders/42", "order-42"))
        await until(lambda: metric(self.port, "notify_push_sent_total") == 1)

    async def test_a_client_registers_and_removes_its_own_device(self):
        bob = Browser(self.service, "bob")
        path = "/v1/push/demo/devices?user=bob"
        status, device = http(self.port, "POST", path, {"platform": "web", "subscription": bob.subscription},
                              key=None, origin="https://app.example")
        self.assertEqual(status, 200, device)
        self.assertEqual(self.devices("bob"), [device["id"]])
        status, answer = http(self.port, "POST", path, {"platform": "web", "subscription": {"endpoint": "ftp://x"}},
                              key=None)
        self.assertEqual((status, answer["error"]["code"]), (400, "invalid_field"), answer)
        status, answer = http(self.port, "POST", "/v1/push/demo/devices", {"platform": "fcm", "token": "t" * 40},
                              key=None)
        self.assertEqual(status, 401, answer)
        status, _ = http(self.port, "DELETE", f"/v1/push/demo/devices/{device['id']}?user=mallory", key=None)
        self.assertEqual(status, 404, "another user cannot remove it")
        status, _ = http(self.port, "DELETE", f"/v1/push/demo/devices/{device['id']}?user=bob", key=None)
        self.assertEqual(status, 204)
        self.assertEqual(self.devices("bob"), [])
        for n in range(10):
            self.register("bob", Browser(self.service, f"bob-{n}"))
        status, answer = http(self.port, "POST", "/v1/users/bob/devices",
                              {"platform": "web", "subscription": Browser(self.service, "bob-x").subscription})
        self.assertEqual((status, answer["error"]["code"]), (409, "too_many_devices"), answer)
        status, answer = http(self.port, "POST", "/v1/publish",
                              {"users": ["bob"], "event": "e", "push": {"when": "unread_after"}}, key="plain-key")
        self.assertEqual((status, answer["error"]["field"]), (400, "push.when"), "a tenant without read cursors")
        status, answer = http(self.port, "POST", "/v1/publish", {"users": ["bob"], "event": "e", "push": {"ttl": "30d"}})
        self.assertEqual((status, answer["error"]["field"]), (400, "push.ttl"), answer)

    async def test_only_what_stays_unread_is_pushed(self):
        reader, idler, absent = (Browser(self.service, n) for n in ("reader", "idler", "absent"))
        for user, browser in (("reader", reader), ("idler", idler), ("absent", absent)):
            self.register(user, browser)
        base = f"ws://127.0.0.1:{self.port}/v1/ws/demo"
        async with websockets.connect(f"{base}?user=reader", open_timeout=STEP) as reading, \
                websockets.connect(f"{base}?user=idler", open_timeout=STEP) as idling:
            for ws in (reading, idling):
                self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), STEP))["type"], "welcome")
            # The reader's delay leaves ample time for its ack.
            self.publish({"users": ["reader"], "event": "note", "data": {}, "push": {"delay": "4s"}})
            self.publish({"users": ["idler", "absent"], "event": "note", "data": {"n": 1}})
            event = json.loads(await asyncio.wait_for(reading.recv(), STEP))
            await reading.send(json.dumps({"type": "ack", "epoch": event["epoch"], "offset": event["offset"]}))
            self.assertEqual(json.loads(await asyncio.wait_for(reading.recv(), STEP))["type"], "acked")
            self.assertEqual(json.loads(await asyncio.wait_for(idling.recv(), STEP))["type"], "event")
            await until(lambda: self.service.to(idler) and self.service.to(absent))
            await until(lambda: metric(self.port, "notify_push_cancelled_total") == 1)
        self.assertEqual(self.service.to(reader), [], "read in time: not pushed")
        self.assertEqual((len(self.service.to(idler)), len(self.service.to(absent))), (1, 1))
        self.assertEqual(idler.decrypt(self.service.to(idler)[0][1])["data"], {"n": 1})
        self.assertEqual(self.service.errors, [])

    async def test_a_gone_subscription_is_removed_and_the_others_kept(self):
        gone, kept = Browser(self.service, "gone"), Browser(self.service, "kept")
        gone_id, kept_id = self.register("gus", gone)["id"], self.register("gus", kept)["id"]
        self.assertEqual(sorted(self.devices("gus")), sorted([gone_id, kept_id]))
        self.publish({"users": ["gus"], "event": "note", "push": {"when": "always"}})
        await until(lambda: self.devices("gus") == [kept_id] and self.service.to(kept))
        self.assertEqual(len(self.service.to(kept)), 1)
        self.assertEqual(metric(self.port, "notify_push_devices_removed_total"), 1)
        told = (await until(lambda: self.hooks.events))[0]
        self.assertEqual(told["type"], "push.failed")
        self.assertEqual({k: told["data"][k] for k in ("user", "device", "platform", "reason", "device_removed")},
                         {"user": "gus", "device": gone_id, "platform": "web", "reason": "gone", "device_removed": True})

    async def test_a_hanging_push_service_holds_up_neither_delivery_nor_other_tenants(self):
        hung, other = Browser(self.service, "hung"), Browser(self.service, "other")
        self.register("hal", hung)
        self.register("olga", other, key="other-key")
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/v1/ws/demo?user=hal", open_timeout=STEP) as ws:
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), STEP))["type"], "welcome")
            self.publish({"users": ["hal"], "event": "first", "push": {"when": "always"}})
            await until(lambda: self.service.to(hung))
            # The demo tenant's one push permit is held by the hanging request.
            self.publish({"users": ["hal"], "event": "second", "push": {"when": "always"}})
            names = [json.loads(await asyncio.wait_for(ws.recv(), STEP))["event"] for _ in range(2)]
            self.assertEqual(names, ["first", "second"])
            self.publish({"users": ["olga"], "event": "elsewhere"}, key="other-key")
            await until(lambda: self.service.to(other))
            self.assertEqual(len(self.service.to(hung)), 1, "the second waits for the tenant's permit")
        self.service.released.set()
        await until(lambda: len(self.service.to(hung)) == 2)


    async def test_a_push_read_after_it_went_is_withdrawn(self):
        wes = Browser(self.service, "wes")
        self.register("wes", wes)
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/v1/ws/demo?user=wes", open_timeout=STEP) as ws:
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), STEP))["type"], "welcome")
            id = self.publish({"users": ["wes"], "event": "note", "push": {"when": "always", "collapse_key": "c-1"}})
            first = (await until(lambda: self.service.to(wes)))[0]
            self.assertEqual(wes.decrypt(first[1])["type"], "notification")
            event = json.loads(await asyncio.wait_for(ws.recv(), STEP))
            await ws.send(json.dumps({"type": "ack", "epoch": event["epoch"], "offset": event["offset"]}))
            headers, body = (await until(lambda: self.service.to(wes)[1:]))[0]
        self.assertEqual(wes.decrypt(body), {"type": "withdraw", "id": id, "tag": "c-1"})
        self.assertEqual(headers["topic"], "c-1", "replaces the push where the push service still holds it")
        await until(lambda: metric(self.port, "notify_push_withdrawn_total") == 1)
        self.assertEqual(self.service.errors, [])

    async def test_the_hourly_cap_drops_what_is_over_it(self):
        cap = Browser(self.service, "cap")
        self.register("cap", cap)
        status, kept = http(self.port, "PUT", "/v1/users/cap/push", {"max_per_hour": 2})
        self.assertEqual((status, kept), (200, {"max_per_hour": 2}))
        for n in range(3):
            self.publish({"users": ["cap"], "event": f"n{n}", "push": {"when": "always"}})
        await until(lambda: 'reason="capped"} 1' in metrics_text(self.port))
        await until(lambda: metric(self.port, "notify_push_sent_total") == 2)
        self.assertEqual(len(self.service.to(cap)), 2)

    async def test_quiet_hours_put_a_push_off_to_their_end(self):
        quinn = Browser(self.service, "quinn")
        self.register("quinn", quinn)
        now = time.gmtime()
        start = time.strftime("%H:%M", time.gmtime(time.time() - 3600))
        end = time.strftime("%H:%M", time.gmtime(time.time() + 60 - now.tm_sec))
        preferences = {"time_zone": "UTC", "quiet_hours": {"start": start, "end": end}}
        status, kept = http(self.port, "PUT", "/v1/push/demo/preferences?user=quinn", preferences, key=None)
        self.assertEqual((status, kept), (200, preferences))
        self.assertEqual(http(self.port, "GET", "/v1/users/quinn/push"), (200, preferences))
        status, answer = http(self.port, "PUT", "/v1/users/quinn/push", {"time_zone": "Mars/Olympus"})
        self.assertEqual((status, answer["error"]["field"]), (400, "time_zone"))
        self.publish({"users": ["quinn"], "event": "late", "push": {"when": "always"}})
        await until(lambda: metric(self.port, "notify_push_deferred_total") == 1)
        self.assertEqual(self.service.to(quinn), [], "held in the quiet hours")
        # The quiet hours end at the next minute.
        await until(lambda: self.service.to(quinn), seconds=90)
        self.assertEqual(quinn.decrypt(self.service.to(quinn)[0][1])["event"], "late")


class ClusterEscalationTest(unittest.IsolatedAsyncioTestCase):
    async def test_a_node_killed_during_the_delay_leaves_the_push_to_a_survivor_once(self):
        service = CheckingPushService()
        self.addCleanup(service.close)
        vapid = vapid_keys()
        service.vapid_public = vapid["public_key"]
        redis_port = free_port()
        Process(self, ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                       "--appendonly", "no"])
        extra = (f'admin_token = "{ADMIN}"\n[push]\nallow_private = true\n'
                 f'[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:{redis_port}"\n')
        first, second = (Host(self, extra=extra, tenant_extra=push_tenant(vapid, delay="3s")) for _ in range(2))
        for host in (first, second):
            await host.ready()
        zoe, sentinel = Browser(service, "zoe"), Browser(service, "sentinel")
        for user, browser in (("zoe", zoe), ("sam", sentinel)):
            status, answer = http(first.port, "POST", f"/v1/users/{user}/devices",
                                  {"platform": "web", "subscription": browser.subscription})
            self.assertEqual(status, 200, answer)
        status, answer = http(second.port, "GET", "/v1/users/zoe/devices")
        self.assertEqual((status, len(answer["devices"])), (200, 1), "devices are shared through Redis")
        status, answer = http(first.port, "POST", "/v1/publish", {"users": ["zoe"], "event": "late", "data": {"k": 1}})
        self.assertEqual(status, 202, answer)
        first.stop()
        received = await until(lambda: service.to(zoe))
        self.assertEqual(zoe.decrypt(received[0][1])["data"], {"k": 1})
        status, _ = http(second.port, "POST", "/v1/publish", {"users": ["sam"], "event": "after", "push": {"when": "always"}})
        self.assertEqual(status, 202)
        await until(lambda: service.to(sentinel))
        self.assertEqual(len(service.to(zoe)), 1, "pushed once")

        # Read on the survivor after it was pushed: withdrawn, through the sent pushes in Redis.
        async with websockets.connect(f"ws://127.0.0.1:{second.port}/v1/ws/demo?user=zoe", open_timeout=STEP) as ws:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), STEP)) for _ in range(2)]
            event = next(f for f in frames if f["type"] == "event")
            await ws.send(json.dumps({"type": "ack", "epoch": event["epoch"], "offset": event["offset"]}))
            withdrawal = (await until(lambda: service.to(zoe)[1:]))[0]
        self.assertEqual(zoe.decrypt(withdrawal[1])["type"], "withdraw")

        # Preferences and the hourly cap live in Redis too.
        self.assertEqual(http(survivor := second.port, "PUT", "/v1/users/sam/push", {"max_per_hour": 1}),
                         (200, {"max_per_hour": 1}))
        for name in ("within", "over"):
            status, _ = http(survivor, "POST", "/v1/publish", {"users": ["sam"], "event": name, "push": {"when": "always"}})
            self.assertEqual(status, 202)
        await until(lambda: 'reason="capped"} 1' in metrics_text(second.port))
        await until(lambda: len(service.to(sentinel)) == 2)
        self.assertIn(sentinel.decrypt(service.to(sentinel)[1][1])["event"], ("within", "over"), "one of the two")
        self.assertEqual(service.errors, [])


def plugin_path(name):
    """A compiled example plugin (scripts/build-plugins.sh builds them)."""
    target = os.path.join(ROOT, "plugins", "target")
    for folder in ("wasm32-wasip2/release", "components"):
        path = os.path.join(target, folder, f"{name}.wasm")
        if os.path.exists(path):
            return os.path.abspath(path)
    raise AssertionError(f"{name}.wasm is missing: run scripts/build-plugins.sh")


class PluginPushTest(unittest.IsolatedAsyncioTestCase):
    """A tenant's transform plugin sets the event's push (WIT 0.2.0), in each plugin
    language; one built against WIT 0.1.0 cannot see it and keeps the publisher's."""

    # tenant: (plugin, its config, the tenant's push.when)
    PLUGINS = {
        "rs": ("push_alert", '{ unread_after_ms = "500" }', "never"),
        "js": ("redact_js", '{ fields = "secret", push_title_field = "headline" }', "always"),
        "py": ("redact_py", '{ fields = "secret", push_title_field = "headline" }', "always"),
        "old": ("legacy_v0_1", "{}", "always"),
    }

    async def asyncSetUp(self):
        self.service = CheckingPushService()
        self.addCleanup(self.service.close)
        vapid = vapid_keys()
        self.service.vapid_public = vapid["public_key"]
        tenants = ""
        for tenant, (plugin, config, when) in self.PLUGINS.items():
            tenants += f'[tenants.{tenant}]\npublish_key = "{tenant}-publish-key"\n'
            tenants += push_tenant(vapid, when=when).replace("tenants.demo", f"tenants.{tenant}")
            tenants += f'[tenants.{tenant}.plugins.transform]\npath = "{plugin_path(plugin)}"\nconfig = {config}\n'
        # Generous deadlines: a debug build on a busy machine; these tests are not about speed.
        extra = f'admin_token = "{ADMIN}"\n[push]\nallow_private = true\n[plugins]\nhook_deadline = "250ms"\n' + tenants
        self.host = Host(self, extra=extra)
        # A debug build compiles the JavaScript and Python components (12-18 MB each) slowly.
        await self.host.ready(seconds=STEP * 6)

    def publish(self, tenant, data, push=None, user="ann"):
        """Registers a browser of `user` with `tenant`, publishes an event with `data` (and the
        publisher's `push`) to `user`; the browser."""
        browser = Browser(self.service, f"{tenant}-{uuid.uuid4().hex}")
        key = f"{tenant}-publish-key"
        status, answer = http(self.host.port, "POST", f"/v1/users/{user}/devices",
                              {"platform": "web", "subscription": browser.subscription}, key=key)
        self.assertEqual(status, 200, answer)
        body = {"users": [user], "event": "order.shipped", "data": data}
        if push:
            body["push"] = push
        status, answer = http(self.host.port, "POST", "/v1/publish", body, key=key)
        self.assertEqual(status, 202, answer)
        return browser

    async def shown(self, browser):
        return browser.decrypt((await until(lambda: self.service.to(browser)))[0][1])

    async def test_each_language_sets_the_push_and_a_0_1_plugin_keeps_the_publishers(self):
        # One test: the host takes long to start (see asyncSetUp).
        shown = await self.shown(self.publish("js", {"headline": "From JavaScript", "secret": 1}))
        self.assertEqual((shown["title"], shown["data"]),
                         ("From JavaScript", {"headline": "From JavaScript", "redacted": True}))
        shown = await self.shown(self.publish("py", {"headline": "From Python", "secret": 1}, push={"body": "kept"}))
        self.assertEqual((shown["title"], shown["body"]), ("From Python", "kept"), "the publisher's body stays")
        shown = await self.shown(self.publish("old", {"n": 1}, push={"title": "From the publisher"}))
        self.assertEqual((shown["title"], shown["data"]), ("From the publisher", {"legacy": True, "n": 1}))

        # Rust: the tenant never pushes; push-alert asks for a push when unread after 500 ms.
        # First a title over 256 characters: not a push the publish body could carry, so the
        # call fails, fails again when retried, and the default policy (retry) drops the event.
        ignored = self.publish("rs", {"title": "x" * 300}, user="ida")
        await until(lambda: metric(self.host.port, "notify_plugin_dropped_total", tenant="rs") == 1)
        self.assertEqual(metric(self.host.port, "notify_plugin_failures_total", tenant="rs"), 2)
        browser = self.publish("rs", {"title": "Shipped", "body": "Order 42", "url": "https://shop.example/42"})
        shown = await self.shown(browser)
        self.assertEqual((shown["title"], shown["body"], shown["url"], shown["tag"]),
                         ("Shipped", "Order 42", "https://shop.example/42", "order-shipped"))
        self.assertEqual(metric(self.host.port, "notify_push_scheduled_total", tenant="rs"), 1)
        self.assertEqual(self.service.to(ignored), [])
        self.assertEqual(self.service.errors, [])

class FakeGoogle:
    """Google's OAuth token endpoint and FCM's `messages:send` on one loopback server, each
    checking requests as Google documents them: the JWT-bearer grant (RFC 7523) signed with
    the service account's key, verified with PyJWT; the access token on every send; the
    message's shape. A registration token `gone-token-0123456789` is UNREGISTERED; `reject_once` makes
    the next send answer 401 whatever its token."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens, self.messages, self.errors = [], [], []
        self.reject_once = False
        google = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    status, answer = google.answer(self.path, dict((k.lower(), v) for k, v in self.headers.items()), body)
                except Exception as e:  # noqa: BLE001 - reported by the test
                    google.errors.append(repr(e))
                    status, answer = 400, {"error": {"code": 400, "message": repr(e)}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        pem = self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        self.account = {"type": "service_account", "project_id": "shop-app", "private_key_id": "k-1",
                        "private_key": pem, "client_email": "notify@shop-app.iam.gserviceaccount.com",
                        "client_id": "1", "token_uri": f"{self.origin}/token"}

    def answer(self, path, headers, body):
        if path == "/token":
            assert headers["content-type"] == "application/x-www-form-urlencoded", headers
            form = dict(urllib.parse.parse_qsl(body.decode()))
            assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer", form
            assert jwt.get_unverified_header(form["assertion"])["kid"] == "k-1"
            claims = jwt.decode(form["assertion"], self.key.public_key(), algorithms=["RS256"],
                                audience=self.account["token_uri"], issuer=self.account["client_email"])
            assert claims["scope"] == "https://www.googleapis.com/auth/firebase.messaging", claims
            assert claims["exp"] - claims["iat"] <= 3600, claims
            self.tokens.append(f"ya29.test-{len(self.tokens)}")
            return 200, {"access_token": self.tokens[-1], "expires_in": 3599, "token_type": "Bearer"}
        assert path == "/v1/projects/shop-app/messages:send", path
        assert headers["authorization"] == f"Bearer {self.tokens[-1]}", headers["authorization"]
        if self.reject_once:
            self.reject_once = False
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        message = json.loads(body)["message"]
        assert all(isinstance(v, str) for v in message["data"].values()), message["data"]
        assert message["android"]["ttl"].endswith("s") and message["android"]["priority"] in ("HIGH", "NORMAL")
        self.messages.append(message)
        if message["token"] == "gone-token-0123456789":
            return 404, {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}
        return 200, {"name": f"projects/shop-app/messages/{len(self.messages)}"}

    def to(self, token):
        return [m for m in self.messages if m["token"] == token]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FcmTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.google = FakeGoogle()
        self.addCleanup(self.google.close)
        self.host = Host(self, extra=f'admin_token = "{ADMIN}"\n')
        await self.host.ready()
        self.port = self.host.port
        status, tenant = http(self.port, "POST", "/v1/admin/tenants", {
            "id": "shop", "auth": {"mode": "insecure"}, "history": {"size": 100, "acks": True},
            "push": {"when": "always"}}, key=ADMIN)
        self.assertEqual(status, 201, tenant)
        self.key = tenant["publish_key"]
        status, project = http(self.port, "PUT", "/v1/admin/tenants/shop/push/fcm",
                               {"service_account": self.google.account, "base_url": self.google.origin}, key=ADMIN)
        self.assertEqual(status, 200, project)
        self.assertEqual((project["project_id"], project["client_email"]), ("shop-app", self.google.account["client_email"]))

    def register(self, user, token):
        status, device = http(self.port, "POST", f"/v1/users/{user}/devices", {"platform": "fcm", "token": token},
                              key=self.key)
        self.assertEqual(status, 200, device)
        return device["id"]

    async def test_messages_reach_fcm_with_one_cached_token_and_gone_tokens_are_removed(self):
        status, view = http(self.port, "GET", "/v1/admin/tenants/shop", key=ADMIN)
        self.assertNotIn("PRIVATE KEY", json.dumps(view), "the key is never shown")
        self.assertEqual(view["push"]["fcm"]["project_id"], "shop-app")
        phone, tablet = "a" * 40 + ":APA91b-phone", "b" * 40 + ":APA91b-tablet"
        for token in (phone, tablet):
            self.register("ann", token)
        gone = self.register("ann", "gone-token-0123456789")
        status, answer = http(self.port, "POST", "/v1/publish", {
            "users": ["ann"], "event": "order.shipped", "data": {"order": 42},
            "push": {"title": "Order shipped", "body": "On its way", "collapse_key": "order-42", "ttl": "2m",
                     "urgency": "high", "url": "https://shop.example/o/42"}}, key=self.key)
        self.assertEqual(status, 202, answer)
        await until(lambda: self.google.to(phone) and self.google.to(tablet) and self.google.to("gone-token-0123456789"))
        message = self.google.to(phone)[0]
        self.assertEqual(message["notification"], {"title": "Order shipped", "body": "On its way"})
        self.assertEqual((message["android"]["collapse_key"], message["android"]["ttl"], message["android"]["priority"]),
                         ("order-42", "120s", "HIGH"))
        self.assertEqual((message["data"]["id"], message["data"]["event"], json.loads(message["data"]["data"])),
                         (answer["id"], "order.shipped", {"order": 42}))
        self.assertEqual(message["data"]["url"], "https://shop.example/o/42")
        self.assertEqual(len(self.google.tokens), 1, "one access token for every send")
        await until(lambda: gone not in [d["id"] for d in http(self.port, "GET", "/v1/users/ann/devices", key=self.key)[1]["devices"]])
        self.assertEqual(self.google.errors, [])

    async def test_a_refused_access_token_is_replaced_once(self):
        token = "c" * 40 + ":APA91b-watch"
        self.register("bob", token)
        status, _ = http(self.port, "POST", "/v1/publish", {"users": ["bob"], "event": "first"}, key=self.key)
        await until(lambda: self.google.to(token))
        self.google.reject_once = True
        status, _ = http(self.port, "POST", "/v1/publish", {"users": ["bob"], "event": "second"}, key=self.key)
        await until(lambda: len(self.google.to(token)) == 2)
        self.assertEqual(len(self.google.tokens), 2, "a 401 fetches a new token")
        self.assertEqual(self.google.to(token)[1]["data"]["event"], "second")
        self.assertEqual(self.google.errors, [])


class FakeApns:
    """APNs on loopback: HTTP/2 over TLS with ALPN `h2` (the `h2` library's server side),
    checking every request as Apple documents it: `POST /3/device/<token>`, the ES256
    provider token (verified with PyJWT: `kid`, `iss`, a recent `iat`), `apns-topic`,
    `apns-push-type`, `apns-priority`, `apns-expiration`, `apns-collapse-id` and a JSON body
    of at most 4 KiB. Answers 410 `Unregistered` for GONE; `expire_once` answers the next
    request 403 `ExpiredProviderToken`."""

    GONE = "dead" * 16

    def __init__(self, tls, team, key_id, topic, public_key):
        self.team, self.key_id, self.topic, self.public_key = team, key_id, topic, public_key
        self.requests, self.errors, self.connections = [], [], 0
        self.expire_once = False
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls["cert.pem"], tls["key.pem"])
        context.set_alpn_protocols(["h2"])
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        start = asyncio.start_server(self.connection, "127.0.0.1", 0, ssl=context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(STEP)
        self.port = self.server.sockets[0].getsockname()[1]

    async def connection(self, reader, writer):
        try:
            await self.serve_connection(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def serve_connection(self, reader, writer):
        self.connections += 1
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams = {}
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = (dict(event.headers), bytearray())
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id][1].extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    headers, body = streams.pop(event.stream_id)
                    status, answer = self.answer(headers, bytes(body))
                    data = json.dumps(answer).encode() if answer else b""
                    conn.send_headers(event.stream_id, [(":status", str(status)), ("apns-id", str(uuid.uuid4())),
                                                        ("content-length", str(len(data)))], end_stream=not data)
                    if data:
                        conn.send_data(event.stream_id, data, end_stream=True)
            writer.write(conn.data_to_send())
            await writer.drain()

    def answer(self, headers, body):
        try:
            assert (headers[":method"], headers[":scheme"]) == ("POST", "https"), headers
            assert headers[":path"].startswith("/3/device/"), headers[":path"]
            token = headers[":path"].removeprefix("/3/device/")
            scheme, _, bearer = headers["authorization"].partition(" ")
            assert scheme == "bearer", scheme
            header = jwt.get_unverified_header(bearer)
            assert (header["alg"], header["kid"]) == ("ES256", self.key_id), header
            claims = jwt.decode(bearer, self.public_key, algorithms=["ES256"], issuer=self.team,
                                options={"require": ["iss", "iat"]})
            assert abs(claims["iat"] - time.time()) < 3600, claims
            assert headers["apns-topic"] == self.topic, headers
            assert headers["apns-push-type"] in ("alert", "background"), headers
            assert headers["apns-priority"] in ("10", "5"), headers
            assert int(headers["apns-expiration"]) > time.time(), headers
            assert len(body) <= 4096, len(body)
            payload = json.loads(body)
            assert "aps" in payload, payload
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(e))
            return 400, {"reason": "BadRequest"}
        self.requests.append((token, headers, payload))
        if self.expire_once:
            self.expire_once = False
            return 403, {"reason": "ExpiredProviderToken"}
        if token == self.GONE:
            return 410, {"reason": "Unregistered", "timestamp": int(time.time() * 1000)}
        return 200, None

    def to(self, token):
        return [(h, p) for t, h, p in self.requests if t == token]

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)


class ApnsTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        tls = tls_files(folder.name)
        key = ec.generate_private_key(ec.SECP256R1())
        p8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()
        self.apple = FakeApns(tls, "TEAM123456", "KEY1234567", "com.example.shop", key.public_key())
        self.addCleanup(self.apple.close)
        self.host = Host(self, extra=f'admin_token = "{ADMIN}"\n', env={"SSL_CERT_FILE": tls["ca.pem"]})
        await self.host.ready()
        self.port = self.host.port
        status, tenant = http(self.port, "POST", "/v1/admin/tenants", {
            "id": "shop", "auth": {"mode": "insecure"}, "history": {"size": 100, "acks": True},
            "push": {"when": "always"}}, key=ADMIN)
        self.assertEqual(status, 201, tenant)
        self.key = tenant["publish_key"]
        credentials = {"team_id": "TEAM123456", "key_id": "KEY1234567", "private_key": p8,
                       "topic": "com.example.shop", "base_url": f"https://localhost:{self.apple.port}"}
        status, view = http(self.port, "PUT", "/v1/admin/tenants/shop/push/apns", credentials, key=ADMIN)
        self.assertEqual((status, view["team_id"], view["topic"]), (200, "TEAM123456", "com.example.shop"), view)
        self.assertNotIn("PRIVATE KEY", json.dumps(http(self.port, "GET", "/v1/admin/tenants/shop", key=ADMIN)[1]))

    def register(self, user, token):
        status, device = http(self.port, "POST", f"/v1/users/{user}/devices", {"platform": "apns", "token": token},
                              key=self.key)
        self.assertEqual(status, 200, device)
        return device["id"]

    async def test_notifications_reach_apns_over_one_http2_connection_and_gone_tokens_are_removed(self):
        phone, pad = "a1" * 32, "b2" * 32
        for token in (phone, pad):
            self.register("ann", token)
        gone = self.register("ann", FakeApns.GONE)
        for n in range(2):
            status, answer = http(self.port, "POST", "/v1/publish", {
                "users": ["ann"], "event": "order.shipped", "data": {"order": n},
                "push": {"title": "Order shipped", "body": "On its way", "collapse_key": f"order-{n}", "ttl": "2m",
                         "urgency": "high", "url": "https://shop.example/o/1"}}, key=self.key)
            self.assertEqual(status, 202, answer)
        await until(lambda: len(self.apple.to(phone)) == 2 and len(self.apple.to(pad)) == 2)
        # The two events' pushes may go in either order.
        headers, payload = next((h, p) for h, p in self.apple.to(phone) if h["apns-collapse-id"] == "order-0")
        self.assertEqual((headers["apns-push-type"], headers["apns-priority"], headers["apns-collapse-id"]),
                         ("alert", "10", "order-0"))
        self.assertLessEqual(int(headers["apns-expiration"]), time.time() + 121)
        self.assertEqual(payload["aps"]["alert"], {"title": "Order shipped", "body": "On its way"})
        self.assertEqual((payload["event"], payload["data"], payload["url"]),
                         ("order.shipped", {"order": 0}, "https://shop.example/o/1"))
        self.assertEqual(self.apple.connections, 1, "every push shares one HTTP/2 connection")
        devices = lambda: [d["id"] for d in http(self.port, "GET", "/v1/users/ann/devices", key=self.key)[1]["devices"]]  # noqa: E731
        await until(lambda: gone not in devices())
        self.assertEqual(self.apple.errors, [])

    async def test_an_expired_provider_token_is_replaced_and_a_read_push_withdrawn(self):
        watch = "c3" * 32
        self.register("bob", watch)
        self.apple.expire_once = True
        async with websockets.connect(f"ws://127.0.0.1:{self.port}/v1/ws/shop?user=bob", open_timeout=STEP) as ws:
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), STEP))["type"], "welcome")
            status, _ = http(self.port, "POST", "/v1/publish",
                             {"users": ["bob"], "event": "note", "push": {"collapse_key": "n-1"}}, key=self.key)
            self.assertEqual(status, 202)
            await until(lambda: len(self.apple.to(watch)) == 2)
            # The push is done (kept for withdrawal, then out of the pending store) before
            # the read: a read while its push is in flight is not withdrawn.
            await until(lambda: "notify_push_pending 0" in metrics_text(self.port).splitlines())
            event = json.loads(await asyncio.wait_for(ws.recv(), STEP))
            await ws.send(json.dumps({"type": "ack", "epoch": event["epoch"], "offset": event["offset"]}))
            headers, payload = (await until(lambda: self.apple.to(watch)[2:]))[0]
        self.assertEqual((headers["apns-push-type"], headers["apns-priority"]), ("background", "5"))
        self.assertEqual((payload["type"], payload["tag"], payload["aps"]), ("withdraw", "n-1", {"content-available": 1}))
        self.assertEqual(self.apple.errors, [])


if __name__ == "__main__":
    unittest.main()
