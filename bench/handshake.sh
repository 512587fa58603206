#!/usr/bin/env bash
# Handshake cost, notify against the floor server and Nchan (if installed: apt-get install
# nginx libnginx-mod-nchan) in the same sitting: host CPU per
# completed WebSocket handshake (welcome received), the rate the load generator saw, and
# the kernel's listen-queue overflows, over ROUNDS runs of CONNECTIONS connections each.
# CPU time comes from /proc (utime + stime of the server process), so it counts only the
# server's work, not the load generator's on the same cores.
#
#   bench/handshake.sh [CONNECTIONS] [ROUNDS] [IN_FLIGHT]   (defaults 10000 3 200)
#   HOST_BIN=path/to/notify-host bench/handshake.sh          (measure another build of the host)
#
# Each round opens CONNECTIONS connections (IN_FLIGHT at a time, distinct users), holds them
# one second and closes them; each server keeps running between its rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-10000}
rounds=${2:-3}
in_flight=${3:-200}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; floor_pid=""; nchan_pid=""
trap 'stop_all "$host_pid" "$floor_pid" "$nchan_pid"' EXIT
port=$(free_port)
demo_config
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c }' /proc/net/netstat; }

# rounds LABEL PIDS URL WAIT_CLOSED [GENERATOR FLAGS]: runs the rounds against one server
# (PIDS: its processes, comma-separated).
run_rounds() {
  local label=$1 pids=${2//,/ } url=$3 wait_closed=$4
  shift 4
  for round in $(seq "$rounds"); do
    local before over_before out after over_after
    # shellcheck disable=SC2086 # one word per PID
    before=$(ticks $pids); over_before=$(overflows)
    out=$(target/release/notify-load idle --url "$url" --connections "$conns" --concurrency "$in_flight" \
      --hold 1 --user-prefix "r$round-" "$@" 2>&1 | head -1)
    $wait_closed
    # shellcheck disable=SC2086
    after=$(ticks $pids); over_after=$(overflows)
    echo "$label round $round: $out; server CPU $(( (after - before) * 1000000 / hz / conns )) µs per connection (handshake, hold, close); listen overflows $((over_after - over_before))"
  done
}

# Both servers rest 2 s after a round, so that neither starts a round while the kernel still
# tears down the previous one's sockets.
notify_closed() {
  local deadline=$((SECONDS + 60))
  while [ "$(metric 'notify_connections{tenant="demo"}')" != "0" ]; do
    [ $SECONDS -lt $deadline ] || { echo "connections did not close"; exit 1; }
    sleep 0.2
  done
  sleep 2
}
floor_closed() { sleep 2; }

start_host "$work/config.toml"
run_rounds notify "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" notify_closed
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""

floor_port=$(free_port)
target/release/notify-floor --listen "127.0.0.1:$floor_port" > "$work/floor.log" 2>&1 &
floor_pid=$!
for _ in $(seq 50); do grep -q listening "$work/floor.log" && break; sleep 0.1; done
run_rounds floor "$floor_pid" "ws://127.0.0.1:$floor_port/" floor_closed
kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; floor_pid=""

if start_nchan; then
  run_rounds nchan "$nchan_pids" "ws://127.0.0.1:$nchan_port/sub" floor_closed --welcome false
fi
