#!/usr/bin/env bash
# Runs every check and every test of the workspace on a fresh machine.
# It installs or starts whatever the tests need, so nothing has to be set up by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

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
