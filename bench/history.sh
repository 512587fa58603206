#!/usr/bin/env bash
# Cost of stream history: the same load to a tenant that keeps history (positions on every
# frame, default size) and to one with `history.size = 0`, on one release host, alternating
# which goes first. Each round runs a broadcast fan-out and a publish-only run (events to a
# user nobody is connected as: the cost of appending to history).
#
#   bench/history.sh [SUBSCRIBERS] [EVENTS] [ROUNDS]   (defaults 5000 100 2)
#   env: BROKER=redis runs the host on the Redis broker (history in Redis) against a private
#        redis-server; PUBLISHES (default 5000) events per publish-only run.
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-5000}
events=${2:-100}
rounds=${3:-2}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
redis_pid=""
trap 'stop_all "$host_pid" "$redis_pid"' EXIT
port=$(free_port)
broker=""
if [ "${BROKER:-memory}" = redis ]; then
  start_redis
  broker="[broker]
kind = \"redis\"
url = \"redis://127.0.0.1:$redis_port\""
fi
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.hist]
publish_key = "hist-key"
auth = { mode = "insecure" }
[tenants.nohist]
publish_key = "nohist-key"
auth = { mode = "insecure" }
history = { size = 0 }
$broker
TOML
start_host "$work/config.toml"
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), broker: ${BROKER:-memory}, subscribers $subs, events $events"
for r in $(seq "$rounds"); do
  order="hist nohist"; [ $((r % 2)) -eq 0 ] && order="nohist hist"
  for t in $order; do
    printf 'round %s %-7s ' "$r" "$t"
    target/release/notify-load fanout --url "ws://127.0.0.1:$port/v1/ws/$t" --publish "http://127.0.0.1:$port/v1/publish" \
      --key "$t-key" --connections "$subs" --events "$events" --concurrency 64 --user-prefix "$t-$r-" 2>&1 | tail -1
    sleep 1
    printf 'round %s %-7s ' "$r" "$t"
    target/release/notify-load publish --publish "http://127.0.0.1:$port/v1/publish" --key "$t-key" \
      --events "${PUBLISHES:-5000}" 2>&1 | tail -1
  done
done
