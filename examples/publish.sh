#!/usr/bin/env bash
# Publishes sample events to a host started with the repository's config.toml.
#   examples/publish.sh [HOST:PORT]
set -euo pipefail
host=${1:-127.0.0.1:8080}
key=demo-key

# To one user (every device of alice):
curl -sS -X POST "http://$host/v1/publish" -H "Authorization: Bearer $key" \
  -d '{"users":["alice"],"event":"order.updated","data":{"order":42,"status":"shipped"}}'
echo
# To a channel:
curl -sS -X POST "http://$host/v1/publish" -H "Authorization: Bearer $key" \
  -d '{"channels":["news"],"event":"headline","data":"notify 0.1 is out"}'
echo
# To every connection of the tenant, and several events in one request:
curl -sS -X POST "http://$host/v1/publish/batch" -H "Authorization: Bearer $key" \
  -d '[{"broadcast":true,"event":"maintenance","data":{"in_minutes":5}},
       {"users":["alice","bob"],"event":"reminder","data":null}]'
echo
