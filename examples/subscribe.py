#!/usr/bin/env python3
"""Connects as a user of the demo tenant, subscribes to a channel and prints every frame.

    pip install websockets
    python3 examples/subscribe.py [--url ws://127.0.0.1:8080] [--user alice] [--channel news]
"""
import argparse
import asyncio
import json

import websockets


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="ws://127.0.0.1:8080")
    p.add_argument("--tenant", default="demo")
    p.add_argument("--user", default="alice")
    p.add_argument("--channel", default="news")
    a = p.parse_args()
    async with websockets.connect(f"{a.url}/v1/ws/{a.tenant}?user={a.user}") as ws:
        await ws.send(json.dumps({"type": "subscribe", "channel": a.channel}))
        async for frame in ws:
            print(frame)


if __name__ == "__main__":
    asyncio.run(main())
