#!/usr/bin/env bash
# Builds every example plugin in plugins/ into a component:
# - Rust (wasm32-wasip2, adding the target if missing): plugins/target/wasm32-wasip2/release/*.wasm
# - JavaScript (componentize-js, from npm) and Python (componentize-py, from the Python
#   package index, in a virtual environment under plugins/target/python):
#   plugins/target/components/redact_js.wasm and redact_py.wasm
# Needs node, npm and python3 with venv (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../plugins"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 --workspace

mkdir -p target/components
(cd javascript/redact && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)

[ -x target/python/bin/pip ] || python3 -m venv target/python
target/python/bin/pip install --quiet --disable-pip-version-check -r python/redact/requirements.txt
(cd python/redact && ../../target/python/bin/componentize-py --wit-path ../../../wit --world transformer \
    componentize app --output ../../target/components/redact_py.wasm >/dev/null)
ls -l target/components
