#!/usr/bin/env bash
# Runs every check and every test of the workspace on a fresh machine.
# It installs or starts whatever the tests need, so nothing has to be set up by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== redis-server (cluster tests start private servers on free ports)"
if ! command -v redis-server >/dev/null; then
    if command -v apt-get >/dev/null; then
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        $sudo_cmd apt-get install -y redis-server
    else
        echo "redis-server is not installed; install Redis 7 (e.g. apt-get install redis-server or brew install redis)" >&2
        exit 1
    fi
fi
redis-server --version
redis-cli --version
echo "== plugins (wasm32-wasip2)"
scripts/build-plugins.sh
echo "== formatting"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --quiet --target wasm32-wasip2 --workspace -- -D warnings)
echo "== tests"
cargo test --workspace
echo "== JavaScript client (against real hosts)"
if ! command -v node >/dev/null; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y nodejs
fi
node --version
cargo build -p notify-host
(cd clients/js && node --experimental-websocket --test test/*.test.js)
