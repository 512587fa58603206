#!/usr/bin/env bash
# Broadcast fan-out, notify against the floor server and Nchan (nginx's pub/sub module, from
# Debian: apt-get install nginx libnginx-mod-nchan; skipped when missing) in one sitting,
# with the same load generator settings: SUBSCRIBERS connections receive EVENTS broadcast events with a
# PAYLOAD-byte pad, published at RATE events/s (0: each as soon as the previous publish was
# accepted). notify runs the stock settings (memory broker, history on). Reports the
# generator's deliveries/s and latency percentiles (from the send time in each payload, over
# every delivery), deliveries missing, and the server's CPU per delivery from /proc.
#
#   bench/fanout.sh [SUBSCRIBERS] [EVENTS] [RATE] [PAYLOAD]   (defaults 10000 20 2 200)
#   HOST_BIN=path/to/notify-host bench/fanout.sh               (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
events=${2:-20}
rate=${3:-2}
payload=${4:-200}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; floor_pid=""; nchan_pid=""
trap 'stop_all "$host_pid" "$floor_pid" "$nchan_pid"' EXIT
port=$(free_port)
demo_config
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), subscribers $subs, events $events, rate $rate/s, payload $payload B"

# measure LABEL PIDS WS_URL PUBLISH_URL [GENERATOR FLAGS]
measure() {
  local label=$1 pids=$2 ws=$3 publish=$4
  shift 4
  measure_load "$label" "$pids" $(( subs * events )) fanout --url "$ws" --publish "$publish" --key demo-key \
    --connections "$subs" --events "$events" --rate "$rate" --payload "$payload" --concurrency 200 "$@"
}

start_host "$work/config.toml"
measure notify "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish"
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""

floor_port=$(free_port)
target/release/notify-floor --listen "127.0.0.1:$floor_port" > "$work/floor.log" 2>&1 &
floor_pid=$!
for _ in $(seq 50); do grep -q listening "$work/floor.log" && break; sleep 0.1; done
measure floor "$floor_pid" "ws://127.0.0.1:$floor_port/" "http://127.0.0.1:$floor_port/publish"
kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; floor_pid=""

# Nchan: two nginx workers (this machine's cores), one channel, WebSocket subscribers; what
# is published is delivered as it came (the generator's JSON with its send time).
module=/usr/lib/nginx/modules/ngx_nchan_module.so
if [ -x "$(command -v nginx)" ] && [ -f "$module" ]; then
  nchan_port=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
load_module $module;
daemon off;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nchan_port backlog=4096;
    location = /sub { nchan_subscriber websocket; nchan_channel_id bench; nchan_subscriber_first_message newest; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 100; }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -p "$work" > "$work/nginx.out" 2>&1 &
  nchan_pid=$!
  for _ in $(seq 50); do [ "$(pgrep -c -P "$nchan_pid")" -ge 2 ] && break; sleep 0.1; done
  workers=$(pgrep -P "$nchan_pid" | paste -sd, -)
  echo "nchan: nginx $(nginx -v 2>&1 | cut -d/ -f2), workers $workers"
  measure nchan "$nchan_pid,$workers" "ws://127.0.0.1:$nchan_port/sub" "http://127.0.0.1:$nchan_port/pub" --welcome false
else
  echo "nchan: not installed (apt-get install nginx libnginx-mod-nchan), skipped"
fi
