#!/usr/bin/env bash
# Validates the deployment files against their published schemas, offline:
# - deploy/compose.yaml against the Compose specification (check-jsonschema's copy);
# - deploy/kubernetes/*.yaml against the Kubernetes API schemas (kubernetes-validate's copy),
#   rejecting unknown fields.
# The tools come from the Python package index into a virtual environment under target/.
# tests/tests/deploy.rs checks what these schemas cannot: that the files agree with the host.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-tools
[ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/check-deploy-requirements.txt
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml
