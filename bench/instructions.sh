#!/usr/bin/env bash
# Costs counted in instructions, which, unlike time, do not move with whatever else this
# machine is doing: the server runs under callgrind, measured from after a warm-up. System
# calls are not counted: their kernel side is outside callgrind.
#
#   bench/instructions.sh transform [COUNT]   (default 2000)
#     COUNT publishes (one at a time, after 500 unmeasured ones) to a tenant without a
#     transform, then to one with the `redact` transform; prints instructions per publish
#     for each, and the difference split into the guest's JIT code (code without a symbol)
#     and the host's own (wasmtime, copies, bookkeeping).
#   bench/instructions.sh handshake [COUNT]   (default 2000)
#     COUNT WebSocket connections (50 at a time, each closed once welcomed, after 500
#     unmeasured ones) to notify (stock tenant `demo`, memory broker, history on), then to
#     the floor server; prints instructions and allocations per connection for each. With
#     BROKER=redis, notify runs on the Redis broker (a private redis-server) instead.
#
#   bench/instructions.sh fanout [SUBSCRIBERS]   (default 1000)
#     SUBSCRIBERS WebSocket connections receive broadcast events (200-byte pad, each published
#     once the previous was accepted), to notify (stock tenant `demo`, memory broker, history
#     on), then to the floor server; each is run twice, with 5 and with 25 events, counted
#     from connect to the last delivery. The difference between the two runs, divided by the
#     20 x SUBSCRIBERS deliveries it added, is the cost of a delivery (the publish included,
#     shared by its deliveries), without the connects both runs share.
#   HOST_BIN=path/to/notify-host WASM_DIR=dir/with/redact.wasm bench/instructions.sh ...
#   DUMPS=DIR keeps the callgrind dumps there (cg.notify.1, cg.floor.1, cg.noxform.1,
#   cg.xform.1), for `callgrind_annotate` to say where the instructions went.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?transform, handshake or fanout}
count=${2:-2000}
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }
[ "$mode" = transform ] && scripts/build-plugins.sh
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; redis_pid=""
trap 'stop_all "$host_pid" "$redis_pid"' EXIT
wasm=${WASM_DIR:-$PWD/plugins/target/wasm32-wasip2/release}
load=target/release/notify-load

# measured NAME PROGRAM ARGS...: starts PROGRAM under callgrind (sets host_pid); `measure`
# and `finish` then bracket the work to count, into $work/cg.NAME.1.
measured() {
  local name=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$name" --instr-atstart=no \
    --smc-check=all-non-file "$@" > "$work/host.log" 2>&1 &
  host_pid=$!
  for _ in $(seq 600); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.2; done
  echo "server did not start:"; cat "$work/host.log"; return 1
}
measure() { callgrind_control -i on "$host_pid" > /dev/null 2>&1; }
finish() {
  callgrind_control -i off "$host_pid" > /dev/null 2>&1
  callgrind_control -d "$host_pid" > /dev/null 2>&1
  kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
  if [ -n "${DUMPS:-}" ]; then mkdir -p "$DUMPS" && cp "$work"/cg.*.1 "$DUMPS"/; fi
}

# totals FILE: "instructions jit mallocs" in a callgrind dump
totals() {
  local annotated
  annotated=$(callgrind_annotate --threshold=100 --tree=none --auto=no "$1" 2>/dev/null)
  local mallocs
  mallocs=$(callgrind_annotate --threshold=100 --tree=calling "$1" 2>/dev/null \
    | awk '/>   .*malloc\.c:malloc \(/ { gsub(/[(x,]/, "", $(NF-1)); n += $(NF-1) } END { print n + 0 }')
  awk -v m="$mallocs" '
    /PROGRAM TOTALS/ { gsub(",", "", $1); total = $1 }
    /\?\?\?:0x/ { gsub(",", "", $1); jit += $1 }
    END { print total, jit + 0, m }' <<< "$annotated"
}

transform_run() {
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
  measured "$1" "${HOST_BIN:-target/release/notify-host}" --config "$work/config.toml"
  local pub="http://127.0.0.1:$port/v1/publish"
  $load publish --publish "$pub" --key "$1-key" --events 500 --payload 256 > /dev/null
  measure
  $load publish --publish "$pub" --key "$1-key" --events "$count" --payload 256 > /dev/null
  finish
}

handshake_run() {
  local name=$1 url=$2
  $load idle --url "$url" --connections 500 --concurrency 50 --hold 0 --user-prefix w- > /dev/null
  sleep 1
  measure
  $load idle --url "$url" --connections "$count" --concurrency 50 --hold 0 --user-prefix m- > /dev/null
  sleep 2
  finish
  read -r total _ mallocs < <(totals "$work/cg.$name.1")
  awk -v t="$total" -v m="$mallocs" -v n="$count" -v s="$name" \
    'BEGIN { printf "%s: %d instructions and %.1f allocations per connection\n", s, t / n, m / n }'
}

# fanout_run NAME WS_URL PUBLISH_URL EVENTS [GENERATOR FLAGS]: one measured fanout run
fanout_run() {
  local name=$1 ws=$2 publish=$3 events=$4
  shift 4
  measure
  $load fanout --url "$ws" --publish "$publish" --key demo-key --connections "$count" --events "$events" \
    --rate 0 --payload 200 --concurrency 50 --user-prefix "$name-$events-" "$@" > /dev/null
  sleep 2
  finish
}

# per_delivery NAME: instructions and allocations a delivery adds, from NAME.5 and NAME.25
per_delivery() {
  read -r few _ few_m < <(totals "$work/cg.$1.5.1")
  read -r many _ many_m < <(totals "$work/cg.$1.25.1")
  awk -v a="$few" -v b="$many" -v am="$few_m" -v bm="$many_m" -v n=$(( 20 * count )) -v s="$1" \
    'BEGIN { printf "%s: %d instructions and %.2f allocations per delivery\n", s, (b - a) / n, (bm - am) / n }'
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), mode $mode, count $count"
case $mode in
  transform)
    transform_run noxform
    transform_run xform
    read -r plain _ _ < <(totals "$work/cg.noxform.1")
    read -r xform jit _ < <(totals "$work/cg.xform.1")
    awk -v p="$plain" -v x="$xform" -v j="$jit" -v n="$count" 'BEGIN {
      printf "instructions per publish: no transform %d, redact %d (+%d)\n", p / n, x / n, (x - p) / n
      printf "of the difference: guest JIT code %d, host %d\n", j / n, (x - p - j) / n }'
    ;;
  handshake)
    broker=""
    if [ "${BROKER:-memory}" = redis ]; then
      start_redis
      broker=$(printf '[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"' "$redis_port")
    fi
    port=$(free_port)
    demo_config "$broker"
    measured notify "${HOST_BIN:-target/release/notify-host}" --config "$work/config.toml"
    handshake_run notify "ws://127.0.0.1:$port/v1/ws/demo"
    port=$(free_port)
    measured floor target/release/notify-floor --listen "127.0.0.1:$port"
    handshake_run floor "ws://127.0.0.1:$port/"
    ;;
  fanout)
    [ "$count" = 2000 ] && [ -z "${2:-}" ] && count=1000
    for events in 5 25; do
      port=$(free_port)
      demo_config
      measured "notify.$events" "${HOST_BIN:-target/release/notify-host}" --config "$work/config.toml"
      fanout_run notify "ws://127.0.0.1:$port/v1/ws/demo" "http://127.0.0.1:$port/v1/publish" "$events"
      port=$(free_port)
      measured "floor.$events" target/release/notify-floor --listen "127.0.0.1:$port"
      fanout_run floor "ws://127.0.0.1:$port/" "http://127.0.0.1:$port/publish" "$events" --welcome false
    done
    per_delivery notify
    per_delivery floor
    ;;
  *) echo "unknown mode $mode: transform, handshake or fanout"; exit 1 ;;
esac
