#!/usr/bin/env bash
# The cost of a transform plugin call in instructions, which, unlike time, does not move
# with whatever else this machine is doing: the host runs under callgrind, and COUNT
# publishes (one at a time, after 500 unmeasured ones) go to a tenant without a transform
# and then to one with the `redact` transform. Prints instructions per publish for each, and
# the difference split into the guest's JIT code and the host's own (wasmtime, copies,
# bookkeeping). System calls are not counted: their kernel side is outside callgrind.
#
#   bench/plugin-instructions.sh [COUNT]        (default 2000)
#   HOST_BIN=path/to/notify-host WASM_DIR=dir/with/redact.wasm bench/plugin-instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }
scripts/build-plugins.sh
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
wasm=${WASM_DIR:-$PWD/plugins/target/wasm32-wasip2/release}
load=target/release/notify-load

# run KEY: callgrind's totals for COUNT publishes with KEY, in $work/cg.KEY
run() {
  port=$(free_port)
  cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.noxform]
publish_key = "noxform-key"
[tenants.xform]
publish_key = "xform-key"
plugins.transform = { path = "$wasm/redact.wasm", config = { fields = "ssn" } }
TOML
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1" --instr-atstart=no --smc-check=all-non-file \
    "${HOST_BIN:-target/release/notify-host}" --config "$work/config.toml" > "$work/host.log" 2>&1 &
  host_pid=$!
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  local pub="http://127.0.0.1:$port/v1/publish"
  $load publish --publish "$pub" --key "$1-key" --events 500 --payload 256 > /dev/null
  callgrind_control -i on "$host_pid" > /dev/null 2>&1
  $load publish --publish "$pub" --key "$1-key" --events "$count" --payload 256 > /dev/null
  callgrind_control -i off "$host_pid" > /dev/null 2>&1
  callgrind_control -d "$host_pid" > /dev/null 2>&1
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
}

# split FILE: "total jit" instructions in a callgrind dump (code without a symbol is JIT)
split() {
  callgrind_annotate --threshold=100 --tree=none --auto=no "$1" 2>/dev/null | awk '
    /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
    /\?\?\?:0x/ { gsub(",", "", $1); jit += $1 }
    END { print total, jit + 0 }'
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), $count publishes of a 256-byte pad each"
run noxform
run xform
read -r plain _ < <(split "$work/cg.noxform.1")
read -r xform jit < <(split "$work/cg.xform.1")
awk -v p="$plain" -v x="$xform" -v j="$jit" -v n="$count" 'BEGIN {
  printf "instructions per publish: no transform %d, redact %d (+%d)\n", p / n, x / n, (x - p) / n
  printf "of the difference: guest JIT code %d, host %d\n", j / n, (x - p - j) / n }'
