#!/usr/bin/env bash
# What plugin versions that do not run cost a node, and how long a rollback takes.
# VERSIONS distinct JavaScript versions of `redact` (the component with a different custom
# section appended, so each has its own hash and nothing is shared) are uploaded one after
# another to one tenant of a release host (or $HOST_BIN); then the plugin is removed (every
# version is now only a rollback target); then rolled back twice. After each step: the
# request's time and host RSS (read 2 s later), and after each rollback one publish through
# the version rolled back to.
#
#   bench/plugin-memory.sh [VERSIONS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=${1:-3}
scripts/build-plugins.sh > /dev/null
cargo build --release -q -p notify-host
source bench/common.sh
work=$(mktemp -d)
host_pid=""
trap 'stop_all "$host_pid"' EXIT
plugin_host js
base="http://127.0.0.1:$port/v1/admin/tenants/js/plugins/transform"

# version N: redact_js.wasm with a custom section naming N appended.
for n in $(seq "$versions"); do
  python3 - "$n" plugins/target/components/redact_js.wasm "$work/v$n.wasm" <<'PY'
import sys
n, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
def leb(v):
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)
name, payload = b"bench-version", n.encode()
body = leb(len(name)) + name + payload
open(dst, "wb").write(open(src, "rb").read() + b"\x00" + leb(len(body)) + body)
PY
done

# step LABEL METHOD URL [FILE]: one admin request, its time, and host RSS 2 s later.
step() {
  local took
  took=$(curl -sf -o /dev/null -w '%{time_total}' -X "$2" -H "authorization: Bearer $bench_admin" \
    -H 'notify-plugin-config: {"fields":"ssn"}' ${4:+--data-binary "@$4"} "$3")
  sleep 2
  printf '%-24s %7.3f s, host RSS %4d MiB\n' "$1" "$took" $(($(rss_kib "$host_pid") / 1024))
}

# runs: one publish goes through the active version (a redacted field comes back).
runs() {
  curl -sf -o /dev/null -X POST -H 'authorization: Bearer js-publish-key' -H 'content-type: application/json' \
    -d '{"users":["nobody"],"event":"e","data":{"ssn":"1"}}' "http://127.0.0.1:$port/v1/publish"
  echo "  calls so far: $(metric 'notify_plugin_calls_total{tenant="js",hook="transform"}')"
}

echo "date: $(date -u +%F), host: ${HOST_BIN:-target/release/notify-host}, rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc)"
printf '%-24s          host RSS %4d MiB\n' "started" $(($(rss_kib "$host_pid") / 1024))
for n in $(seq "$versions"); do step "upload version $n" PUT "$base" "$work/v$n.wasm"; done
step "remove the plugin" DELETE "$base"
step "roll back (version $versions)" POST "$base/rollback"
runs
step "roll back (version $((versions - 1)))" POST "$base/rollback"
runs
