#!/usr/bin/env bash
# Memory that comes back: host RSS before, during and after waves of idle connections of
# new distinct users that then all leave.
#
#   bench/wave-memory.sh [CONNECTIONS] [WAVES]     (defaults 15000 2)
#   HOST_BIN=path/to/notify-host bench/wave-memory.sh   (measure another build)
#
# Each wave opens CONNECTIONS connections (users wN-0, wN-1, ...), holds them 4 s, waits
# until the host reports none, lets it settle 3 s and reads its RSS. Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-15000}
waves=${2:-2}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; gen=""
trap 'stop_all "$gen" "$host_pid"' EXIT
port=$(free_port)
demo_config
start_host "$work/config.toml"
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$host_pid/status"; }
url="ws://127.0.0.1:$port/v1/ws/demo"
target/release/notify-load idle --url "$url" --connections 1 --hold 1 --user-prefix warm- >/dev/null
sleep 1
before=$(rss)
for wave in $(seq "$waves"); do
  target/release/notify-load idle --url "$url" --connections "$conns" --hold 4 --user-prefix "w$wave-" >/dev/null &
  gen=$!
  deadline=$((SECONDS + 120))
  until [ "$(metric 'notify_connections{tenant="demo"}')" = "$conns" ]; do
    [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $conns connections"; exit 1; }
    sleep 0.2
  done
  peak=$(rss)
  wait "$gen"; gen=""
  until [ "$(metric 'notify_connections{tenant="demo"}')" = "0" ]; do
    [ $SECONDS -lt $deadline ] || { echo "connections did not close"; exit 1; }
    sleep 0.2
  done
  sleep 3
  after=$(rss)
  echo "wave $wave: before $before KiB; with $conns connections $peak KiB; after they left $after KiB ($(( (after - before) * 100 / (peak - before) ))% of the growth kept)"
done
