#!/usr/bin/env bash
# Broadcast fan-out, notify against the floor server and Nchan (nginx's pub/sub module, from
# Debian: apt-get install nginx libnginx-mod-nchan; skipped when missing) in one sitting,
# with the same load generator settings: SUBSCRIBERS connections receive EVENTS broadcast events with a
# PAYLOAD-byte pad, published at RATE events/s (0: each as soon as the previous publish was
# accepted). notify runs the stock settings (memory broker, history on). Reports the
# generator's deliveries/s and latency percentiles (from the send time in each payload, over
# every delivery), deliveries missing, and the server's CPU per delivery from /proc; for
# notify also its own mean time from accepting a publish to having queued it everywhere.
#
#   bench/fanout.sh [SUBSCRIBERS] [EVENTS] [RATE] [PAYLOAD]   (defaults 10000 20 2 200)
#   HOST_BIN=path/to/notify-host bench/fanout.sh               (measure another build)
#   DEFLATE=1 bench/fanout.sh   (notify again with permessage-deflate on every connection:
#                                the generator offers it and inflates what arrives)
#   SSE=1 bench/fanout.sh       (notify again with every subscriber on a Server-Sent Events
#                                stream instead of a WebSocket)
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

# The host's own time from accepting a publish to having queued (or written) it for every
# subscriber, averaged over the run's events: latency without the generator's share.
enqueue_mean() {
  scrape | awk '/^notify_publish_to_enqueue_seconds_sum/ {s = $2} /^notify_publish_to_enqueue_seconds_count/ {n = $2}
    END {printf "publish to enqueued (host) %.2f ms on average\n", n ? s / n * 1000 : 0}'
}

start_host "$work/config.toml"
measure notify "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish"
echo "notify: $(enqueue_mean)"
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
if [ -n "${DEFLATE:-}" ]; then
  start_host "$work/config.toml"
  measure notify-deflate "$host_pid" "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish" --deflate true
  echo "notify-deflate: $(enqueue_mean); $(scrape | grep -E '^notify_(frames_compressed|compression_(bytes|seconds))_total' | tr '\n' ' ')"
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
fi

if [ -n "${SSE:-}" ]; then
  start_host "$work/config.toml"
  measure notify-sse "$host_pid" "http://127.0.0.1:$port/v1/sse/demo" "http://127.0.0.1:$port/v1/publish" --transport sse
  echo "notify-sse: $(enqueue_mean)"
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
fi

floor_port=$(free_port)
target/release/notify-floor --listen "127.0.0.1:$floor_port" > "$work/floor.log" 2>&1 &
floor_pid=$!
for _ in $(seq 50); do grep -q listening "$work/floor.log" && break; sleep 0.1; done
measure floor "$floor_pid" "ws://127.0.0.1:$floor_port/" "http://127.0.0.1:$floor_port/publish"
kill "$floor_pid"; wait "$floor_pid" 2>/dev/null || true; floor_pid=""

if start_nchan; then
  measure nchan "$nchan_pids" "ws://127.0.0.1:$nchan_port/sub" "http://127.0.0.1:$nchan_port/pub" --welcome false
fi
