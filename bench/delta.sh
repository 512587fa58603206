#!/usr/bin/env bash
# Delta updates against whole events in one sitting, with the same load generator settings:
# SUBSCRIBERS connections subscribed to one channel receive EVENTS versions of a
# PAYLOAD-byte document (one field changes from each to the next), published at RATE
# events/s: once whole, once with `delta` to subscribers that asked for delta updates (a
# fresh host each). Reports the bytes per delivery the subscribers received, deliveries/s
# and latency percentiles, the host's CPU per delivery from /proc, and the host's delta
# metrics (deltas made, their bytes, the time making them).
#
#   bench/delta.sh [SUBSCRIBERS] [EVENTS] [RATE] [PAYLOAD]   (defaults 10000 20 2 2000)
#   HOST_BIN=path/to/notify-host bench/delta.sh               (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
events=${2:-20}
rate=${3:-2}
payload=${4:-2000}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
port=$(free_port)
demo_config
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), subscribers $subs, events $events, rate $rate/s, document $payload B"

# run LABEL QUERY [GENERATOR FLAGS]
run() {
  local label=$1 query=$2
  shift 2
  start_host "$work/config.toml"
  measure_load "$label" "$host_pid" $(( subs * events )) fanout --url "ws://127.0.0.1:$port/v1/ws/demo?$query" \
    --publish "http://127.0.0.1:$port/v1/publish" --key demo-key --connections "$subs" --events "$events" \
    --rate "$rate" --payload "$payload" --concurrency 200 --channel bench "$@"
  echo "$label: $(scrape | grep -E '^notify_delta(s|_bytes|_seconds)_total' | tr '\n' ' ')"
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
}

run whole "channels=bench"
run delta "channels=bench&delta=fossil" --delta true
