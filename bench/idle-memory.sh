#!/usr/bin/env bash
# Measures RSS per idle WebSocket (or SSE) connection: notify's, then (WebSocket only) the
# floor server's and Nchan's (if installed: apt-get install nginx libnginx-mod-nchan) in the
# same sitting.
#
#   bench/idle-memory.sh [CONNECTIONS]     (default 15000)
#   TRANSPORT=sse bench/idle-memory.sh     (Server-Sent Events streams instead)
#   HOST_BIN=path/to/notify-host bench/idle-memory.sh   (measure another build of the host)
#   DEFLATE=1 bench/idle-memory.sh         (notify twice: without, then with permessage-deflate
#                                           negotiated on every connection)
#
# Builds release binaries, starts each server on a free loopback port (notify with the demo
# tenant), records its RSS, opens CONNECTIONS idle connections with notify-load (one client
# process; the per-process open-file cap is 20,000), waits until they are all connected,
# lets it settle, and prints (RSS after - RSS before) / CONNECTIONS. Stops only what it
# started.
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
host_pid=""; load_pid=""; floor_pid=""; nchan_pid=""
trap 'stop_all "$load_pid" "$host_pid" "$floor_pid" "$nchan_pid"' EXIT
port=$(free_port)
demo_config '[connections]
heartbeat_interval = "25s"
idle_timeout = "60s"'


# idle LABEL PIDS URL [GENERATOR FLAGS]: the RSS of the server processes PIDS (comma-separated)
# per idle connection: one connection first, so one-time allocations are in the baseline,
# then CONNECTIONS held open until the generator reports them all connected, and 5 s to
# settle.
idle() {
  local label=$1 pids=${2//,/ } url=$3 before after per log deadline
  shift 3
  target/release/notify-load "$mode" --url "$url" --connections 1 --hold 1 --user-prefix warm- "$@" >/dev/null
  sleep 1.5
  # shellcheck disable=SC2086 # one word per PID
  before=$(rss_kib $pids)
  log="$work/load-$label.log"
  target/release/notify-load "$mode" --url "$url" --connections "$conns" --hold 600 "$@" > "$log" 2>&1 &
  load_pid=$!
  deadline=$((SECONDS + 300))
  until grep -qs "^connected" "$log"; do
    [ $SECONDS -lt $deadline ] || { echo "$label: timed out waiting for $conns connections"; cat "$log"; exit 1; }
    kill -0 "$load_pid" 2>/dev/null || { echo "$label: load generator exited"; cat "$log"; exit 1; }
    sleep 0.5
  done
  sleep 5
  # shellcheck disable=SC2086
  after=$(rss_kib $pids)
  kill "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""
  per=$(( (after - before) * 1024 / conns ))
  echo "$label: $(head -1 "$log"); RSS before ${before} KiB, after ${after} KiB; per idle connection ${per} bytes ($(awk -v b="$per" 'BEGIN {printf "%.2f", b/1024}') KiB)"
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), connections: $conns (${TRANSPORT:-ws})"
start_host "$work/config.toml"
idle notify "$host_pid" "$scheme://127.0.0.1:$port/v1/$path/demo"
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
if [ -n "${DEFLATE:-}" ] && [ "$mode" = idle ]; then
  start_host "$work/config.toml"
  idle notify-deflate "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" --deflate true
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
fi
[ "$mode" = idle ] || exit 0

floor_port=$(free_port)
target/release/notify-floor --listen "127.0.0.1:$floor_port" > "$work/floor.log" 2>&1 &
floor_pid=$!
for _ in $(seq 50); do grep -q listening "$work/floor.log" && break; sleep 0.1; done
idle floor "$floor_pid" "ws://127.0.0.1:$floor_port/"
kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; floor_pid=""

if start_nchan; then
  idle nchan "$nchan_pids" "ws://127.0.0.1:$nchan_port/sub" --welcome false
fi
