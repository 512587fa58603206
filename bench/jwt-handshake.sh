#!/usr/bin/env bash
# Handshake cost by the way clients authenticate, in one sitting: insecure `?user=`, an
# HS256 token checked with the tenant's secret, and RS256 and ES256 tokens checked with keys
# from an identity provider's key set (JWKS, served on loopback). Per round and mode: host
# CPU per completed WebSocket handshake (welcome received) and the rate the load generator
# saw. Modes are interleaved within each round, each on a fresh host, so that drift of the
# shared machine falls on every mode alike. Tokens are signed before the generator's clock
# starts.
#
#   bench/jwt-handshake.sh [CONNECTIONS] [ROUNDS] [IN_FLIGHT]   (defaults 10000 3 200)
#   HOST_BIN=path/to/notify-host bench/jwt-handshake.sh      (measure another build of the host)
#
# Needs openssl (the keys) and Node.js (their JWKs).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-10000}
rounds=${2:-3}
in_flight=${3:-200}
cargo build --release -q -p notify-host -p notify-bench
source bench/common.sh
work=$(mktemp -d)
host_pid=""; idp_pid=""
trap 'stop_all "$host_pid" "$idp_pid"' EXIT
secret=bench-hs256-secret-0123456789

# The provider's keys and their key set, published by a static server on loopback.
mkdir -p "$work/idp"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/rsa.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ec.pem" 2>/dev/null
node -e '
const { createPublicKey } = require("node:crypto");
const { readFileSync } = require("node:fs");
const jwk = (file, kid, alg) => ({ ...createPublicKey(readFileSync(file)).export({ format: "jwk" }), kid, alg, use: "sig" });
console.log(JSON.stringify({ keys: [jwk(process.argv[1], "rsa-1", "RS256"), jwk(process.argv[2], "ec-1", "ES256")] }));
' "$work/rsa.pem" "$work/ec.pem" > "$work/idp/certs.json"
idp_port=$(free_port)
python3 -m http.server "$idp_port" --bind 127.0.0.1 --directory "$work/idp" > "$work/idp.log" 2>&1 &
idp_pid=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$idp_port/certs.json" >/dev/null && break; sleep 0.1; done

# config AUTH: a host config whose tenant `bench` authenticates with AUTH.
config() {
  port=$(free_port)
  cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[tenants.bench]
publish_key = "bench-key"
history = { size = 0 }
auth = $1
TOML
}

jwks="{ mode = \"jwt\", jwks_url = \"http://127.0.0.1:$idp_port/certs.json\" }"
declare -A auth=(
  [insecure]='{ mode = "insecure" }'
  [hs256]="{ mode = \"jwt\", hs256_secret = \"$secret\" }"
  [jwks-rs256]=$jwks
  [jwks-es256]=$jwks
)
declare -A flags=(
  [insecure]=""
  [hs256]="--token-secret $secret"
  [jwks-rs256]="--token-key $work/rsa.pem --token-alg RS256 --token-kid rsa-1"
  [jwks-es256]="--token-key $work/ec.pem --token-alg ES256 --token-kid ec-1"
)

for round in $(seq "$rounds"); do
  for mode in insecure hs256 jwks-rs256 jwks-es256; do
    config "${auth[$mode]}"
    start_host "$work/config.toml"
    before=$(ticks "$host_pid")
    # shellcheck disable=SC2086 # the flags are words
    out=$(target/release/notify-load idle --url "ws://127.0.0.1:$port/v1/ws/bench" --connections "$conns" \
      --concurrency "$in_flight" --hold 1 --user-prefix "r$round-" ${flags[$mode]} 2>&1 | head -1)
    deadline=$((SECONDS + 60))
    while [ "$(metric 'notify_connections{tenant="bench"}')" != "0" ]; do
      [ $SECONDS -lt $deadline ] || { echo "connections did not close"; exit 1; }
      sleep 0.2
    done
    after=$(ticks "$host_pid")
    echo "$mode round $round: $out; host CPU $(( (after - before) * 1000000 / hz / conns )) µs per connection (handshake, hold, close)"
    kill "$host_pid"; wait "$host_pid" 2>/dev/null || true; host_pid=""
    sleep 2
  done
done
