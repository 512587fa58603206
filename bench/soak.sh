#!/usr/bin/env bash
# Soak: SECS seconds of steady mixed load on one host (memory broker), and whether the host
# stays flat. The tenant keeps history with acks (a 2-minute ttl, so that history reaches
# its steady size within the warm-up) and runs the `redact` transform plugin on every event. `notify-load soak` keeps CONNECTIONS users connected, replacing CHURN of them
# per second (each connect subscribes to a channel; every user event is acked), and
# publishes RATE events/s, half to users, half to channels. Every 30 s the script samples
# the host's RSS, open files, threads, runtime tasks and connections; at the end it compares
# what followed the warm-up (WARMUP seconds) with its first sample.
#
#   bench/soak.sh [SECS] [CONNECTIONS] [CHURN] [RATE]   (defaults 1200 2000 200 200)
#   env: WARMUP (default 300), HOST_BIN (measure another build)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-1200}
conns=${2:-2000}
churn=${3:-200}
rate=${4:-200}
warmup=${WARMUP:-300}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; load_pid=""
trap 'stop_all "$load_pid" "$host_pid"' EXIT
port=$(free_port)
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
history = { size = 100, ttl = "2m", acks = true }
[tenants.demo.plugins.transform]
path = "$PWD/plugins/target/wasm32-wasip2/release/redact.wasm"
config = { fields = "ssn" }
TOML
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $secs s, connections $conns, churn $churn/s, rate $rate events/s, warm-up $warmup s"
start_host "$work/config.toml"
target/release/notify-load soak --url "ws://127.0.0.1:$port/v1/ws/demo" --publish "http://127.0.0.1:$port/v1/publish" \
  --key demo-key --connections "$conns" --churn "$churn" --rate "$rate" --hold "$secs" --user-prefix soak- \
  > "$work/soak.log" 2>&1 &
load_pid=$!
echo "t_s rss_kib fds threads tasks connections"
samples="$work/samples"
start=$(date +%s)
while kill -0 "$load_pid" 2>/dev/null && [ $(( $(date +%s) - start )) -le $(( secs + 60 )) ]; do
  sleep 30
  kill -0 "$host_pid" 2>/dev/null || { echo "the host died"; cat "$work/host.log"; exit 1; }
  kill -0 "$load_pid" 2>/dev/null || break
  line="$(( $(date +%s) - start )) $(rss_kib "$host_pid") $(ls "/proc/$host_pid/fd" | wc -l) $(awk '/^Threads:/ {print $2}' "/proc/$host_pid/status") $(metric notify_tasks) $(metric 'notify_connections{tenant="demo"}')"
  echo "$line" | tee -a "$samples"
done
wait "$load_pid" || { cat "$work/soak.log"; exit 1; }
cat "$work/soak.log"
echo "plugin calls: $(scrape | awk '/^notify_plugin_calls_total/ {s += $2} END {print s + 0}'), slow-client disconnects: $(metric 'notify_slow_client_disconnects_total{tenant="demo"}')"
awk -v w="$warmup" '$1 >= w {n++; if (n == 1) {r0 = $2; f0 = $3; t0 = $5}; if ($2 > rmax) rmax = $2; if (rmin == "" || $2 < rmin) rmin = $2
    if ($3 > fmax) fmax = $3; if (fmin == "" || $3 < fmin) fmin = $3; if ($5 > tmax) tmax = $5; if (tmin == "" || $5 < tmin) tmin = $5; last = $2}
  END {if (n) printf "after the warm-up (%d samples): RSS %d..%d KiB (first %d, last %d: %+.1f%%), open files %d..%d, tasks %d..%d\n",
       n, rmin, rmax, r0, last, 100 * (last - r0) / r0, fmin, fmax, tmin, tmax}' "$samples"
