#!/usr/bin/env bash
# One tenant floods its JavaScript transform (`redact`) from PUBLISHERS connections at once:
# publishes/s, host RSS and calls not made (`notify_plugin_busy_total`) with the tenant's
# call slots at SLOTS (`plugins.instances_per_tenant`), then with as many slots as
# publishers (each publisher's calls then get an instance of their own, as before the
# tenants had slots). A fresh host for each.
#
#   bench/plugin-flood.sh [PUBLISHERS] [SLOTS] [EVENTS]   (defaults 64 16 20000)
#   PAYLOAD=16384 bench/plugin-flood.sh   (payload bytes, default 256: larger payloads make
#                                          calls long enough to yield, so more run at once)
set -euo pipefail
cd "$(dirname "$0")/.."
publishers=${1:-64}
slots=${2:-16}
events=${3:-20000}
payload=${PAYLOAD:-256}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
wasm=plugins/target/components/redact_js.wasm

echo "date: $(date -u +%F), commit: $(git rev-parse --short HEAD), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $publishers publishers, $events events of $payload B"
for n in "$slots" "$publishers"; do
  NOTIFY_PLUGINS__INSTANCES_PER_TENANT=$n plugin_host flood
  upload_plugin flood "$wasm" > /dev/null
  sleep 1
  before=$(rss_kib "$host_pid")
  result=$(target/release/notify-load publish --publish "http://127.0.0.1:$port/v1/publish" \
    --key flood-publish-key --events "$events" --payload "$payload" --publishers "$publishers")
  busy=$(metric 'notify_plugin_busy_total{tenant="flood",hook="transform"}')
  failures=$(metric 'notify_plugin_failures_total{tenant="flood",hook="transform"}')
  echo "slots $n: $result; host RSS $((before / 1024)) -> $(($(rss_kib "$host_pid") / 1024)) MiB; calls not made $busy, failed $failures"
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
done
