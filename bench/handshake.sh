#!/usr/bin/env bash
# Handshake cost: host CPU per completed WebSocket handshake (welcome received) and the
# rate the load generator saw, over ROUNDS runs of CONNECTIONS connections each, on one
# release host. CPU time comes from /proc (utime + stime of the host process), so it counts
# only the host's work, not the load generator's on the same cores.
#
#   bench/handshake.sh [CONNECTIONS] [ROUNDS]     (defaults 10000 3)
#   HOST_BIN=path/to/notify-host bench/handshake.sh   (measure another build of the host)
#
# Each round opens CONNECTIONS connections (256 in flight, distinct users), holds them one
# second and closes them; the host keeps running between rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-10000}
rounds=${2:-3}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
port=$(free_port)
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
TOML
start_host "$work/config.toml"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for round in $(seq "$rounds"); do
  before=$(ticks "$host_pid")
  out=$(target/release/notify-load idle --url "ws://127.0.0.1:$port/v1/ws/demo" --connections "$conns" \
    --hold 1 --user-prefix "r$round-" 2>&1 | head -1)
  deadline=$((SECONDS + 60))
  while [ "$(metric 'notify_connections{tenant="demo"}')" != "0" ]; do
    [ $SECONDS -lt $deadline ] || { echo "connections did not close"; exit 1; }
    sleep 0.2
  done
  after=$(ticks "$host_pid")
  cpu_us=$(( (after - before) * 1000000 / hz / conns ))
  echo "round $round: $out; host CPU ${cpu_us} µs per connection (handshake, hold, close)"
done
