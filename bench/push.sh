#!/usr/bin/env bash
# Pushes per second through each provider on loopback, and the memory a pending escalation
# costs. One release host with three tenants (Web Push, FCM, APNs), each with DEVICES users
# of one device and `push.when = "always"`; the stand-in providers (bench/push-sink.mjs:
# HTTP/1 for Web Push and FCM, HTTP/2 over TLS for APNs) answer at once and count. Per
# provider: EVENTS events to every user, timed from the first publish until the sink
# counted them all, with the host's CPU over that time. Then the memory: a tenant whose
# events wait an hour unread (`unread_after`) against one that never pushes, the same
# events published to both; the difference in RSS over the escalations waiting.
#
#   bench/push.sh [DEVICES] [EVENTS] [PENDING_USERS]   (defaults 1000 5 1000: 5,000 pushes
#                                                      per provider, 100,000 pending)
#   NOTIFY_PUSH__CONCURRENCY=64 bench/push.sh            (pushes in flight per tenant)
#
# Needs openssl and Node.js.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-1000}
events=${2:-5}
pending_users=${3:-1000}
cargo build --release -q -p notify-host
source bench/common.sh
work=$(mktemp -d)
host_pid=""; sink_pid=""
trap 'stop_all "$host_pid" "$sink_pid"' EXIT

# Credentials: a TLS certificate for the APNs stand-in (its CA trusted through
# SSL_CERT_FILE), a service account's RSA key, an APNs .p8 key, a VAPID key pair.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$work/tls-key.pem" -out "$work/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n' > "$work/ext.cnf"
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -CAcreateserial -days 1 \
  -extfile "$work/ext.cnf" -out "$work/tls.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/fcm.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/apns.p8" 2>/dev/null
vapid=$(target/release/notify-host push vapid-keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["private_key"])')
http_port=$(free_port); apns_port=$(free_port); port=$(free_port)
node bench/push-sink.mjs "$http_port" "$apns_port" "$work/tls.pem" "$work/tls-key.pem" &
sink_pid=$!
account=$(python3 -c '
import json, sys
print(json.dumps(json.dumps({"type": "service_account", "project_id": "bench", "client_email": "bench@bench.iam.gserviceaccount.com",
  "private_key": open(sys.argv[1]).read(), "private_key_id": "k", "token_uri": f"http://127.0.0.1:{sys.argv[2]}/token"})))
' "$work/fcm.pem" "$http_port")
p8=$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$work/apns.p8")
cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[log]
level = "warn"
[push]
allow_private = true
[tenants.web]
publish_key = "web-publish-key"
push = { when = "always", web = { vapid_private_key = "$vapid", contact = "mailto:bench@example.com" } }
[tenants.fcm]
publish_key = "fcm-publish-key"
push = { when = "always", fcm = { service_account = $account, base_url = "http://127.0.0.1:$http_port" } }
[tenants.apns]
publish_key = "apns-publish-key"
push = { when = "always", apns = { team_id = "TEAM123456", key_id = "KEY1234567", private_key = $p8, topic = "com.example.bench", base_url = "https://localhost:$apns_port" } }
[tenants.pending]
publish_key = "pending-key"
history = { size = 100, acks = true }
push = { when = "unread_after", delay = "1h", web = { vapid_private_key = "$vapid", contact = "mailto:bench@example.com" } }
[tenants.control]
publish_key = "control-key"
history = { size = 100, acks = true }
TOML
SSL_CERT_FILE="$work/ca.pem" start_host "$work/config.toml"

# Registers DEVICES users of each tenant, one device each, and publishes for the pushes.
python3 - "$port" "$devices" "$events" "$http_port" "$pending_users" <<'PY' > "$work/plan.json"
import http.client, json, sys, base64
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
port, devices, events, sink, pending = (int(a) for a in sys.argv[1:])
key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
conn = http.client.HTTPConnection("127.0.0.1", port)
def post(path, key_, body):
    conn.request("POST", path, json.dumps(body), {"authorization": f"Bearer {key_}", "content-type": "application/json"})
    r = conn.getresponse(); r.read(); assert r.status in (200, 202), (r.status, path)
for i in range(devices):
    sub = {"endpoint": f"http://127.0.0.1:{sink}/push/{i}", "keys": {"p256dh": b64(key), "auth": b64(bytes(16))}}
    post(f"/v1/users/u{i}/devices", "web-publish-key", {"platform": "web", "subscription": sub})
    post(f"/v1/users/u{i}/devices", "fcm-publish-key", {"platform": "fcm", "token": f"fcm-token-{i:08d}-bench"})
    post(f"/v1/users/u{i}/devices", "apns-publish-key", {"platform": "apns", "token": f"{i:064x}"})
print(json.dumps({"devices": devices}))
PY

count() { curl -s "http://127.0.0.1:$http_port/count" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
publish_all() {  # publish_all KEY: EVENTS events, each to every user (in batches of 1,000)
  python3 - "$port" "$1" "$devices" "$events" <<'PY'
import http.client, json, sys
port, key, devices, events = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port)
for e in range(events):
    for start in range(0, devices, 1000):
        body = {"users": [f"u{i}" for i in range(start, min(devices, start + 1000))], "event": f"e{e}", "data": {"n": e},
                "push": {"title": "Bench", "body": "A push", "collapse_key": f"e{e}"}}
        conn.request("POST", "/v1/publish", json.dumps(body), {"authorization": f"Bearer {key}", "content-type": "application/json"})
        r = conn.getresponse(); r.read(); assert r.status == 202, r.status
PY
}

total=$(( devices * events ))
echo "date: $(date -u +%FT%TZ)  pushes per provider: $total  concurrency per tenant: ${NOTIFY_PUSH__CONCURRENCY:-16}"
for provider in web fcm apns; do
  before=$(count "$provider"); cpu0=$(ticks "$host_pid"); t0=$(date +%s.%N)
  publish_all "$provider-publish-key"
  deadline=$(( $(date +%s) + 300 ))
  while [ "$(count "$provider")" -lt $(( before + total )) ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$provider: only $(count "$provider") of $total within 300 s"; exit 1; }
    sleep 0.02
  done
  t1=$(date +%s.%N); cpu1=$(ticks "$host_pid")
  python3 -c "
t = $t1 - $t0; cpu = ($cpu1 - $cpu0) / $hz
print(f'$provider: {$total} pushes in {t:.2f} s: {$total / t:,.0f} pushes/s; host CPU {cpu / $total * 1e6:.0f} µs per push')"
done
failed=$(scrape | awk '/^notify_push_failed_total/ && $2 > 0')
[ -z "$failed" ] || { echo "failures: $failed"; exit 1; }

# Memory: the same events to the same users of both tenants; only `pending` keeps them
# waiting. Each publish names 1,000 users (one escalation per user).
mem() {  # mem KEY: RSS growth (KiB) over publishing 100 events to PENDING_USERS users
  local before after
  before=$(rss_kib "$host_pid")
  python3 - "$port" "$1" "$pending_users" <<'PY'
import http.client, json, sys
port, key, users = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)
for e in range(100):
    for start in range(0, users, 1000):
        body = {"users": [f"p{i}" for i in range(start, min(users, start + 1000))], "event": "reminder", "data": {"n": e}}
        conn.request("POST", "/v1/publish", json.dumps(body), {"authorization": f"Bearer {key}", "content-type": "application/json"})
        r = conn.getresponse(); r.read(); assert r.status == 202, r.status
PY
  sleep 1
  after=$(rss_kib "$host_pid")
  echo $(( after - before ))
}
control=$(mem control-key)
waiting=$(mem pending-key)
pending=$(metric notify_push_pending)
python3 -c "
n = $pending; extra = ($waiting - $control) * 1024
print(f'pending escalations: {n:,}; RSS growth: control {$control:,} KiB, with pushes waiting {$waiting:,} KiB; {extra / n:,.0f} B per pending escalation')"
