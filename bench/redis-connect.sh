#!/usr/bin/env bash
# What a connection costs Redis in cluster mode: one node on the Redis broker (a private
# redis-server, stock tenant `demo`), COUNT connections opened 50 at a time and closed as
# soon as they are welcomed (after 500 unmeasured ones). Prints Redis's CPU per connection
# (utime + stime from /proc, over the run and 2 s after it) and its commands per connection
# from INFO commandstats: calls, and the time Redis measured inside each command (commands
# a script runs are counted under their own names as well as in the script's time). Then
# the keys and used_memory the closed connections left in Redis, and those a second round
# of as many new users left.
#
#   bench/redis-connect.sh [COUNT]        (default 5000)
#   HOST_BIN=path/to/notify-host bench/redis-connect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-5000}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; redis_pid=""
trap 'stop_all "$host_pid" "$redis_pid"' EXIT
start_redis
port=$(free_port)
demo_config "$(printf '[broker]\nkind = "redis"\nurl = "redis://127.0.0.1:%s"' "$redis_port")"
start_host "$work/config.toml"
load=target/release/notify-load
url="ws://127.0.0.1:$port/v1/ws/demo"
echo "date: $(date -u +%F), $(redis-server --version | cut -d' ' -f3), $count connections"
$load idle --url "$url" --connections 500 --concurrency 50 --hold 0 --user-prefix w- > /dev/null
sleep 1
redis-cli -p "$redis_port" CONFIG RESETSTAT > /dev/null
used() { redis-cli -p "$redis_port" INFO memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }'; }
stores() { redis-cli -p "$redis_port" --scan --pattern 'notify:store:*' | wc -l; }
keys_before=$(redis-cli -p "$redis_port" DBSIZE); mem_before=$(used); stores_before=$(stores)
before=$(ticks "$redis_pid")
$load idle --url "$url" --connections "$count" --concurrency 50 --hold 0 --user-prefix m- | head -1
sleep 2
after=$(ticks "$redis_pid")
echo "redis CPU per connection: $(( (after - before) * 1000000 / hz / count )) us"
# The slots' store ids (history look epochs, at most 16,384 in all) are counted apart.
kept() {
  keys_after=$(redis-cli -p "$redis_port" DBSIZE); mem_after=$(used); stores_after=$(stores)
  local new_stores=$((stores_after - stores_before))
  echo "kept by Redis after $1 closed: $((keys_after - keys_before - new_stores)) keys and $new_stores new slot store ids ($stores_after in all), $(( (mem_after - mem_before) / count )) B of used_memory per connection"
  keys_before=$keys_after; mem_before=$mem_after; stores_before=$stores_after
}
kept "the connections"
redis-cli -p "$redis_port" INFO commandstats | tr -d '\r' | awk -F'[:,=]' -v n="$count" '
  /^cmdstat_/ && $3 / n >= 0.01 { sub("cmdstat_", "", $1); printf "  %-10s %5.2f calls, %6.2f us per connection\n", $1, $3 / n, $5 / n }' \
  | sort -k4 -rn
# A second round of as many new users: the slots' store ids (history look epochs) exist now.
$load idle --url "$url" --connections "$count" --concurrency 50 --hold 0 --user-prefix n- > /dev/null
sleep 2
kept "a second round of new users"
