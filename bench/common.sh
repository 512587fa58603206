# Shared helpers of the benchmark scripts (sourced, not run).
#   free_port            prints a free loopback port
#   start_host CONFIG    starts a release host (or $HOST_BIN) in the background, sets host_pid,
#                        and waits until its /readyz answers on $port
#   metric NAME          prints the value of one /metrics sample of the host on $port
#   scrape [PORT]        prints the /metrics of the host on PORT (default $port)
#   start_redis          starts a private redis-server (no persistence) on a free port, sets
#                        redis_port and redis_pid
#   start_nodes N TENANT BROKER [EXTRA]
#                        starts N hosts sharing BROKER (a [broker] table: redis_broker);
#                        sets node_pids, node_ports and urls; sum_metric NAME sums over them
#   demo_config, plugin_host, upload_plugin, ticks, rss_kib, measure_load: see each below
# Scripts set `work` (a temp dir) and `port`, and stop what they started with stop_all.

# Every connection of a benchmark comes from a handful of loopback addresses: no limits per
# client address (the table is still kept).
export NOTIFY_ADDRESSES__MAX_CONNECTIONS=0 NOTIFY_ADDRESSES__CONNECT_RATE=0
# Several nodes run on one machine: no metrics listener each; the scripts read /metrics on
# the client port with the admin token every benchmark host gets.
bench_admin=bench-admin-token
export NOTIFY_SERVER__METRICS_LISTEN=off NOTIFY_SERVER__ADMIN_TOKEN=$bench_admin

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_host() {
  "${HOST_BIN:-target/release/notify-host}" --config "$1" > "$work/host.log" 2>&1 &
  host_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "host did not become ready:"; cat "$work/host.log"; return 1
}

scrape() {
  curl -s -H "authorization: Bearer $bench_admin" "http://127.0.0.1:${1:-$port}/metrics"
}

metric() {
  scrape | awk -v m="$1" '$1 == m {print $2}'
}

# Stops the given PIDs (only processes this script started) and removes $work.
stop_all() {
  for pid in "$@"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ] && [ -f "$work/host.log" ]; then cp "$work/host.log" /tmp/bench-host.log; fi
  rm -rf "$work"
}

# redis_broker: the [broker] table of a node on the private Redis of start_redis.
redis_broker() {
  printf '[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"\n' "$redis_port"
}

# start_nodes N TENANT BROKER [EXTRA]: starts N hosts (a release build, or $HOST_BIN), each
# with warn logs, the BROKER table, EXTRA (more TOML tables) and the insecure tenant TENANT
# (publish key TENANT-key; $TENANT_EXTRA, if set, goes inside its table), and waits until
# every node answers /readyz. Sets node_pids, node_ports and urls (the tenant's WebSocket URL
# on every node, comma-separated) and adds the PIDs to pids.
start_nodes() {
  local n=$1 tenant=$2 broker=$3 extra=${4:-} i p
  node_pids=(); node_ports=(); urls=""
  for i in $(seq "$n"); do
    p=$(free_port)
    cat > "$work/node$i.toml" <<TOML
[server]
listen = "127.0.0.1:$p"
[log]
level = "warn"
$broker
$extra
[tenants.$tenant]
publish_key = "$tenant-key"
auth = { mode = "insecure" }
${TENANT_EXTRA:-}
TOML
    "${HOST_BIN:-target/release/notify-host}" --config "$work/node$i.toml" > "$work/node$i.log" 2>&1 &
    node_pids+=($!); pids+=($!); node_ports+=("$p")
    urls="${urls:+$urls,}ws://127.0.0.1:$p/v1/ws/$tenant"
  done
  for i in "${!node_ports[@]}"; do
    p=${node_ports[$i]}
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p/readyz" >/dev/null && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$p/readyz" >/dev/null || { echo "node $((i + 1)) not ready:"; cat "$work/node$((i + 1)).log"; return 1; }
  done
}

# sum_metric NAME: one /metrics sample summed over the nodes of start_nodes.
sum_metric() {
  local s=0 p v
  for p in "${node_ports[@]}"; do v=$(scrape "$p" | awk -v m="$1" '$1 == m {print $2}'); s=$(( s + ${v:-0} )); done
  echo "$s"
}

start_redis() {
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no > "$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start:"; cat "$work/redis.log"; return 1
}

# plugin_host TENANT...: starts one host on a free $port (warn logs, the bench admin token)
# with the given tenants (publish key TENANT-publish-key, no plugins), as start_host does.
plugin_host() {
  port=$(free_port)
  printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_token = "%s"\n[log]\nlevel = "warn"\n' "$port" "$bench_admin" \
    > "$work/config.toml"
  local t
  for t in "$@"; do printf '[tenants.%s]\npublish_key = "%s-publish-key"\n' "$t" "$t" >> "$work/config.toml"; done
  start_host "$work/config.toml"
}

# upload_plugin TENANT FILE [CONFIG]: PUTs FILE as TENANT's transform on the host on $port
# (plugin config CONFIG, default {"fields":"ssn"}) and prints the request's time in seconds.
upload_plugin() {
  local config=${3:-'{"fields":"ssn"}'}
  curl -sf -o /dev/null -w '%{time_total}' -X PUT -H "authorization: Bearer $bench_admin" \
    -H "notify-plugin-config: $config" --data-binary "@$2" "http://127.0.0.1:$port/v1/admin/tenants/$1/plugins/transform"
}

# demo_config [EXTRA]: writes $work/config.toml for one host on $port: warn logs, tenant
# `demo` (publish key demo-key, insecure auth), stock settings otherwise. EXTRA (TOML
# sections) goes before the tenant.
demo_config() {
  cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
${1:-}
[tenants.demo]
publish_key = "demo-key"
auth = { mode = "insecure" }
TOML
}

# ticks PID...: CPU time (user + system) of processes, in clock ticks of $hz per second.
ticks() { local s=0 p; for p in "$@"; do s=$(( s + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo "$s"; }
hz=$(getconf CLK_TCK)

# rss_kib PID...: resident memory of processes, in KiB.
rss_kib() { local s=0 p; for p in "$@"; do s=$(( s + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status") )); done; echo "$s"; }

# measure_load LABEL SERVER_PIDS DELIVERIES ARGS...: runs `notify-load ARGS...` and counts the
# server's CPU (SERVER_PIDS: one PID, or several comma-separated) from when every subscriber
# is connected (the generator prints "subscribers N
# connected") until the run ends; prints the generator's summary and the CPU per delivery.
measure_load() {
  local label=$1 pids=${2//,/ } deliveries=$3 log before after gen
  shift 3
  log=$(mktemp "$work/load.XXXXXX")
  target/release/notify-load "$@" > "$log" 2>&1 &
  gen=$!
  until grep -q "^subscribers" "$log"; do
    kill -0 "$gen" 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.05
  done
  # shellcheck disable=SC2086 # one word per PID
  before=$(ticks $pids)
  wait "$gen"
  # shellcheck disable=SC2086
  after=$(ticks $pids)
  echo "$label: $(tail -1 "$log"); server CPU $(( (after - before) * 1000000 / hz / deliveries )) µs per delivery"
}

# Nchan: nginx with two workers (this machine's cores), one channel `bench` with WebSocket
# subscribers at /sub and its publisher at /pub; what is published is delivered as it came.
start_nchan() {
  local module=/usr/lib/nginx/modules/ngx_nchan_module.so
  if ! command -v nginx >/dev/null || [ ! -f "$module" ]; then
    echo "nchan: not installed (apt-get install nginx libnginx-mod-nchan), skipped"
    return 1
  fi
  nchan_port=$(free_port)
  cat > "$work/nginx.conf" <<NGINX
load_module $module;
daemon off;
worker_processes 2;
worker_rlimit_nofile 20000;
pid $work/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$nchan_port backlog=4096;
    location = /sub { nchan_subscriber websocket; nchan_channel_id bench; nchan_subscriber_first_message newest; }
    location = /pub { nchan_publisher; nchan_channel_id bench; nchan_message_buffer_length 100; }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -p "$work" > "$work/nginx.out" 2>&1 &
  nchan_pid=$!
  for _ in $(seq 50); do [ "$(pgrep -c -P "$nchan_pid")" -ge 2 ] && break; sleep 0.1; done
  nchan_pids="$nchan_pid,$(pgrep -P "$nchan_pid" | paste -sd, -)"
  echo "nchan: nginx $(nginx -v 2>&1 | cut -d/ -f2), processes $nchan_pids"
}

