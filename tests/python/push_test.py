"""Web Push from `notify-host push` against independent implementations: a loopback push
service receives the message, checks the VAPID `Authorization` header with PyJWT (ES256,
`aud`, `exp`, `sub`) and decrypts the body with `http_ece` (RFC 8291, aes128gcm) using the
key pair a browser would hold."""

import base64
import json
import os
import subprocess
import sys
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import HOST_BIN, STEP  # noqa: E402


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PushService:
    """Answers every POST with `status` and keeps what it received."""

    def __init__(self, status=201):
        self.status = status
        self.received = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                service.received.append((self.path, dict(self.headers), body))
                self.send_response(service.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def notify(*args, env=None):
    return subprocess.run([HOST_BIN, "push", *args], capture_output=True, text=True, timeout=STEP,
                          env={**os.environ, **(env or {})})


class WebPushTest(unittest.TestCase):
    def setUp(self):
        # What a browser's PushManager.subscribe() makes: a P-256 key pair and an auth secret.
        self.browser_key = ec.generate_private_key(ec.SECP256R1())
        point = self.browser_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        self.p256dh, self.auth = b64(point), b64(os.urandom(16))
        keys = notify("vapid-keys")
        self.assertEqual(keys.returncode, 0, keys.stderr)
        self.vapid = json.loads(keys.stdout)

    def send(self, service, data, *extra):
        return notify("send", "--endpoint", f"{service.origin}/push/sub-1", "--p256dh", self.p256dh,
                      "--auth", self.auth, "--contact", "mailto:ops@example.com", "--data", data, *extra,
                      env={"NOTIFY_VAPID_PRIVATE_KEY": self.vapid["private_key"]})

    def test_a_message_decrypts_to_what_was_sent_with_a_valid_vapid_token(self):
        service = PushService()
        self.addCleanup(service.close)
        data = json.dumps({"title": "Order shipped", "body": "Order 42 is on its way", "n": "é" * 100})
        sent = self.send(service, data, "--ttl", "120", "--urgency", "high", "--topic", "order-42")
        self.assertEqual((sent.returncode, sent.stdout.strip()), (0, "201"), sent.stderr)

        path, headers, body = service.received[0]
        headers = {k.lower(): v for k, v in headers.items()}
        self.assertEqual(path, "/push/sub-1")
        self.assertEqual((headers["content-encoding"], headers["ttl"], headers["urgency"], headers["topic"]),
                         ("aes128gcm", "120", "high", "order-42"))
        scheme, _, params = headers["authorization"].partition(" ")
        self.assertEqual(scheme, "vapid")
        fields = dict(p.strip().split("=", 1) for p in params.split(","))
        self.assertEqual(fields["k"], self.vapid["public_key"])
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(fields["k"]))
        claims = jwt.decode(fields["t"], public, algorithms=["ES256"], audience=service.origin)
        self.assertEqual(claims["sub"], "mailto:ops@example.com")
        self.assertLessEqual(claims["exp"], time.time() + 24 * 3600, "push services refuse tokens over 24 h")

        plain = http_ece.decrypt(body, private_key=self.browser_key, auth_secret=unb64(self.auth), version="aes128gcm")
        self.assertEqual(plain.decode(), data)

    def test_a_gone_subscription_and_bad_input_are_errors(self):
        service = PushService(status=410)
        self.addCleanup(service.close)
        gone = self.send(service, "{}")
        self.assertEqual((gone.returncode, gone.stdout.strip()), (1, "410"))
        self.assertIn("410", gone.stderr)
        too_big = self.send(service, "x" * 5000)
        self.assertEqual(too_big.returncode, 1)
        self.assertIn("at most 4079", too_big.stderr)
        self.p256dh = b64(b"\x04" + b"\x00" * 64)
        self.assertIn("p256dh", self.send(service, "{}").stderr)
        self.assertEqual(len(service.received), 1, "nothing sent for refused input")


if __name__ == "__main__":
    unittest.main()
