#!/usr/bin/env bash
# A node that falls behind on Redis pub/sub. Redis holds what a subscriber has not read yet in
# that client's output buffer, up to `client-output-buffer-limit pubsub` (Redis's default:
# 32 MB, or 8 MB for 60 s); past the limit it closes the connection. This script shows what
# the buffer grows to while a node lags, and what happens past the limit.
#
# Three nodes (Redis broker) over one private redis-server started with LIMIT; SUBSCRIBERS
# resuming clients (`--resume true`) spread over them; publishers on nodes 1 and 2 send
# EVENTS broadcasts of PAYLOAD bytes as fast as they are accepted. One second in, node 3 is
# stopped (SIGSTOP) for STOP_SECS, as a node starved of CPU or swapped out would be, then
# continued. Redis's output buffers are sampled every 0.2 s meanwhile.
#
# Prints: the publish rate, the largest pub/sub output buffer seen, the connections Redis
# closed over the limit, the nodes' broker reconnects and resyncs, and what the clients got:
# deliveries, missing, duplicates, reconnects, welcomes that did not recover the broadcast.
#
#   bench/lagging-node.sh [SUBSCRIBERS] [EVENTS] [STOP_SECS]   (defaults 1500 5000 5)
#   env: LIMIT (default "32mb 8mb 60", Redis's own), PAYLOAD (bytes, default 1000),
#        PUBLISHERS (default 8), HISTORY (the tenant's history.size, default EVENTS),
#        RECEIVE_SECS (bound on the run, default 120), HOST_BIN
#
# Bounded: every wait has a deadline, and everything started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-1500}
events=${2:-5000}
stop_secs=${3:-5}
limit=${LIMIT:-32mb 8mb 60}
receive_secs=${RECEIVE_SECS:-120}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
pids=()
trap 'for p in "${node_pids[@]:-}"; do [ -n "$p" ] && kill -CONT "$p" 2>/dev/null || true; done; stop_all "${pids[@]}"' EXIT

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
  --client-output-buffer-limit "pubsub $limit" > "$work/redis.log" 2>&1 &
redis_pid=$!; pids+=("$redis_pid")
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

TENANT_EXTRA="history = { size = ${HISTORY:-$events} }" start_nodes 3 bench "$(redis_broker)"

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $(redis-server --version | cut -d' ' -f3), pubsub limit \"$limit\", subscribers $subs, events $events of ${PAYLOAD:-1000} B, node 3 stopped for ${stop_secs}s"

target/release/notify-load subscribe --url "$urls" --connections "$subs" --events "$events" \
  --hold "$receive_secs" --resume true > "$work/sub.log" 2>&1 &
sub=$!; pids+=("$sub")
deadline=$(( $(date +%s) + 60 ))
until grep -q "^connected" "$work/sub.log"; do
  [ "$(date +%s)" -lt "$deadline" ] && kill -0 "$sub" 2>/dev/null || { echo "subscribers did not connect:"; cat "$work/sub.log"; exit 1; }
  sleep 0.2
done

target/release/notify-load broadcast --key bench-key --events "$events" --payload "${PAYLOAD:-1000}" \
  --publish "http://127.0.0.1:${node_ports[0]}/v1/publish,http://127.0.0.1:${node_ports[1]}/v1/publish" \
  --publishers "${PUBLISHERS:-8}" > "$work/publish.log" 2>&1 &
publisher=$!; pids+=("$publisher")

# peak_omem: the largest output buffer (bytes) among Redis's pub/sub clients right now.
peak_omem() { redis-cli -p "$redis_port" client list type pubsub | grep -o 'omem=[0-9]*' | cut -d= -f2 | sort -n | tail -1; }
sleep 1
kill -STOP "${node_pids[2]}"
peak=0
for _ in $(seq $(( stop_secs * 5 ))); do
  m=$(peak_omem); [ "${m:-0}" -gt "$peak" ] && peak=$m
  sleep 0.2
done
kill -CONT "${node_pids[2]}"
cont_us=$(date +%s%6N)

wait "$publisher" || { echo "publishing failed:"; cat "$work/publish.log"; exit 1; }
deadline=$(( $(date +%s) + receive_secs ))
while kill -0 "$sub" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
kill -INT "$sub" 2>/dev/null || true
wait "$sub" || true

echo "$(cat "$work/publish.log")"
echo "redis: largest pub/sub output buffer while node 3 was stopped $(( peak / 1024 )) KiB; closed over the limit: $(grep -c "overcoming of output buffer limits" "$work/redis.log" || true)"
echo "nodes: broker reconnects $(sum_metric notify_broker_reconnects_total), resyncs $(sum_metric notify_broker_resyncs_total)"
grep "^received" "$work/sub.log" | sed 's/; last receipt.*//'
grep "^resumed" "$work/sub.log" | awk -v cont="$cont_us" '{sub(/, last welcome at.*/, ""); last = $NF} 1' | tr -d '\n'
awk -v cont="$cont_us" '/^resumed/ && $(NF - 1) > cont {printf ", the last welcome %.1f s after node 3 continued", ($(NF - 1) - cont) / 1e6} END {print ""}' "$work/sub.log"
echo "slow-client disconnects: $(sum_metric 'notify_slow_client_disconnects_total{tenant="bench"}')"
grep -h -o "WARN.*" "$work"/node*.log 2>/dev/null | grep -v INSECURE | sed -E 's/[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' | sort | uniq -c | sort -rn | head -5 || true
