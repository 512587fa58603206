#!/usr/bin/env bash
# The scale run: CONNECTIONS concurrent WebSocket connections on this one machine, all
# receiving one broadcast. A process may hold 20,000 open files, so the connections are
# spread over NODES hosts in cluster mode (Redis broker) over one private redis-server, and
# over generator processes of at most PER_GEN connections each, every generator leaving from
# its own source address (127.0.0.2, 127.0.0.3, ...). Each generator connects round-robin to
# every node. Once all are connected, node 1 publishes EVENTS broadcasts (1 per second) and
# every connection must receive each of them once.
#
# Prints: connections held (the nodes' notify_connections), handshake rate and host CPU per
# connect, RSS per node and in total, the generators' RSS, kernel TCP memory and sockets
# (/proc/net/sockstat), Redis memory, then the broadcast: deliveries, missing, duplicates,
# completion time (first publish to last receipt) and publish-to-receive latency percentiles
# over every delivery.
#
#   bench/scale.sh [CONNECTIONS] [NODES]   (defaults 500000 26)
#   env: PER_GEN (connections per generator process, default 19000), EVENTS (default 1),
#        CONCURRENCY (handshakes in flight per generator, default 64),
#        CONNECT_SECS (bound on connecting, default 900), RECEIVE_SECS (bound on the
#        broadcast, default 300), HOST_BIN (measure another build), STORM (set: a
#        reconnect storm, below)
#
# With STORM=1 the generators resume (`--resume true`), and 1.5 s after the first broadcast
# Redis drops every node's pub/sub connection (CLIENT KILL TYPE pubsub), as after a Redis
# restart: each node resubscribes and tells all its clients to reconnect and resume, within
# `connections.reconnect_spread`, while the broadcasts go on. Also printed: reconnects,
# welcomes that did not recover the broadcast, the storm's length (the kill to the last
# welcome), and the CPU time Redis and the nodes spent in it. Use EVENTS of at least 3 so
# that some are published during the storm.
#
# Bounded: every wait has a deadline, and everything started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-500000}
nodes=${2:-26}
per_gen=${PER_GEN:-19000}
events=${EVENTS:-1}
connect_secs=${CONNECT_SECS:-900}
receive_secs=${RECEIVE_SECS:-300}
gens=$(( (total + per_gen - 1) / per_gen ))
per_node=$(( (total + nodes - 1) / nodes ))
if [ "$per_node" -gt 19500 ] || [ "$gens" -gt 250 ]; then
  echo "$per_node connections per node (at most 19,500 fit in 20,000 open files) or $gens generators (at most 250 source addresses): use more nodes or a larger PER_GEN"; exit 1
fi
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
pids=()
trap 'stop_all "${pids[@]}"' EXIT

slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
# Idle ticks of the whole machine (idle and iowait, every core).
machine_idle() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
slab_before=$(slab_kib)
start_redis
pids+=("$redis_pid")


echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), memory: $(free -g | awk '/^Mem:/ {print $2}') GiB, $(redis-server --version | cut -d' ' -f3), kernel $(uname -r)"
echo "connections $total over $nodes nodes (≤ $per_node each) and $gens generators (≤ $per_gen each), events $events"

start_nodes "$nodes" bench "$(redis_broker)"
base_rss=$(rss_kib "${node_pids[@]}")
echo "nodes ready: RSS $(( base_rss / 1024 )) MiB in total before any connection"

held() { sum_metric 'notify_connections{tenant="bench"}'; }

# Generators, each from its own source address.
gen_pids=()
cpu_before=$(ticks "${node_pids[@]}")
started=$(date +%s.%N)
for g in $(seq 0 $((gens - 1))); do
  first=$(( g * per_gen )); n=$(( total - first < per_gen ? total - first : per_gen ))
  target/release/notify-load subscribe --url "$urls" --connections "$n" --first "$first" \
    --source "127.0.0.$((g + 2))" --concurrency "${CONCURRENCY:-64}" --events "$events" \
    --hold $(( connect_secs + receive_secs )) --latencies "$work/lat$g" --resume "$([ -n "${STORM:-}" ] && echo true || echo false)" \
    > "$work/gen$g.log" 2>&1 &
  gen_pids+=($!); pids+=($!)
done

# Wait (bounded) until every generator has reported its connections.
deadline=$(( $(date +%s) + connect_secs ))
while true; do
  done_count=$(cat "$work"/gen*.log | grep -c "^connected" || true)
  [ "$done_count" -eq "$gens" ] && break
  for p in "${gen_pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "a generator exited:"; cat "$work"/gen*.log | grep -v '^connected' | head; exit 1; }; done
  [ "$(date +%s)" -lt "$deadline" ] || { echo "not connected within ${connect_secs}s: $done_count of $gens generators done, $(held) held"; exit 1; }
  sleep 1
done
took=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN {print e - s}')
cpu_after=$(ticks "${node_pids[@]}")
opened=$(awk '/^connected/ {s += $2} END {print s}' "$work"/gen*.log)
failed=$(awk '/^connected/ {s += $4} END {print s}' "$work"/gen*.log)
sleep 2
now_held=$(held)
node_rss=(); for p in "${node_pids[@]}"; do node_rss+=("$(rss_kib "$p")"); done
all_rss=$(rss_kib "${node_pids[@]}")
printf 'connected %d (failed %d) in %.1fs = %.0f handshakes/s; host CPU %d µs per connect\n' "$opened" "$failed" "$took" \
  "$(awk -v o="$opened" -v t="$took" 'BEGIN {print o / t}')" $(( (cpu_after - cpu_before) * 1000000 / hz / (opened > 0 ? opened : 1) ))
echo "held by the nodes: $now_held"
echo "node RSS: total $(( all_rss / 1024 )) MiB ($(( (all_rss - base_rss) * 1024 / (now_held > 0 ? now_held : 1) )) B per connection above the empty nodes); per node min $(( $(printf '%s\n' "${node_rss[@]}" | sort -n | head -1) / 1024 )) MiB, max $(( $(printf '%s\n' "${node_rss[@]}" | sort -n | tail -1) / 1024 )) MiB"
echo "generator RSS: total $(( $(rss_kib "${gen_pids[@]}") / 1024 )) MiB ($(( $(rss_kib "${gen_pids[@]}") * 1024 / (opened > 0 ? opened : 1) )) B per connection)"
echo "kernel slab: +$(( ($(slab_kib) - slab_before) / 1024 )) MiB since the start ($(( ($(slab_kib) - slab_before) * 1024 / (opened > 0 ? opened : 1) )) B per connection, both ends)"
echo "kernel: $(awk '/^sockets:/ {print "sockets used " $3} /^TCP:/ {print ", TCP inuse " $3 ", TCP memory " $11 * 4 / 1024 " MiB"}' /proc/net/sockstat | tr -d '\n'); conntrack entries $(cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo n/a)"
echo "redis: $(redis-cli -p "$redis_port" info memory | awk -F: '/^used_memory_human|^used_memory_rss_human/ {gsub("\r", ""); printf "%s %s ", $1, $2}')$(redis-cli -p "$redis_port" info stats | awk -F: '/^pubsub_channels/ {gsub("\r", ""); print "pubsub channels " $2}')"
echo "machine: $(free -m | awk '/^Mem:/ {print "used " $3 " MiB of " $2}')"

# The broadcast.
target/release/notify-load broadcast --publish "http://127.0.0.1:${node_ports[0]}/v1/publish" --key bench-key \
  --events "$events" --rate 1 > "$work/publish.log" &
publisher=$!; pids+=("$publisher")
if [ -n "${STORM:-}" ]; then
  sleep 1.5
  storm_us=$(date +%s%6N)
  storm_cpu=("$(ticks "$redis_pid")" "$(ticks "${node_pids[@]}")" "$(machine_idle)")
  echo "storm: Redis dropped $(redis-cli -p "$redis_port" client kill type pubsub) pub/sub connections"
fi
wait "$publisher"
cat "$work/publish.log"
first_us=$(awk '{print $(NF - 1)}' "$work/publish.log")
deadline=$(( $(date +%s) + receive_secs ))
for p in "${gen_pids[@]}"; do
  while kill -0 "$p" 2>/dev/null && [ "$(date +%s)" -lt "$deadline" ]; do sleep 0.5; done
  kill -INT "$p" 2>/dev/null || true
done
if [ -n "${STORM:-}" ]; then
  # CPU seconds Redis and the nodes spent from the drop until the generators stopped.
  storm_cpu_end=("$(ticks "$redis_pid")" "$(ticks "${node_pids[@]}")" "$(machine_idle)")
  storm_wall=$(( $(date +%s%6N) - storm_us ))
fi
for p in "${gen_pids[@]}"; do wait "$p" || true; done
grep -h "^received" "$work"/gen*.log | awk -v first="$first_us" '
  function num(pattern) { match($0, pattern); return substr($0, RSTART, RLENGTH) + 0 }
  {got += $2; want += $4; miss += num("[0-9]+, duplicates") ; dup += num("[0-9]+, closed"); closed += num("[0-9]+, close codes")
   match($0, /\[[^]]*\]/); n = split(substr($0, RSTART + 1, RLENGTH - 2), c, " ")
   for (i = 1; i <= n; i++) { split(c[i], kv, "x"); codes[kv[1]] += kv[2] }
   if ($(NF - 1) > last) last = $(NF - 1)}
  END {printf "broadcast: received %d of %d (missing %d, duplicates %d, closed early %d), completed %.3f s after the first publish\n",
       got, want, miss, dup, closed, (last - first) / 1e6
       for (k in codes) if (k != "") printf "  connections closed with code %s: %d\n", k, codes[k]}'
cat "$work"/lat* | sort -n | awk '{v[NR] = $1} END {if (NR) printf "latency over %d deliveries: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
  NR, v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.9) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000, v[NR] / 1000}'
if [ -n "${STORM:-}" ]; then
  grep -h "^resumed" "$work"/gen*.log | awk -v storm="$storm_us" '
    {match($0, /reconnects [0-9]+/); r += substr($0, RSTART + 11, RLENGTH - 11)
     match($0, /recovered [0-9]+/); u += substr($0, RSTART + 10, RLENGTH - 10)
     match($0, /gave up [0-9]+/); g += substr($0, RSTART + 8, RLENGTH - 8)
     match($0, /retry later [0-9]+/); d += substr($0, RSTART + 12, RLENGTH - 12)
     if ($(NF - 1) > last) last = $(NF - 1)}
    END {printf "storm: %d reconnects (not recovered %d, sent back to retry later %d, gave up %d), the last welcome %.1f s after Redis dropped the nodes\n", r, u, d, g, (last - storm) / 1e6}'
  awk -v w="$storm_wall" -v hz="$hz" -v r="$(( storm_cpu_end[0] - storm_cpu[0] ))" -v n="$(( storm_cpu_end[1] - storm_cpu[1] ))" \
    -v i="$(( storm_cpu_end[2] - storm_cpu[2] ))" -v cores="$(nproc)" \
    'BEGIN {printf "storm CPU over %.1f s (%d cores: %.1f CPU-s): Redis %.1f s (%.0f%% of one core), nodes %.1f s, the machine idle %.1f s\n",
    w / 1e6, cores, cores * w / 1e6, r / hz, 100 * r / hz / (w / 1e6), n / hz, i / hz}'
fi
echo "redis commands, most called: $(redis-cli -p "$redis_port" info commandstats | tr -d '\r' | awk -F'[:,=]' '/^cmdstat_/ {print $3, substr($1, 9)}' | sort -rn | head -6 | awk '{printf "%s %d, ", $2, $1}')"
echo "nodes: broker reconnects $(sum_metric notify_broker_reconnects_total), resyncs $(sum_metric notify_broker_resyncs_total), slow-client disconnects $(sum_metric 'notify_slow_client_disconnects_total{tenant="bench"}')"
grep -h -o "WARN.*" "$work"/node*.log 2>/dev/null | grep -v INSECURE | sed -E 's/[0-9]+(\.[0-9]+)?(ms|s|µs)?/N/g' | sort | uniq -c | sort -rn | head -5 || true
