#!/usr/bin/env bash
# Pusher connections against notify's own, on one host in one sitting, with the same load
# generator settings (issue 36's budgets): RSS per idle connection, handshakes (rate and the
# host's CPU per connect), and fan-out to one channel (deliveries/s, latency, the host's CPU
# per delivery). A Pusher connection is `/app/{key}?protocol=7`, anonymous; its first frame
# is `pusher:connection_established` (where the generator waits for notify's `welcome`);
# it joins the channel with `pusher:subscribe`, a native one with `?channels=`, and the
# events reach it in Pusher's frame (a document's versions, `--channel`, stamped in the
# event name).
#
#   bench/pusher.sh [CONNECTIONS] [SUBSCRIBERS] [EVENTS] [RATE]   (defaults 15000 10000 20 2)
#   HOST_BIN=path/to/notify-host bench/pusher.sh                   (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-15000}
subs=${2:-10000}
events=${3:-20}
rate=${4:-2}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; load_pid=""
trap 'stop_all "$load_pid" "$host_pid"' EXIT
port=$(free_port)
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[connections]
heartbeat_interval = "25s"
idle_timeout = "60s"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
pusher = { app_id = "1", key = "bench-key", secret = "bench-secret-0123456789" }
TOML
native="ws://127.0.0.1:$port/v1/ws/demo"
pusher="ws://127.0.0.1:$port/app/bench-key?protocol=7"
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), host $(git rev-parse --short HEAD)"

# idle LABEL URL: RSS per idle connection (one connection first, so one-time allocations are
# in the baseline; then CONNECTIONS held until all connected, and 5 s to settle).
idle() {
  local label=$1 url=$2 before after log deadline
  target/release/notify-load idle --url "$url" --connections 1 --hold 1 --user-prefix warm- >/dev/null
  sleep 1.5
  before=$(rss_kib "$host_pid")
  log="$work/idle-$label.log"
  target/release/notify-load idle --url "$url" --connections "$conns" --hold 600 > "$log" 2>&1 &
  load_pid=$!
  deadline=$((SECONDS + 300))
  until grep -qs "^connected" "$log"; do
    [ $SECONDS -lt $deadline ] || { echo "$label: timed out"; cat "$log"; exit 1; }
    kill -0 "$load_pid" 2>/dev/null || { echo "$label: load generator exited"; cat "$log"; exit 1; }
    sleep 0.5
  done
  sleep 5
  after=$(rss_kib "$host_pid")
  kill "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""
  echo "$label idle: $(( (after - before) * 1024 / conns )) B per connection ($conns; $(head -1 "$log"))"
  closed
}

# handshakes LABEL URL: CONNECTIONS connects, 200 in flight, and the host's CPU per connect.
handshakes() {
  local label=$1 url=$2 before after out
  before=$(ticks "$host_pid")
  out=$(target/release/notify-load idle --url "$url" --connections "$conns" --concurrency 200 --hold 1 \
    --user-prefix "h-$label-" 2>&1 | head -1)
  closed
  after=$(ticks "$host_pid")
  echo "$label handshakes: $out; host CPU $(( (after - before) * 1000000 / hz / conns )) µs per connection (handshake, hold, close)"
}

closed() {
  local deadline=$((SECONDS + 60))
  while [ "$(metric 'notify_connections{tenant="demo"}')" != "0" ]; do
    [ $SECONDS -lt $deadline ] || { echo "connections did not close"; exit 1; }
    sleep 0.2
  done
  sleep 2
}

# fanout LABEL URL [GENERATOR FLAGS]: SUBSCRIBERS of channel `bench`, EVENTS at RATE.
fanout() {
  local label=$1 url=$2
  shift 2
  measure_load "$label fan-out" "$host_pid" $(( subs * events )) fanout --url "$url" \
    --publish "http://127.0.0.1:$port/v1/publish" --key demo-key --connections "$subs" --events "$events" \
    --rate "$rate" --payload 200 --concurrency 200 --channel bench "$@"
  closed
}

start_host "$work/config.toml"
for round in 1 2; do
  idle "native$round" "$native"
  idle "pusher$round" "$pusher"
done
for round in 1 2; do
  handshakes "native$round" "$native"
  handshakes "pusher$round" "$pusher"
done
for round in 1 2; do
  fanout "native$round" "$native?channels=bench"
  fanout "pusher$round" "$pusher" --pusher-subscribe bench
done
