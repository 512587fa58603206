#!/usr/bin/env python3
"""Publishes through Redis to hosts in cluster mode, then follows the presence stream.

    pip install redis
    python3 examples/redis_publish.py [--redis redis://127.0.0.1:6379] [--tenant demo]

Durable publishing is XADD to notify:{tenant}:ingest (processed once, at least once, by one
node); fire-and-forget is PUBLISH to notify:{tenant}:publish. Invalid events land in
notify:{tenant}:dead with the error. Presence transitions arrive on notify:{tenant}:presence,
e.g. to send a mobile push when a user goes offline.
"""
import argparse
import json

import redis


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", default="redis://127.0.0.1:6379")
    p.add_argument("--tenant", default="demo")
    a = p.parse_args()
    r = redis.Redis.from_url(a.redis, decode_responses=True)

    event = {"users": ["alice"], "event": "order.updated", "data": {"order": 42, "status": "shipped"}}
    entry = r.xadd(f"notify:{a.tenant}:ingest", {"event": json.dumps(event)})
    print(f"durable: entry {entry}, clients see event id s-{entry}")

    listeners = r.publish(f"notify:{a.tenant}:publish", json.dumps({"broadcast": True, "event": "ping"}))
    print(f"fire-and-forget: {listeners} node(s) listening")

    print("following presence (Ctrl-C to stop)")
    last = "$"
    while True:
        for _stream, entries in r.xread({f"notify:{a.tenant}:presence": last}, block=5000) or []:
            for entry_id, fields in entries:
                last = entry_id
                print(f"{fields['user']} is {fields['type']} (reported by {fields['node']})")
                if fields["type"] == "offline":
                    pass  # e.g. send a mobile push for what the user will miss


if __name__ == "__main__":
    main()
