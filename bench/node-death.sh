#!/usr/bin/env bash
# A node dies under its clients: CLIENTS connections on node A (cluster mode, a private
# Redis) resume on node B when A is killed with SIGKILL, while B publishes broadcasts.
#
#   bench/node-death.sh [CLIENTS] [GENERATORS] [EVENTS]     (defaults 15000 30 20)
#   RATE (events/s, default 2), KILL_AFTER (seconds after the first event, default 2),
#   HOST_BIN (measure another build)
#
# The nodes keep every limit at its default: handshakes in progress per node
# (`server.max_handshakes`, 1024) and the limits per client address (1,000 connections, a
# connect burst of 1,000 then 50/s). So the clients come from GENERATORS source addresses
# (127.0.0.2, ...), each generator's connections from its own, as distinct clients would.
# Each generator lists B as its `--fallback`: a client whose node is gone tries the next.
#
# Prints what the clients received (every event once, resumed across the death), their
# reconnects and refusals, the time from the kill to the last welcome, B's peak of
# handshakes in progress (sampled every 0.1 s) and its refusals by reason.
#
# Bounded: every wait has a deadline, and everything started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-15000}
gens=${2:-30}
events=${3:-20}
rate=${RATE:-2}
kill_after=${KILL_AFTER:-2}
per_gen=$(( (clients + gens - 1) / gens ))
[ "$gens" -le 250 ] || { echo "at most 250 generators (source addresses)"; exit 1; }
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
# Every limit at its default here.
unset NOTIFY_ADDRESSES__MAX_CONNECTIONS NOTIFY_ADDRESSES__CONNECT_RATE
work=$(mktemp -d)
pids=()
trap 'stop_all "${pids[@]}"' EXIT

start_redis; pids+=("$redis_pid")
start_nodes 2 demo "$(redis_broker)"
a_url="ws://127.0.0.1:${node_ports[0]}/v1/ws/demo"
b_url="ws://127.0.0.1:${node_ports[1]}/v1/ws/demo"
port=${node_ports[1]}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $(redis-server --version | cut -d' ' -f3), $clients clients over $gens addresses on node A, $events events at $rate/s from node B, A killed ${kill_after}s after the first"

gen_pids=()
for g in $(seq 0 $(( gens - 1 ))); do
  target/release/notify-load subscribe --url "$a_url" --fallback "$b_url" --source "127.0.0.$(( g + 2 ))" \
    --first $(( g * per_gen )) --connections "$per_gen" --concurrency 64 --events "$events" \
    --hold 300 --resume true > "$work/gen$g.log" 2>&1 &
  gen_pids+=($!); pids+=($!)
done
deadline=$(( $(date +%s) + 120 ))
until [ "$(cat "$work"/gen*.log | grep -c '^connected')" -eq "$gens" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "not connected in time:"; cat "$work"/gen*.log | head; exit 1; }
  sleep 0.5
done
awk '/^connected/ {c += $2; f += $4} END {printf "connected %d to node A (failed %d)\n", c, f}' "$work"/gen*.log

target/release/notify-load broadcast --publish "http://127.0.0.1:${node_ports[1]}/v1/publish" --key demo-key \
  --events "$events" --rate "$rate" > "$work/publish.log" 2>&1 &
publisher=$!; pids+=("$publisher")
sleep "$kill_after"
killed_us=$(date +%s%6N)
kill -KILL "${node_pids[0]}"
wait "${node_pids[0]}" 2>/dev/null || true

peak=0; conns=0
for _ in $(seq 600); do
  v=$(metric notify_handshakes_in_progress); [ "${v:-0}" -gt "$peak" ] && peak=$v
  v=$(metric 'notify_connections{tenant="demo"}'); [ "${v:-0}" -gt "$conns" ] && conns=$v
  live=0; for p in "${gen_pids[@]}"; do kill -0 "$p" 2>/dev/null && live=$(( live + 1 )); done
  [ "$live" -eq 0 ] && break
  sleep 0.1
done
wait "$publisher" || { echo "publishing failed:"; cat "$work/publish.log"; exit 1; }
for p in "${gen_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${gen_pids[@]}"; do wait "$p" || true; done

awk '/^received/ {r += $2; e += $4; m += $7; d += $9} END {printf "received %d of %d (missing %d, duplicates %d)\n", r, e, m, d}' FS='[ ,()]+' "$work"/gen*.log
awk -v k="$killed_us" '/^resumed/ {
    for (i = 1; i <= NF; i++) { if ($i == "reconnects") r += $(i + 1); if ($i == "recovered") u += $(i + 1); if ($i == "later") s += $(i + 1); if ($i == "up") g += $(i + 1); if ($i == "at") w = $(i + 1) > w ? $(i + 1) : w }
  } END { printf "resumed: reconnects %d, not recovered %d, sent back to retry later %d, gave up %d; the last welcome %.1f s after the kill\n", r, u, s, g, (w - k) / 1e6 }' FS='[ ,()]+' "$work"/gen*.log
echo "node B: peak handshakes in progress $peak (limit 1024), peak connections $conns"
scrape | grep '^notify_handshake_failures_total' | grep -v ' 0$' || echo "node B: no refused handshakes"
