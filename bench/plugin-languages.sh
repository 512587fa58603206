#!/usr/bin/env bash
# The `redact` transform in Rust, JavaScript (componentize-js) and Python (componentize-py),
# side by side on one release host with the default plugin limits:
#   - size of the component, and upload time (the host compiles and instantiates it once);
#   - host RSS before and after the upload, and after 3,000 calls (one warm instance);
#   - publishes/s through each, one at a time, and the mean call time from the host's
#     notify_plugin_call_seconds;
#   - the same with plugins.recycle_after_calls = 1 (a fresh instance every call), whose
#     difference is the instantiation time;
#   - warm calls again with 16 KiB and 256 KiB payloads (EVENTS / 10 of them), the latter
#     also with plugins.hook_deadline = 50ms.
# The slowest call is the upper bound of the lowest histogram bucket that holds them all.
#
#   bench/plugin-languages.sh [EVENTS]   (default 3000)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-3000}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
admin=$bench_admin
declare -A wasm=(
  [rust]=plugins/target/wasm32-wasip2/release/redact.wasm
  [js]=plugins/target/components/redact_js.wasm
  [py]=plugins/target/components/redact_py.wasm
)

# slowest TENANT: the upper bound (ms) of the lowest histogram bucket that holds every call.
slowest() {
  scrape | awk -v t="$1" '
    index($1, "notify_plugin_call_seconds_bucket{tenant=\"" t "\",hook=\"transform\"") == 1 {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); n[++k] = le; v[k] = $2
    }
    END { for (i = 1; i <= k; i++) if (v[i] == v[k]) { print (n[i] == "+Inf" ? "inf" : n[i] * 1000); exit } }'
}

# run RECYCLE PAYLOAD EVENTS [DEADLINE]: one host with tenants none, rust, js and py;
# uploads, then EVENTS publishes of a PAYLOAD-byte pad through each.
run() {
  port=$(free_port)
  cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_token = "$admin"
[log]
level = "warn"
[plugins]
recycle_after_calls = $1
hook_deadline = "${4:-2ms}"
TOML
  for t in none rust js py; do
    printf '[tenants.%s]\npublish_key = "%s-publish-key"\n' "$t" "$t" >> "$work/config.toml"
  done
  start_host "$work/config.toml"
  echo "== recycle_after_calls = $1, payload $2 B, hook_deadline ${4:-2ms}"
  for t in rust js py; do
    before=$(rss_kib "$host_pid")
    took=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H "authorization: Bearer $admin" \
      -H 'notify-plugin-config: {"fields":"ssn"}' --data-binary "@${wasm[$t]}" \
      "http://127.0.0.1:$port/v1/admin/tenants/$t/plugins/transform")
    after=$(rss_kib "$host_pid")
    printf 'upload %-4s %6.1f MiB in %6.2f s, host RSS +%d KiB\n' "$t" \
      "$(awk -v b="$(stat -c %s "${wasm[$t]}")" 'BEGIN {print b / 1048576}')" "$took" $((after - before))
  done
  for t in none rust js py; do
    before=$(rss_kib "$host_pid")
    out=$(target/release/notify-load publish --publish "http://127.0.0.1:$port/v1/publish" --key "$t-publish-key" \
      --events "$3" --payload "$2" --publishers 1)
    after=$(rss_kib "$host_pid")
    line="publish $t: $out, host RSS +$((after - before)) KiB"
    if [ "$t" != none ]; then
      sum=$(metric "notify_plugin_call_seconds_sum{tenant=\"$t\",hook=\"transform\"}")
      count=$(metric "notify_plugin_call_seconds_count{tenant=\"$t\",hook=\"transform\"}")
      failed=$(metric "notify_plugin_failures_total{tenant=\"$t\",hook=\"transform\"}")
      line="$line, mean call $(awk -v s="$sum" -v c="$count" 'BEGIN {printf "%.1f", s / c * 1e6}') us over $count calls"
      line="$line, slowest <= $(slowest "$t") ms, $failed failed"
    fi
    echo "$line"
  done
  kill "$host_pid"
  wait "$host_pid" 2>/dev/null || true
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), events: $events"
run 10000 256 "$events"
run 1 256 "$events"
run 10000 16384 $((events / 10))
run 10000 262144 $((events / 10))
run 10000 262144 $((events / 10)) 50ms
