#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ with cargo-afl and runs each with AFL++.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    (default: 20 s for every target)
#   JOBS=2 scripts/fuzz.sh 600               (two targets at a time)
#   scripts/fuzz.sh build                    (only install cargo-afl and build the targets)
#
# The instrumented build goes to $FUZZ_TARGET_DIR (default ~/.cache/notify/fuzz-target), a
# build cache outside the checkout like cargo's own registry: a later run on the same
# machine rebuilds only what changed (the host), not every instrumented dependency.
# Installs cargo-afl (which builds AFL++ from source) when it is missing. Each target starts
# from its committed corpus (fuzz/corpus/TARGET) and writes its findings under
# fuzz/target/findings/TARGET. Fails if any target crashed or hung; each finding belongs in
# fuzz/regressions/TARGET once fixed, where the host's unit tests replay it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/notify/fuzz-target}"
build_only=""
if [ "${1:-}" = build ]; then build_only=1; shift; fi
seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(client_frames publish_body envelope credentials config plugin_output)
jobs=${JOBS:-1}

if ! cargo afl --version >/dev/null 2>&1; then
    echo "== installing cargo-afl"
    cargo install cargo-afl --locked --version 0.18.2
fi
cargo afl build --locked -q --bins
[ -z "$build_only" ] || exit 0

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
export AFL_QUIET=1 AFL_NO_STARTUP_CALIBRATION=1
run() {
    local target=$1 out=target/findings/$1
    rm -rf "$out"
    mkdir -p "$out"
    cargo afl fuzz -V "$seconds" -t 2000 -i "corpus/$target" -o "$out" "$CARGO_TARGET_DIR/debug/$target" \
        >"$out.log" 2>&1 || { echo "$target: afl-fuzz failed"; tail -20 "$out.log"; return 1; }
    local stats=$out/default/fuzzer_stats
    local execs crashes hangs
    execs=$(awk '$1 == "execs_done" { print $3 }' "$stats")
    crashes=$(awk '$1 == "saved_crashes" { print $3 }' "$stats")
    hangs=$(awk '$1 == "saved_hangs" { print $3 }' "$stats")
    echo "$target: $execs executions in ${seconds} s, $crashes crashes, $hangs hangs"
    [ "$crashes" = 0 ] && [ "$hangs" = 0 ] || { ls "$out/default/crashes" "$out/default/hangs"; return 1; }
}

failed=0
pids=()
for target in "${targets[@]}"; do
    run "$target" &
    pids+=($!)
    if [ ${#pids[@]} -ge "$jobs" ]; then
        for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
        pids=()
    fi
done
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
exit "$failed"
