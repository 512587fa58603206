#!/usr/bin/env bash
# Publishes through Redis to hosts running in cluster mode ([broker] kind = "redis"), with the
# same JSON body as POST /v1/publish. Start two nodes first:
#   NOTIFY_BROKER__KIND=redis NOTIFY_SERVER__LISTEN=127.0.0.1:8080 cargo run --release -p notify-host
#   NOTIFY_BROKER__KIND=redis NOTIFY_SERVER__LISTEN=127.0.0.1:8081 cargo run --release -p notify-host
#
#   examples/redis-publish.sh [REDIS_URL]   (default redis://127.0.0.1:6379)
set -euo pipefail
url=${1:-redis://127.0.0.1:6379}
tenant=demo

# Durable: appended to the tenant's ingest stream, processed once by one node of the consumer
# group, acknowledged only after the event was handed on. Prints the entry id; the event id
# clients see is "s-<entry id>".
redis-cli -u "$url" XADD "notify:$tenant:ingest" '*' event \
  '{"users":["alice"],"event":"order.updated","data":{"order":42,"status":"shipped"}}'

# Fire-and-forget: one node (the lease holder) processes it; prints how many nodes listen (1).
redis-cli -u "$url" PUBLISH "notify:$tenant:publish" '{"channels":["news"],"event":"headline","data":"via Redis"}'

# An invalid event is not dropped: it lands in the dead-letter stream with the error.
redis-cli -u "$url" XADD "notify:$tenant:ingest" '*' event '{"users":["alice"]}'
sleep 1
redis-cli -u "$url" XREVRANGE "notify:$tenant:dead" + - COUNT 1

# Presence transitions (online / debounced offline) for backends to react to:
redis-cli -u "$url" XREVRANGE "notify:$tenant:presence" + - COUNT 5
