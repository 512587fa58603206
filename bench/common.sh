# Shared helpers of the benchmark scripts (sourced, not run).
#   free_port            prints a free loopback port
#   start_host CONFIG    starts a release host (or $HOST_BIN) in the background, sets host_pid,
#                        and waits until its /readyz answers on $port
#   metric NAME          prints the value of one /metrics sample of the host on $port
#   start_redis          starts a private redis-server (no persistence) on a free port, sets
#                        redis_port and redis_pid
# Scripts set `work` (a temp dir) and `port`, and stop what they started with stop_all.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_host() {
  "${HOST_BIN:-target/release/notify-host}" --config "$1" > "$work/host.log" 2>&1 &
  host_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "host did not become ready:"; cat "$work/host.log"; return 1
}

metric() {
  curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

# Stops the given PIDs (only processes this script started) and removes $work.
stop_all() {
  for pid in "$@"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ] && [ -f "$work/host.log" ]; then cp "$work/host.log" /tmp/bench-host.log; fi
  rm -rf "$work"
}

start_redis() {
  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no > "$work/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "redis-server did not start:"; cat "$work/redis.log"; return 1
}
