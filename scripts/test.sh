#!/usr/bin/env bash
# Runs every check and every test of the workspace on a fresh machine.
# It installs or starts whatever the tests need, so nothing has to be set up by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental state, which would double the target's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Installs Debian package $1.
install() {
    if ! command -v apt-get >/dev/null; then
        echo "install the $1 package" >&2
        exit 1
    fi
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$1"
}

# Installs Debian package $2 when command $1 is missing.
need() {
    command -v "$1" >/dev/null || install "$2"
}

echo "== redis-server (cluster tests start private servers on free ports)"
need redis-server redis-server
redis-server --version
redis-cli --version
echo "== plugins (Rust for wasm32-wasip2, JavaScript with componentize-js, Python with componentize-py)"
need node nodejs
need npm npm
need python3 python3
# Debian ships venv's ensurepip apart from python3.
python3 -c 'import ensurepip' 2>/dev/null || install python3-venv
scripts/build-plugins.sh
echo "== deployment files against their schemas (Compose, Kubernetes); systemd-analyze for the unit"
scripts/check-deploy.sh
need systemd-analyze systemd
echo "== formatting"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --quiet --target wasm32-wasip2 --workspace -- -D warnings)
echo "== tests"
cargo test --workspace
echo "== fuzz targets (cargo-afl: 20 s of AFL++ each, from the committed corpora)"
JOBS=2 scripts/fuzz.sh 20
echo "== JavaScript client (against real hosts)"
node --version
cargo build -p notify-host
(cd clients/js && node --experimental-websocket --test test/*.test.js)
echo "== browser tests: the demo and the dashboard (Debian's chromium, driven by playwright-core; screenshots in target/demo-screenshots)"
need chromium chromium
chromium --version
# playwright-core never downloads a browser; the variable makes sure nothing else does.
(cd clients/js && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund && node --test browser-test/*.test.js)
