#!/usr/bin/env bash
# The tail of warm `transform` calls, per language and payload size, on the default plugin
# limits (hook_deadline 2 ms) and the default failure policy (retry): the `redact` plugin in
# Rust, JavaScript and Python, each for its own tenant on one release host.
#   - as fast as one publisher gets answers (EVENTS broadcasts per language, to nobody), at
#     payloads of 256 B, 4 KiB and 16 KiB (EVENTS / 4 for the last two);
#   - paced at RATE events/s (PACED events per language, 256 B), a node otherwise idle
#     between calls.
# For each: call time p50, p99, p99.9 and the bucket of the slowest call, from the host's
# notify_plugin_call_seconds (linear within a bucket, as Prometheus's histogram_quantile),
# and failed calls, retries and events dropped.
#
#   bench/plugin-tail.sh [EVENTS] [PACED] [RATE]   (defaults 20000 1200 20)
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-20000}
paced=${2:-1200}
rate=${3:-20}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
declare -A wasm=(
  [rust]=plugins/target/wasm32-wasip2/release/redact.wasm
  [js]=plugins/target/components/redact_js.wasm
  [py]=plugins/target/components/redact_py.wasm
)
plugin_host rust js py
for t in rust js py; do upload_plugin "$t" "${wasm[$t]}" > /dev/null; done

# tail TENANT BEFORE AFTER: quantiles of the calls between two scrapes.
tail_of() {
  python3 - "$1" "$2" "$3" <<'PY'
import re, sys
tenant, before, after = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
def samples(text, name):
    out = {}
    for line in text.splitlines():
        m = re.match(name + r'\{tenant="' + tenant + r'",hook="transform"(?:,le="([^"]+)")?\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out
def delta(name):
    b, a = samples(before, name), samples(after, name)
    return {k: a[k] - b.get(k, 0) for k in a}
buckets = delta("notify_plugin_call_seconds_bucket")
bounds = sorted((float(k), v) for k, v in buckets.items() if k != "+Inf")
count = buckets["+Inf"]
def quantile(q):
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cum in bounds:
        if cum >= rank:
            return (lower + (upper - lower) * (rank - below) / max(cum - below, 1)) * 1e3
        lower, below = upper, cum
    return float("inf")
slowest = next((b for b, cum in bounds if cum == count), float("inf")) * 1e3
one = lambda name: delta(name).get(None, 0)
print(f"{int(count)} calls: p50 {quantile(0.5):.3f} ms, p99 {quantile(0.99):.3f} ms, "
      f"p99.9 {quantile(0.999):.3f} ms, slowest <= {slowest:g} ms; "
      f"failed {int(one('notify_plugin_failures_total'))}, retried {int(one('notify_plugin_retries_total'))}, "
      f"dropped {int(one('notify_plugin_dropped_total'))}")
PY
}

# run TENANT EVENTS PAYLOAD [RATE]
run() {
  scrape > "$work/before"
  out=$(target/release/notify-load broadcast --publish "http://127.0.0.1:$port/v1/publish" --key "$1-publish-key" \
    --events "$2" --payload "$3" ${4:+--rate "$4"})
  scrape > "$work/after"
  printf '%-4s %6s B%s: %s (%s)\n' "$1" "$3" "${4:+ at $4/s}" "$(tail_of "$1" "$work/before" "$work/after")" \
    "$(echo "$out" | sed 's/, the first at.*//')"
}

echo "date: $(date -u +%F), commit: $(git rev-parse --short HEAD), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc)"
for t in rust js py; do run "$t" 200 256; done # warm every instance before measuring
for payload in 256 4096 16384; do
  n=$([ "$payload" = 256 ] && echo "$events" || echo $((events / 4)))
  for t in rust js py; do run "$t" "$n" "$payload"; done
done
for t in rust js py; do run "$t" "$paced" 256 "$rate"; done
