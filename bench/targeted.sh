#!/usr/bin/env bash
# Targeted publishing: USERS distinct connected users, EVENTS rounds of one event to each
# user, sent BATCH user-addressed events per `POST /v1/publish/batch` request. One pass paced
# at RATE events/s (latency below saturation), one pass back to back (throughput). notify runs
# the stock settings (memory broker, history on). Reports the generator's events/s and the
# publish-to-receive latency percentiles over every delivery, deliveries missing, and the
# host's CPU per event from /proc. (The floor server has no user addressing: no ratio.)
#
#   bench/targeted.sh [USERS] [EVENTS] [BATCH] [RATE]   (defaults 10000 20 100 50000)
#   HOST_BIN=path/to/notify-host bench/targeted.sh       (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-10000}
events=${2:-20}
batch=${3:-100}
rate=${4:-50000}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
port=$(free_port)
demo_config
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), users $users, events $events per user, batch $batch"
start_host "$work/config.toml"

# measure LABEL RATE
measure() {
  measure_load "$1" "$host_pid" $(( users * events )) targeted --url "ws://127.0.0.1:$port/v1/ws/demo" \
    --publish "http://127.0.0.1:$port/v1/publish/batch" --key demo-key --connections "$users" \
    --events "$events" --batch "$batch" --rate "$2" --payload 64 --concurrency 200
}
measure "paced at $rate/s" "$rate"
measure "back to back" 0
