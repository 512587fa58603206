#!/usr/bin/env bash
# Measures host RSS per idle WebSocket (or SSE) connection.
#
#   bench/idle-memory.sh [CONNECTIONS]     (default 15000)
#   TRANSPORT=sse bench/idle-memory.sh     (Server-Sent Events streams instead)
#   HOST_BIN=path/to/notify-host bench/idle-memory.sh   (measure another build of the host)
#
# Builds release binaries, starts a host on a free loopback port with the demo tenant,
# records its RSS, opens CONNECTIONS idle connections with notify-load (one client process;
# the per-process open-file cap is 20,000), waits until the host reports them all, lets it
# settle, and prints (RSS after - RSS before) / CONNECTIONS. Stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-15000}
case "${TRANSPORT:-ws}" in
  ws) mode=idle; path=ws; scheme=ws ;;
  sse) mode=sse-idle; path=sse; scheme=http ;;
  *) echo "TRANSPORT is ws or sse" >&2; exit 2 ;;
esac
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; load_pid=""
trap 'stop_all "$load_pid" "$host_pid"' EXIT
port=$(free_port)
demo_config '[connections]
heartbeat_interval = "25s"
idle_timeout = "60s"'


start_host "$work/config.toml"
# One connection first, so one-time allocations (runtime, hub shards) are in the baseline.
url="$scheme://127.0.0.1:$port/v1/$path/demo"
target/release/notify-load "$mode" --url "$url" --connections 1 --hold 1 --user-prefix warm- >/dev/null
sleep 1.5
before=$(rss_kib "$host_pid")

target/release/notify-load "$mode" --url "$url" --connections "$conns" --hold 600 > "$work/load.log" 2>&1 &
load_pid=$!
deadline=$((SECONDS + 300))
while [ "$(metric 'notify_connections{tenant="demo"}')" != "$conns" ]; do
  [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $conns connections"; cat "$work/load.log"; exit 1; }
  kill -0 "$load_pid" 2>/dev/null || { echo "load generator exited"; cat "$work/load.log"; exit 1; }
  sleep 0.5
done
sleep 5
after=$(rss_kib "$host_pid")
head -1 "$work/load.log"
per=$(( (after - before) * 1024 / conns ))
echo "connections:   $conns (${TRANSPORT:-ws})"
echo "host RSS:      before ${before} KiB, after ${after} KiB"
echo "per idle conn: ${per} bytes ($(awk -v b="$per" 'BEGIN {printf "%.2f", b/1024}') KiB)"
