#!/usr/bin/env bash
# Cross-node broadcast throughput and publish-to-deliver latency, the same subscribers and
# events in each setup, measured in one run:
#   single  one node, memory broker (the default);
#   redis1  one node, Redis broker (every event goes through Redis);
#   redis3  three nodes over one Redis, subscribers spread evenly, publishers spread over the
#           nodes in turn as behind a load balancer (PUBLISH_ON_FIRST=1: all on node 1)
#           (any redisN: N nodes, e.g. redis10);
#   redis3c three nodes over a three-shard Redis Cluster (sharded pub/sub), otherwise as redis3.
# Each setup starts fresh hosts; a private redis-server runs on a free port.
#
# Per setup: a throughput pass (EVENTS broadcasts back to back: saturation, so its latency is
# mostly queueing) and a latency pass (LAT_EVENTS broadcasts paced at RATE per second). The
# throughput pass also prints where the CPU went per delivery (nodes, Redis, generator) and
# the nodes' write calls per delivery.
#
#   bench/cluster.sh [SUBSCRIBERS] [EVENTS] [ROUNDS]   (defaults 9000 200 2)
#   env: RATE (default 5), LAT_EVENTS (default 100), SETUPS (default "single redis1 redis3";
#        add redis3c for the Redis Cluster setup), PUBLISHERS (concurrent publishing
#        connections in the throughput pass, default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-9000}
events=${2:-200}
rounds=${3:-2}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
pids=()
trap 'stop_all "${pids[@]}"' EXIT

start_redis
pids+=("$redis_pid")

# A three-shard Redis Cluster, only when a setup needs it.
cluster_urls=""
if [[ " ${SETUPS:-} " == *" redis3c "* ]]; then
  cluster_nodes=()
  for i in 1 2 3; do
    # A cluster node also listens on its port + 10000, so the port must be at most 55535.
    p=$(free_port); while [ "$p" -gt 55535 ]; do p=$(free_port); done
    mkdir -p "$work/shard$i"
    redis-server --bind 127.0.0.1 --port "$p" --save "" --appendonly no --cluster-enabled yes \
      --cluster-config-file nodes.conf --dir "$work/shard$i" > "$work/shard$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
    cluster_nodes+=("127.0.0.1:$p")
    cluster_urls="${cluster_urls:+$cluster_urls,}redis://127.0.0.1:$p"
  done
  redis-cli --cluster create "${cluster_nodes[@]}" --cluster-replicas 0 --cluster-yes > /dev/null
  for _ in $(seq 50); do redis-cli -p "${cluster_nodes[0]#*:}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
fi

# bench_nodes BROKER N: starts N hosts (start_nodes, with a deeper send queue); sets
# publish (every node's publish URL, comma-separated; only node 1's with PUBLISH_ON_FIRST).
bench_nodes() {
  start_nodes "$2" bench "$1" $'[connections]\nsend_queue_frames = 4096'
  publish=""
  for p in "${node_ports[@]}"; do
    if [ -z "$publish" ] || [ -z "${PUBLISH_ON_FIRST:-}" ]; then
      publish="${publish:+$publish,}http://127.0.0.1:$p/v1/publish"
    fi
  done
}

# syscw PID...: write-type system calls (write, sendmsg, ...) made so far by processes.
syscw() { local s=0 p; for p in "$@"; do s=$(( s + $(awk '/^syscw:/ {print $2}' "/proc/$p/io") )); done; echo "$s"; }

# accounted DELIVERIES ARGS...: runs `notify-load ARGS...`, prints its summary, then where the
# CPU went from when every subscriber was connected until the last delivery: µs per delivery
# in the nodes, in Redis and in the generator, and the nodes' write calls per delivery.
accounted() {
  local deliveries=$(( $1 )) log="$work/load.log" gen n0 r0 g0 w0 n1 r1 w1 gtotal
  shift
  bash -c 'target/release/notify-load "$@" & echo "gen $!"; wait $!; echo "children $(awk "{print \$16 + \$17}" /proc/$$/stat)"' \
    _ "$@" > "$log" 2>&1 &
  until grep -q "^subscribers" "$log"; do sleep 0.05; done
  gen=$(awk '$1 == "gen" {print $2}' "$log")
  n0=$(ticks "${node_pids[@]}"); r0=$(ticks "$redis_pid"); w0=$(syscw "${node_pids[@]}"); g0=$(ticks "$gen")
  until grep -q "^children" "$log"; do sleep 0.05; done
  n1=$(ticks "${node_pids[@]}"); r1=$(ticks "$redis_pid"); w1=$(syscw "${node_pids[@]}")
  gtotal=$(awk '$1 == "children" {print $2}' "$log")
  grep -v "^gen \|^children " "$log" | tail -${TAIL:-1}
  printf '        CPU per delivery: nodes %s µs, redis %s µs, generator %s µs; node writes per delivery %s\n' \
    "$(per_delivery $(( n1 - n0 )))" "$(per_delivery $(( r1 - r0 )))" "$(per_delivery $(( gtotal - g0 )))" \
    "$(awk -v w=$(( w1 - w0 )) -v d="$deliveries" 'BEGIN {printf "%.2f", w / d}')"
}
per_delivery() { awk -v t="$1" -v hz="$hz" -v d="$deliveries" 'BEGIN {printf "%.2f", t * 1e6 / hz / d}'; }

stop_nodes() {
  for pid in "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then cat "$work"/node*.log > "/tmp/bench-cluster-$setup.log"; fi
}

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $(redis-server --version | cut -d' ' -f3), subscribers $subs, events $events, latency pass ${LAT_EVENTS:-100} events at ${RATE:-5}/s"
for r in $(seq "$rounds"); do
  echo "== round $r"
  for setup in ${SETUPS:-single redis1 redis3}; do
    case $setup in
      single) bench_nodes "" 1 ;;
      redis3c) bench_nodes "[broker]
kind = \"redis\"
cluster = true
url = \"$cluster_urls\"" 3 ;;
      redis[0-9]*) bench_nodes "$(redis_broker)" "${setup#redis}" ;;
    esac
    printf '%-7s throughput ' "$setup"
    accounted "$subs * $events" fanout --url "$urls" --publish "$publish" --key bench-key \
      --connections "$subs" --events "$events" --concurrency 64 --publishers "${PUBLISHERS:-1}"
    printf '%-7s latency    ' "$setup"
    target/release/notify-load fanout --url "$urls" --publish "$publish" --key bench-key \
      --connections "$subs" --events "${LAT_EVENTS:-100}" --rate "${RATE:-5}" --concurrency 64 2>&1 | tail -${TAIL:-1}
    stop_nodes
    sleep 1
  done
done
