#!/usr/bin/env bash
# Webhook isolation: does one tenant's hanging endpoint change another tenant's webhooks or
# its clients' deliveries? One host with two tenants. `noisy` gets waves of CONNECTIONS new
# users, each connected for a second (presence_debounce is 1 ms), so its endpoint gets a
# steady stream of user.online and user.offline events; `demo` runs the everyday broadcast
# (`notify-load fanout`: SUBSCRIBERS connections, whose 10,000 connects are as many
# user.online events for its endpoint, then 20 broadcasts at 2/s). Twice in one sitting:
# `noisy`'s endpoint answering, then hanging (it accepts and never answers, so every
# request waits out webhooks.timeout and its queue fills). Reports demo's p99 and CPU per
# delivery, demo's webhook events delivered and their mean latency, and noisy's.
#
# With CLUSTER=1, the same on two nodes over a private redis-server: demo's subscribers
# spread over both, noisy's users on the second, presence transitions handed to webhooks
# through Redis (any node may send either tenant's); figures summed over the nodes.
#
#   bench/webhook-isolation.sh [SUBSCRIBERS] [CONNECTIONS]   (defaults 10000 1000)
#   CLUSTER=1 bench/webhook-isolation.sh
#   HOST_BIN=path/to/notify-host bench/webhook-isolation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
subs=${1:-10000}
conns=${2:-1000}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
cluster=${CLUSTER:-}
host_pid=""; noisy_pid=""; demo_hook=""; noisy_hook=""; redis_pid=""; pids=()
trap 'stop_all "$noisy_pid" "$host_pid" "$demo_hook" "$noisy_hook" "${pids[@]}" "$redis_pid"' EXIT
port=$(free_port)
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), demo subscribers $subs, noisy users $conns a wave${cluster:+, two nodes over Redis $(redis-server --version | cut -d' ' -f3)}"

# every_node: the client ports of the hosts of this run.
every_node() { if [ -n "$cluster" ]; then echo "${node_ports[@]}"; else echo "$port"; fi; }

# webhook_stats TENANT: events delivered and their mean latency, from /metrics (summed over
# the nodes).
webhook_stats() {
  local p
  for p in $(every_node); do scrape "$p"; done | awk -v t="tenant=\"$1\"" '
    index($1, t) && /^notify_webhook_events_sent_total/ {n += $2}
    index($1, t) && /^notify_webhook_latency_seconds_sum/ {s += $2} index($1, t) && /^notify_webhook_latency_seconds_count/ {c += $2}
    END {printf "%s webhook events delivered %d, mean latency %.1f ms", substr(t, 9, length(t) - 9), n, c ? s / c * 1000 : 0}'
}

# webhook_sum NAME TENANT: one webhook sample of TENANT summed over the nodes.
webhook_sum() {
  local p
  for p in $(every_node); do scrape "$p"; done | awk -v m="$1{tenant=\"$2\"" 'index($1, m) == 1 {n += $2} END {print n + 0}'
}

# noisy_users: waves of CONNECTIONS new users of `noisy`, each connected for a second then
# gone (a user.online and a user.offline each), one wave after another, for at most 5 minutes.
noisy_users() {
  local wave=0 until=$((SECONDS + 300))
  while [ $SECONDS -lt $until ]; do
    wave=$((wave + 1))
    target/release/notify-load idle --url "ws://127.0.0.1:$noisy_port_of_host/v1/ws/noisy" --connections "$conns" --hold 1 \
      --user-prefix "w$wave-" --concurrency 100 > /dev/null 2>&1 || true
  done
}

# run MODE: noisy's endpoint answers or hangs.
run() {
  local mode=$1 demo_port noisy_port
  demo_port=$(free_port); noisy_port=$(free_port)
  python3 bench/webhook_receiver.py answer "$demo_port" & demo_hook=$!
  python3 bench/webhook_receiver.py "$mode" "$noisy_port" & noisy_hook=$!
  local broker=$'[broker]\nkind = "memory"\npresence_debounce = "1ms"'
  if [ -n "$cluster" ]; then
    start_redis
    broker="$(redis_broker)"$'\npresence_debounce = "1ms"\nnode_timeout = "5s"'
  fi
  local tenants
  tenants=$(cat <<TOML
[webhooks]
allow_private = true
timeout = "5s"
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
webhooks = [{ url = "http://127.0.0.1:$demo_port/hooks", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }]
[tenants.noisy]
publish_key = "noisy-key"
auth = { mode = "insecure" }
webhooks = [{ url = "http://127.0.0.1:$noisy_port/hooks", secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }]
TOML
)
  sleep 0.5
  local server_pids urls publish
  if [ -n "$cluster" ]; then
    # The second tenant comes in through EXTRA: start_nodes writes one tenant of its own.
    start_nodes 2 spare "$broker" "$tenants"
    server_pids=$(IFS=,; echo "${node_pids[*]}")
    urls="ws://127.0.0.1:${node_ports[0]}/v1/ws/demo,ws://127.0.0.1:${node_ports[1]}/v1/ws/demo"
    publish="http://127.0.0.1:${node_ports[0]}/v1/publish"
    noisy_port_of_host=${node_ports[1]}
  else
    printf '[server]\nlisten = "127.0.0.1:%s"\n[log]\nlevel = "warn"\n%s\n%s\n' "$port" "$broker" "$tenants" > "$work/config.toml"
    start_host "$work/config.toml"
    server_pids=$host_pid
    urls="ws://127.0.0.1:$port/v1/ws/demo"
    publish="http://127.0.0.1:$port/v1/publish"
    noisy_port_of_host=$port
  fi
  noisy_users &
  noisy_pid=$!
  sleep 5
  measure_load "noisy endpoint $mode: demo" "$server_pids" $(( subs * 20 )) fanout --url "$urls" \
    --publish "$publish" --key demo-key --connections "$subs" --events 20 --rate 2 --payload 200 \
    --concurrency 200
  echo "noisy endpoint $mode: $(webhook_stats demo); $(webhook_stats noisy); noisy queued $(webhook_sum notify_webhook_queued noisy), dead-lettered $(webhook_sum notify_webhook_events_dead_lettered_total noisy)"
  pkill -P "$noisy_pid" 2>/dev/null || true
  kill "$noisy_pid" "$demo_hook" "$noisy_hook" $host_pid "${pids[@]}" $redis_pid 2>/dev/null || true
  wait 2>/dev/null || true
  noisy_pid=""; host_pid=""; demo_hook=""; noisy_hook=""; pids=(); redis_pid=""
}

run answer
run hang
