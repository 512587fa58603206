#!/usr/bin/env bash
# Builds every example plugin in plugins/ into a component:
# - Rust (wasm32-wasip2, adding the target if missing): plugins/target/wasm32-wasip2/release/*.wasm
# - JavaScript (componentize-js, from npm) and Python (componentize-py, from the Python
#   package index, in a virtual environment under plugins/target/python):
#   plugins/target/components/{redact,route,auth}_{js,py}.wasm, one example per hook and
#   language
# Needs node, npm and python3 with venv (scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../plugins"
rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
cargo build --quiet --release --target wasm32-wasip2 --workspace

mkdir -p target/components
(cd javascript && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)

[ -x target/python/bin/pip ] || python3 -m venv target/python
target/python/bin/pip install --quiet --disable-pip-version-check -r python/requirements.txt
for example in redact:transformer route:router auth:authenticator; do
    name=${example%%:*} world=${example#*:}
    (cd "python/$name" && ../../target/python/bin/componentize-py --wit-path ../../../wit --world "$world" \
        componentize app --output "../../target/components/${name}_py.wasm" >/dev/null)
done
ls -l target/components
