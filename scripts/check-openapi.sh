#!/usr/bin/env bash
# Checks the OpenAPI document a running host serves with tools that are not the host's:
# - openapi-spec-validator (Python package index) validates it as OpenAPI 3.1;
# - openapi-typescript (npm) generates TypeScript types from it, and tsc type-checks a
#   small client (scripts/openapi-client/client.ts) written against them.
# Needs target/debug/notify-host, or the host binary $NOTIFY_HOST_BIN names (the test command
# sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/openapi
mkdir -p "$out"
data=$(mktemp -d)
log="$out/host.log"
NOTIFY_SERVER__LISTEN=127.0.0.1:0 NOTIFY_SERVER__METRICS_LISTEN=off NOTIFY_SERVER__DATA_DIR="$data" "${NOTIFY_HOST_BIN:-target/debug/notify-host}" --config config.toml >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -rf "$data"' EXIT
addr=""
for _ in $(seq 300); do
    addr=$(grep -o 'listening on [0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "the host did not start" >&2; cat "$log" >&2; exit 1; }
curl -sSf "http://$addr/v1/openapi.json" -o "$out/openapi.json"

venv=target/openapi-tools
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/check-openapi-requirements.txt
"$venv/bin/openapi-spec-validator" "$out/openapi.json"

cd scripts/openapi-client
npm ci --no-audit --no-fund --silent
npx --no-install openapi-typescript "../../$out/openapi.json" --output generated/notify.ts
npx --no-install tsc -p tsconfig.json
echo "the served document validates, and a client generated from it compiles"
