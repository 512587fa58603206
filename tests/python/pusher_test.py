"""The official Pusher server library for Python (`pusher` from the Python package index)
publishing to notify through the Pusher HTTP API, unchanged: a trigger, several channels,
a batch, each reaching a notify WebSocket client of those channels; a wrong secret refused.

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


if __name__ == "__main__":
    unittest.main()
