#!/usr/bin/env bash
# Cost of stream history on broadcast fan-out: the same broadcast load to a tenant that keeps
# history (positions on every frame, default size) and to one with `history.size = 0`, on
# one release host, alternating which goes first.
#
#   bench/history.sh [SUBSCRIBERS] [EVENTS] [ROUNDS]   (defaults 5000 100 2)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-5000}
events=${2:-100}
rounds=${3:-2}
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
[tenants.hist]
publish_key = "hist-key"
auth = { mode = "insecure" }
[tenants.nohist]
publish_key = "nohist-key"
auth = { mode = "insecure" }
history = { size = 0 }
TOML
start_host "$work/config.toml"
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), subscribers $subs, events $events"
for r in $(seq "$rounds"); do
  order="hist nohist"; [ $((r % 2)) -eq 0 ] && order="nohist hist"
  for t in $order; do
    printf 'round %s %-7s ' "$r" "$t"
    target/release/notify-load fanout --url "ws://127.0.0.1:$port/v1/ws/$t" --publish "http://127.0.0.1:$port/v1/publish" \
      --key "$t-key" --connections "$subs" --events "$events" --concurrency 64 --user-prefix "$t-$r-" 2>&1 | tail -1
    sleep 1
  done
done
