#!/usr/bin/env bash
# Plugin benchmarks, each compared with the same work without the plugin in the same run:
#   1. handshake rate: jwt-auth plugin vs built-in JWT auth (5,000 connections each);
#   2. broadcast to 10,000 subscribers: segment-router active vs no route plugin;
#   3. transform cost: publishes/s through the redact plugin vs none, one request at a time
#      and from 4 connections at once, with the host's CPU per publish, and the plugin's mean
#      call time from the host's own histogram.
#
#   bench/plugins.sh [ROUNDS]   (default 2; rounds alternate the variants)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
scripts/build-plugins.sh
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT

wasm=$PWD/plugins/target/wasm32-wasip2/release
secret=bench-secret-0123456789abcdef
port=$(free_port)
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.builtin]
publish_key = "builtin-key"
auth = { mode = "jwt", hs256_secret = "$secret" }
[tenants.plugauth]
publish_key = "plugauth-key"
plugins.auth = { path = "$wasm/jwt_auth.wasm", config = { secret = "$secret" } }
[tenants.plain]
publish_key = "plain-key"
plugins.auth = { path = "$wasm/jwt_auth.wasm", config = { secret = "$secret" } }
[tenants.seg]
publish_key = "seg-key-1"
plugins.auth = { path = "$wasm/jwt_auth.wasm", config = { secret = "$secret" } }
plugins.route = { path = "$wasm/segment_router.wasm" }
[tenants.noxform]
publish_key = "noxform-key"
[tenants.xform]
publish_key = "xform-key"
plugins.transform = { path = "$wasm/redact.wasm", config = { fields = "ssn" } }
TOML

start_host "$work/config.toml"
load=target/release/notify-load
ws="ws://127.0.0.1:$port/v1/ws"
pub="http://127.0.0.1:$port/v1/publish"

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc)"
for r in $(seq "$rounds"); do
  echo "== round $r"
  for t in builtin plugauth; do
    printf 'handshake %-9s ' "$t"
    $load idle --url "$ws/$t" --connections 5000 --concurrency 64 --hold 0 --token-secret "$secret" --claim plan=pro
    sleep 1
  done
  # Alternate which variant goes first, so neither always inherits the other's teardown.
  variants=(plain seg); [ $((r % 2)) -eq 0 ] && variants=(seg plain)
  for v in "${variants[@]}"; do
    if [ "$v" = plain ]; then
      printf 'broadcast no-route       '
      $load fanout --url "$ws/plain" --publish "$pub" --key plain-key --connections 10000 --events 100 --token-secret "$secret" --claim plan=pro | tail -1
    else
      printf 'broadcast segment-router '
      $load fanout --url "$ws/seg" --publish "$pub" --key seg-key-1 --connections 10000 --events 100 --token-secret "$secret" --claim plan=pro --attribute plan=pro | tail -1
    fi
    sleep 2
  done
  for p in 1 4; do
    for key in noxform xform; do
      t0=$(ticks "$host_pid")
      out=$($load publish --publish "$pub" --key $key-key --events 20000 --payload 256 --publishers $p)
      t1=$(ticks "$host_pid")
      cpu=$(awk -v t=$((t1 - t0)) 'BEGIN {printf "%.1f", t * 10000 / 20000}')
      echo "publish $key, $p at once: $out, host CPU $cpu us/publish"
    done
  done
done
for hook in 'plugauth",hook="auth' 'xform",hook="transform' 'seg",hook="route'; do
  sum=$(metric "notify_plugin_call_seconds_sum{tenant=\"$hook\"}")
  count=$(metric "notify_plugin_call_seconds_count{tenant=\"$hook\"}")
  awk -v s="$sum" -v c="$count" -v h="$hook" 'BEGIN {printf "plugin mean call %-28s %.1f us over %d calls\n", h, s/c*1e6, c}'
done
