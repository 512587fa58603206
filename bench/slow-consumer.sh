#!/usr/bin/env bash
# A stalled client among broadcast subscribers: notify against the floor server in one
# sitting. For each server, ROUNDS times: the fan-out of bench/fanout.sh (SUBSCRIBERS
# connections, EVENTS broadcasts of PAYLOAD bytes at RATE/s), once as is and once with
# STALLED more connections that read their welcome and then nothing (`notify-load stalled`).
# Reports each run's generator summary and the server's RSS after it; compare the p99 with
# and without the stalled clients.
#
#   bench/slow-consumer.sh [SUBSCRIBERS] [EVENTS] [RATE] [PAYLOAD] [STALLED]   (defaults 10000 20 2 200 1)
#   env: ROUNDS (default 2), HOST_BIN (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
events=${2:-20}
rate=${3:-2}
payload=${4:-200}
stalled=${5:-1}
rounds=${ROUNDS:-2}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; floor_pid=""; stall_pid=""
trap 'stop_all "$stall_pid" "$host_pid" "$floor_pid"' EXIT
port=$(free_port)
demo_config
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), subscribers $subs, events $events, rate $rate/s, payload $payload B, stalled $stalled"

# run LABEL PID WS_URL PUBLISH_URL STALL: one fan-out, with STALL stalled connections first.
run() {
  local label=$1 pid=$2 ws=$3 publish=$4 stall=$5
  if [ "$stall" -gt 0 ]; then
    target/release/notify-load stalled --url "$ws" --connections "$stall" --user-prefix stalled- --hold 600 \
      > "$work/stalled.log" 2>&1 &
    stall_pid=$!
    until grep -q "^connected" "$work/stalled.log"; do
      kill -0 "$stall_pid" 2>/dev/null || { cat "$work/stalled.log"; return 1; }
      sleep 0.05
    done
  fi
  measure_load "$label, $stall stalled" "$pid" $(( subs * events )) fanout --url "$ws" --publish "$publish" \
    --key demo-key --connections "$subs" --events "$events" --rate "$rate" --payload "$payload" --concurrency 200
  echo "  server RSS after: $(rss_kib "$pid") KiB"
  if [ -n "$stall_pid" ]; then kill "$stall_pid" 2>/dev/null || true; wait "$stall_pid" 2>/dev/null || true; stall_pid=""; fi
}

start_host "$work/config.toml"
floor_port=$(free_port)
target/release/notify-floor --listen "127.0.0.1:$floor_port" > "$work/floor.log" 2>&1 &
floor_pid=$!
for _ in $(seq 50); do grep -q listening "$work/floor.log" && break; sleep 0.1; done
for round in $(seq "$rounds"); do
  echo "round $round"
  run notify "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish" 0
  run notify "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish" "$stalled"
  run floor "$floor_pid" "ws://127.0.0.1:$floor_port/" "http://127.0.0.1:$floor_port/publish" 0
  run floor "$floor_pid" "ws://127.0.0.1:$floor_port/" "http://127.0.0.1:$floor_port/publish" "$stalled"
done
echo "notify slow-client disconnects: $(metric 'notify_slow_client_disconnects_total{tenant="demo"}')"
