#!/usr/bin/env bash
# The zlib level and window of compressed server frames, settled by bytes and instructions
# (which, unlike time, do not move with whatever else this machine is doing): for each level
# and window, the compressed size of each payload of bench/compression.py as an event frame,
# and the instructions one compression of a payload takes on average, counted by callgrind
# as the difference between compressing every payload 110 and 10 times, divided by the 300
# compressions it adds.
#
#   bench/deflate-levels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed"; exit 1; }
cargo build --release -q -p notify-bench
bin=target/release/notify-deflate-levels
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$work/cg" "$bin" run "$@" > /dev/null 2> "$work/log"
  awk '/^summary:/ {print $2}' "$work/cg"
}
echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2)"
"$bin" sizes
echo "level window instructions-per-compression"
for level in 1 2 4 6 9; do
  for window in 10 12 15; do
    few=$(instructions "$level" "$window" 10)
    many=$(instructions "$level" "$window" 110)
    echo "$level $window $(( (many - few) / 300 ))"
  done
done
