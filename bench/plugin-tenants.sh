#!/usr/bin/env bash
# Many tenants, each with its own JavaScript transform, on one node: TENANTS tenants get
# the JavaScript `redact` (the same bytes: compiled once, one warm instance each), and
# one more tenant none. Host RSS after the uploads and after the publishes, and publishes
# per second through each tenant (EVENTS each, one at a time), then through all of them
# from PUBLISHERS connections at once (each taking a tenant in turn), against the tenant
# without a plugin.
#
#   bench/plugin-tenants.sh [TENANTS] [EVENTS] [PUBLISHERS]   (defaults 100 200 4)
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=${1:-100}
events=${2:-200}
publishers=${3:-4}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
plugin_host $(seq -f 't%g' 0 "$tenants")
wasm=plugins/target/components/redact_js.wasm

echo "date: $(date -u +%F), commit: $(git rev-parse --short HEAD), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc)"
echo "started: host RSS $(($(rss_kib "$host_pid") / 1024)) MiB"
started=$(date +%s.%N)
for i in $(seq "$tenants"); do upload_plugin "t$i" "$wasm" > /dev/null; done
took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
sleep 2
echo "$tenants uploads in $took s: host RSS $(($(rss_kib "$host_pid") / 1024)) MiB"

# rate TENANT: publishes/s of EVENTS one at a time.
rate() {
  target/release/notify-load publish --publish "http://127.0.0.1:$port/v1/publish" --key "$1-publish-key" \
    --events "$events" --payload 256 --publishers 1 | sed 's/.* = \([0-9]*\) publishes\/s.*/\1/'
}
none=$(rate t0)
sum=0
for i in $(seq "$tenants"); do sum=$((sum + $(rate "t$i"))); done
echo "one at a time, $events each: no plugin $none publishes/s; with the JavaScript transform, mean over $tenants tenants $((sum / tenants)) publishes/s ($(awk -v a="$sum" -v n="$tenants" -v b="$none" 'BEGIN {printf "%.2f", a / n / b}')x)"
echo "after the publishes: host RSS $(($(rss_kib "$host_pid") / 1024)) MiB"

# Every tenant at once: PUBLISHERS background loops, each over its share of the tenants.
before=$(ticks "$host_pid")
started=$(date +%s.%N)
loops=()
for p in $(seq 0 $((publishers - 1))); do
  (for i in $(seq $((p + 1)) "$publishers" "$tenants"); do rate "t$i" > /dev/null; done) &
  loops+=($!)
done
wait "${loops[@]}"
elapsed=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {print e - s}')
cpu=$(( $(ticks "$host_pid") - before ))
echo "all $tenants tenants from $publishers connections at once: $(awk -v n=$((tenants * events)) -v t="$elapsed" 'BEGIN {printf "%.0f", n / t}') publishes/s, host CPU $(awk -v c="$cpu" -v h="$hz" -v n=$((tenants * events)) 'BEGIN {printf "%.1f", c * 1e6 / h / n}') us per publish"
echo "at the end: host RSS $(($(rss_kib "$host_pid") / 1024)) MiB, $(metric 'notify_plugin_components{where="memory"}') compiled component(s) in memory"
