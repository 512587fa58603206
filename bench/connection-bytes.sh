#!/usr/bin/env bash
# Where the memory of an idle WebSocket connection goes, per part, and what 1,000,000 idle
# connections would need on one machine like this one:
#   - the host: RSS per connection, and its heap at its peak by what allocated it
#     (heaptrack, second pass: each stack's peak bytes summed by its innermost frame of the
#     host, tungstenite, hyper or tokio, divided by CONNECTIONS);
#   - the load generator (notify-load idle): RSS per connection;
#   - the kernel: socket buffer pages (/proc/net/sockstat) and slab (/proc/meminfo) per
#     connection, which on loopback holds both ends of each connection.
#
#   bench/connection-bytes.sh [CONNECTIONS]    (default 15000; one generator process, so
#                                               at most about 19,000)
#   HOST_BIN=path/to/notify-host bench/connection-bytes.sh
#
# Needs heaptrack (apt-get install heaptrack). Stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-15000}
command -v heaptrack_print >/dev/null || { echo "needs heaptrack (apt-get install heaptrack)"; exit 2; }
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; load_pid=""
trap 'stop_all "$load_pid" "$host_pid"' EXIT
port=$(free_port)
demo_config '[connections]
heartbeat_interval = "25s"
idle_timeout = "60s"'
url="ws://127.0.0.1:$port/v1/ws/demo"

sock_pages() { awk '/^TCP:/ {print $NF}' /proc/net/sockstat; }
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
per() { echo $(( ($2 - $1) * 1024 / conns )); }

# hold: opens CONNECTIONS idle connections and waits until they are all connected and 5 s
# have passed (the generator keeps them open until stopped).
hold() {
  target/release/notify-load idle --url "$url" --connections 1 --hold 1 --user-prefix warm- >/dev/null
  sleep 1.5
  target/release/notify-load idle --url "$url" --connections "$conns" --hold 600 > "$work/load.log" 2>&1 &
  load_pid=$!
  local deadline=$((SECONDS + 300))
  until grep -qs "^connected" "$work/load.log"; do
    [ $SECONDS -lt $deadline ] && kill -0 "$load_pid" 2>/dev/null || { cat "$work/load.log"; exit 1; }
    sleep 0.5
  done
  sleep 5
}

release() {
  kill "$load_pid"; wait "$load_pid" 2>/dev/null || true; load_pid=""
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), kernel: $(uname -r), connections: $conns"
start_host "$work/config.toml"
load_base=$(target/release/notify-load idle --url "$url" --connections 1 --hold 3 >/dev/null & p=$!; sleep 2; rss_kib $p; wait $p || true)
host_before=$(rss_kib "$host_pid"); pages_before=$(sock_pages); slab_before=$(slab_kib)
hold
host_after=$(rss_kib "$host_pid"); load_after=$(rss_kib "$load_pid"); pages_after=$(sock_pages); slab_after=$(slab_kib)
release
kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
page_kib=$(( $(getconf PAGESIZE) / 1024 ))
host_b=$(per "$host_before" "$host_after")
load_b=$(per "$load_base" "$load_after")
sock_b=$(per $((pages_before * page_kib)) $((pages_after * page_kib)))
slab_b=$(per "$slab_before" "$slab_after")
echo "host RSS per connection: $host_b B ($host_before -> $host_after KiB)"
echo "generator RSS per connection: $load_b B ($load_base -> $load_after KiB)"
echo "kernel per connection, both ends: socket buffers $sock_b B ($pages_before -> $pages_after pages), slab $slab_b B ($slab_before -> $slab_after KiB)"
awk -v h="$host_b" -v l="$load_b" -v s="$sock_b" -v k="$slab_b" -v g=1073.741824 'BEGIN {
  printf "1,000,000 connections: host %.2f GiB, generator %.2f GiB, kernel %.2f GiB (buffers %.2f, slab %.2f), all %.2f GiB\n",
    h / g, l / g, (s + k) / g, s / g, k / g, (h + l + s + k) / g }'

# The host's heap by what allocated it, under heaptrack.
heaptrack -o "$work/heap" "${HOST_BIN:-target/release/notify-host}" --config "$work/config.toml" > "$work/host.log" 2>&1 &
host_pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
hold
release
pkill -TERM -P "$host_pid" -f notify-host || true
wait "$host_pid" 2>/dev/null || true; host_pid=""
heaptrack_print -f "$work"/heap.*zst --flamegraph-cost-type peak -F "$work/peak.folded" >/dev/null
python3 - "$work/peak.folded" "$conns" <<'EOF'
import re, sys
from collections import Counter
parts = Counter()
own = re.compile(r"(notify_host::[\w:]+|tungstenite::[\w:]+|hyper::[\w:]+|tokio::[\w:]+|tokio_tungstenite::[\w:]+)")
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    frames = [f for f in stack.split(";") if own.search(f)]
    where = own.search(frames[-1]).group(1) if frames else "other"
    parts["::".join(where.split("::")[:4])] += int(n)
conns = int(sys.argv[2])
total = sum(parts.values())
print(f"host heap at its peak: {total / conns:.0f} B per connection, by innermost frame:")
for where, n in parts.most_common(15):
    print(f"  {n / conns:7.0f} B  {where}")
EOF
