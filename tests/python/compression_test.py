"""WebSocket compression (permessage-deflate) with Python's `websockets` package (which
compresses what it sends too), against one host and across two hosts sharing a private
Redis; and a client without compression on the same broadcast.

Run by scripts/test.sh: python tests/python/compression_test.py (NOTIFY_HOST_BIN names the
host binary; redis-server must be installed).
"""

import asyncio
import json
import unittest

import websockets

from harness import Host, Process, free_port, until

TEXT = "Ihre Bestellung wurde versandt — 注文は発送されました — " * 30


class Client:
    """A `websockets` client of the demo tenant recording the JSON it receives."""

    def __init__(self, ws):
        self.ws = ws
        self.frames = []
        self.reader = asyncio.ensure_future(self.read())

    async def read(self):
        async for message in self.ws:
            self.frames.append(json.loads(message))

    @classmethod
    async def open(cls, test, host, user, compression):
        ws = await websockets.connect(
            f"ws://127.0.0.1:{host.port}/v1/ws/demo?user={user}", compression=compression, max_size=2**24
        )
        client = cls(ws)
        test.addAsyncCleanup(client.close)
        await until(lambda: client.seen(lambda f: f["type"] == "welcome"))
        return client

    def seen(self, predicate):
        return [f for f in self.frames if predicate(f)]

    def stories(self):
        return [f for f in self.frames if f.get("event") == "story"]

    async def subscribe(self, channel):
        await self.ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        await until(lambda: self.seen(lambda f: f["type"] == "subscribed" and f["channel"] == channel))

    async def close(self):
        await self.ws.close()
        self.reader.cancel()


def negotiated(client):
    return client.ws.response.headers.get("Sec-WebSocket-Extensions")


SIZES = [{"n": 1}, {"text": TEXT}, {"text": TEXT * 20, "n": 3}]


class Compression(unittest.IsolatedAsyncioTestCase):
    async def test_one_host_compressed_and_plain_subscribers_get_every_event_intact(self):
        host = Host(self)
        await host.ready()
        compressed = await Client.open(self, host, "ann", "deflate")
        plain = await Client.open(self, host, "bob", None)
        self.assertTrue(negotiated(compressed).startswith("permessage-deflate"))
        self.assertIsNone(negotiated(plain))
        await compressed.subscribe("news")
        await plain.subscribe("news")
        for data in SIZES:
            host.publish({"channels": ["news"], "event": "story", "data": data})
        for client in [compressed, plain]:
            await until(lambda: len(client.stories()) == len(SIZES))
            self.assertEqual([f["data"] for f in client.stories()], SIZES)

    async def test_events_published_on_one_host_arrive_compressed_through_another_over_redis(self):
        redis_port = free_port()
        Process(self, ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "", "--appendonly", "no"])
        broker = f'[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:{redis_port}"\n'
        a, b = Host(self, broker), Host(self, broker)
        await a.ready()
        await b.ready()
        client = await Client.open(self, b, "ann", "deflate")
        self.assertTrue(negotiated(client).startswith("permessage-deflate"))
        await client.subscribe("feed")

        def carried():
            a.publish({"channels": ["feed"], "event": "probe"})
            return client.seen(lambda f: f.get("event") == "probe")

        await until(carried)
        for data in SIZES:
            a.publish({"users": ["ann"], "channels": ["feed"], "event": "story", "data": data})
        await until(lambda: len(client.stories()) == 2 * len(SIZES))
        self.assertEqual([f["data"] for f in client.stories() if "user" in f], SIZES)
        self.assertEqual([f["data"] for f in client.stories() if "channel" in f], SIZES)

if __name__ == "__main__":
    unittest.main(verbosity=2)
