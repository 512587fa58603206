#!/usr/bin/env bash
# Builds every plugin in plugins/ for wasm32-wasip2 (adding the target if missing).
# Output: plugins/target/wasm32-wasip2/release/*.wasm
set -euo pipefail
cd "$(dirname "$0")/../plugins"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 --workspace
