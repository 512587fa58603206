#!/usr/bin/env bash
# How long a plugin change takes to act on every node: three nodes over one Redis; each
# round uploads a transform plugin none of them has compiled before (the redact component
# with a unique custom section, so a new hash) on node 1, then deletes it on node 2. The
# time counts from sending the request to the moment every node's own
# GET /v1/admin/tenants/bench/plugins shows the change (polled every 2 ms per node).
#
#   bench/plugin-propagation.sh [ROUNDS]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
scripts/build-plugins.sh
cargo build --release -q -p notify-host
source bench/common.sh
work=$(mktemp -d)
pids=()
trap 'stop_all "${pids[@]}"' EXIT

start_redis
pids+=("$redis_pid")
start_nodes 3 bench "$(redis_broker)"
ports=("${node_ports[@]}")

echo "date: $(date -u +%F), rustc: $(rustc --version | cut -d' ' -f2), cores: $(nproc), $(redis-server --version | cut -d' ' -f3), 3 nodes, $rounds rounds"
python3 - "$rounds" "$PWD/plugins/target/wasm32-wasip2/release/redact.wasm" "${ports[@]}" <<'PY'
import json, statistics, sys, threading, time, urllib.request

rounds, wasm_path, ports = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
base = open(wasm_path, "rb").read()
auth = {"Authorization": "Bearer bench-admin-token"}

def leb(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def unique(i):
    name, payload = b"bench-round", str(i).encode()
    content = leb(len(name)) + name + payload
    return base + b"\x00" + leb(len(content)) + content

def request(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/admin/tenants/bench{path}", data=body, method=method, headers=auth)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")

def running(port):
    nodes = request(port, "GET", "/plugins")["nodes"]
    here = next(n for n in nodes if n["this_node"])
    return [p["hash"] for p in here["plugins"]]

def propagation(change, done):
    seen = {}
    start = time.perf_counter()
    def watch(port):
        while time.perf_counter() - start < 10:
            if done(running(port)):
                seen[port] = time.perf_counter() - start
                return
            time.sleep(0.002)
    threads = [threading.Thread(target=watch, args=(p,)) for p in ports]
    for t in threads: t.start()
    result = change()
    for t in threads: t.join()
    if len(seen) < len(ports):
        sys.exit(f"a node did not apply the change within 10 s: {seen}")
    return result, max(seen.values()) * 1000

uploads, deletes = [], []
for i in range(rounds):
    wasm = unique(time.time_ns() + i)
    hash_box = {}
    def upload():
        hash_box["h"] = request(ports[0], "PUT", "/plugins/transform", wasm)["hash"]
    import hashlib
    expected = hashlib.sha256(wasm).hexdigest()
    _, ms = propagation(upload, lambda hashes: expected in hashes)
    uploads.append(ms)
    _, ms = propagation(lambda: request(ports[1], "DELETE", "/plugins/transform"), lambda hashes: not hashes)
    deletes.append(ms)

def summary(xs):
    xs = sorted(xs)
    return f"median {statistics.median(xs):.0f} ms, max {xs[-1]:.0f} ms"
print(f"upload of a new component on node 1 -> transforming on all 3 nodes: {summary(uploads)}")
print(f"delete on node 2 -> off on all 3 nodes:                          {summary(deletes)}")
PY
