"""The official Pusher server library for Python (`pusher` from the Python package index)
against notify's Pusher HTTP API, unchanged: a trigger, several channels, a batch, each
reaching a notify WebSocket client of those channels; a wrong secret refused; a presence
channel joined over the Pusher protocol with the library's signature; the library's
channel queries answered; an event that leaves its sender out; a signed-in user's
connections terminated.

Run by scripts/test.sh: python tests/python/pusher_test.py (NOTIFY_HOST_BIN names the host
binary).
"""

import asyncio
import json
import unittest

import pusher
import websockets
from pusher.errors import PusherBadAuth

from harness import Host, until

APP = {"app_id": "1001", "key": "pusher-key-1", "secret": "pusher-secret-0123456789"}


class PusherServerLibrary(unittest.IsolatedAsyncioTestCase):
    async def test_the_python_library_triggers_events_that_notify_clients_receive(self):
        credentials = ", ".join(f'{k} = "{v}"' for k, v in APP.items())
        host = Host(self, tenant_extra=f"pusher = {{ {credentials} }}\n")
        await host.ready()
        url = f"ws://127.0.0.1:{host.port}/v1/ws/demo?user=ann&channels=news,alerts"
        ws = await websockets.connect(url)
        self.addAsyncCleanup(ws.close)
        self.assertEqual(json.loads(await ws.recv())["type"], "welcome")
        subscribed = [json.loads(await ws.recv()) for _ in range(2)]
        self.assertEqual(sorted(s["channel"] for s in subscribed if s["type"] == "subscribed"), ["alerts", "news"])

        client = pusher.Pusher(**APP, ssl=False, host="127.0.0.1", port=host.port)
        # The library blocks on its HTTP call: off the event loop.
        self.assertEqual(await asyncio.to_thread(client.trigger, "news", "headline", {"title": "hello"}), {})
        await asyncio.to_thread(client.trigger, ["news", "alerts"], "both", "plain text")
        batch = [{"channel": "alerts", "name": "first", "data": {"n": 1}}]
        await asyncio.to_thread(client.trigger_batch, batch)

        seen = []

        async def four():
            while len(seen) < 4:
                frame = json.loads(await ws.recv())
                if frame["type"] == "event":
                    seen.append((frame["channel"], frame["event"], frame["data"]))
            return True

        await until(four)
        self.assertEqual(
            sorted(seen),
            [
                ("alerts", "both", "plain text"),
                ("alerts", "first", '{"n": 1}'),
                ("news", "both", "plain text"),
                ("news", "headline", '{"title": "hello"}'),
            ],
        )
        wrong = pusher.Pusher(**{**APP, "secret": "not-the-secret-0123"}, ssl=False, host="127.0.0.1", port=host.port)
        with self.assertRaisesRegex(PusherBadAuth, "^Invalid signature"):
            await asyncio.to_thread(wrong.trigger, "news", "x", {})

        # A Pusher client joins a presence channel with the library's signature.
        member = await websockets.connect(f"ws://127.0.0.1:{host.port}/app/{APP['key']}?protocol=7")
        self.addAsyncCleanup(member.close)
        established = json.loads(await member.recv())
        self.assertEqual(established["event"], "pusher:connection_established")
        socket_id = json.loads(established["data"])["socket_id"]
        me = {"user_id": "7", "user_info": {"name": "Py"}}
        auth = client.authenticate(channel="presence-room", socket_id=socket_id, custom_data=me)
        await member.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "presence-room", **auth}}))
        succeeded = json.loads(await member.recv())
        self.assertEqual(succeeded["event"], "pusher_internal:subscription_succeeded")
        presence = json.loads(succeeded["data"])["presence"]
        self.assertEqual(presence, {"ids": ["7"], "hash": {"7": {"name": "Py"}}, "count": 1})

        channels = await asyncio.to_thread(client.channels_info)
        self.assertEqual(channels, {"channels": {"alerts": {}, "news": {}, "presence-room": {}}})
        news = await asyncio.to_thread(client.channel_info, "news", ["subscription_count"])
        self.assertEqual(news, {"occupied": True, "subscription_count": 1})
        self.assertEqual(await asyncio.to_thread(client.users_info, "presence-room"), {"users": [{"id": "7"}]})

        # An event with the member's socket_id skips it; the next one reaches it.
        await asyncio.to_thread(client.trigger, "presence-room", "own", {"n": 1}, socket_id)
        await asyncio.to_thread(client.trigger, "presence-room", "marker", {"n": 2})
        frame = json.loads(await member.recv())
        self.assertEqual((frame["event"], frame["channel"], json.loads(frame["data"])), ("marker", "presence-room", {"n": 2}))

        # The member signs in; terminating the user's connections closes it with 4009.
        signin = client.authenticate_user(socket_id, {"id": "7"})
        await member.send(json.dumps({"event": "pusher:signin", "data": signin}))
        self.assertEqual(json.loads(await member.recv())["event"], "pusher:signin_success")
        other = client.authenticate_user(socket_id, {"id": "8"})
        await member.send(json.dumps({"event": "pusher:signin", "data": other}))
        refused = json.loads(await member.recv())
        self.assertEqual(refused["event"], "pusher:error", "a connection signs in as one user")
        await asyncio.to_thread(client.terminate_user_connections, "7")
        self.assertEqual(json.loads(await member.recv())["data"]["code"], 4009)
        with self.assertRaises(websockets.ConnectionClosed) as closed:
            await member.recv()
        self.assertEqual(closed.exception.rcvd.code, 4009)


if __name__ == "__main__":
    unittest.main()
