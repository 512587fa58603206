"""JWT auth against an independent implementation: tokens signed by PyJWT with every
algorithm notify accepts, keys published by a loopback JWKS server (an identity provider's
key set), the set rotated and the provider down and back, and every refusal a relying
party owes: `alg: none`, HS/RS confusion, wrong `iss` or `aud`, expired, not yet valid, a
key set too large or too slow."""

import asyncio
import base64
import datetime
import ssl
import tempfile
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import unittest
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import STEP, Host, tls_files, until  # noqa: E402

ISSUER = "http://127.0.0.1/realms/acme"
AUDIENCE = "notify"
HMAC_SECRET = "a-long-shared-secret-for-hmac-tests-of-64-bytes-for-hs512-0123456"
ADMIN = "test-admin-token"


class Provider:
    """A loopback identity provider serving `keys` as a JWKS; `mode` makes it answer
    normally, too slowly, too much, or not at all (`stop`/`start`)."""

    def __init__(self):
        self.keys = []
        self.mode = "ok"
        self.requests = 0
        self.server = None
        self.port = None
        self.start()

    def start(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider.requests += 1
                if provider.mode == "slow":
                    time.sleep(3)
                body = json.dumps({"keys": provider.keys}).encode()
                if provider.mode == "huge":
                    body = json.dumps({"keys": provider.keys, "pad": "x" * 300_000}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", "public, max-age=1")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port or 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/realms/acme/protocol/openid-connect/certs"


def jwk(public, alg, kid):
    exporter = {rsa.RSAPublicKey: RSAAlgorithm, ec.EllipticCurvePublicKey: ECAlgorithm}
    to_jwk = next((e for t, e in exporter.items() if isinstance(public, t)), OKPAlgorithm).to_jwk
    key = to_jwk(public, as_dict=True)
    key.update({"kid": kid, "alg": alg, "use": "sig"})
    return key


def generate():
    """A private key per algorithm family member, with the JWK of its public half."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = {alg: rsa_key for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]}
    keys["ES256"] = ec.generate_private_key(ec.SECP256R1())
    keys["ES384"] = ec.generate_private_key(ec.SECP384R1())
    keys["EdDSA"] = ed25519.Ed25519PrivateKey.generate()
    return keys


def claims(**extra):
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    base.update(extra)
    return base


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_signed(header, body, secret):
    """A token signed with HMAC by hand (PyJWT refuses to use a public key as a secret)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


class JwtTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.provider = Provider()
        self.addCleanup(self.provider.stop)
        self.private = generate()
        self.provider.keys = [jwk(k.public_key(), alg, f"k-{alg}") for alg, k in self.private.items()]
        self.rsa_pem = (
            self.private["RS256"]
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        idp = (
            f'[tenants.idp]\npublish_key = "idp-publish-key"\n'
            f'auth = {{ mode = "jwt", jwks_url = "{self.provider.url}", issuer = ["{ISSUER}", "https://other"], '
            f'audience = "{AUDIENCE}", jwks_min_refresh_secs = 1, jwks_max_refresh_secs = 1, '
            f'jwks_cooldown_secs = 1, jwks_timeout_ms = 1000 }}\n'
        )
        pem = self.rsa_pem.replace("\n", "\\n")
        local = (
            f'[tenants.local]\npublish_key = "local-publish-key"\n'
            f'auth = {{ mode = "jwt", user_claim = "email", channels_claim = "realm_access.channels", keys = ['
            f'{{ kid = "h", secret = "{HMAC_SECRET}" }}, {{ kid = "r", public_key = "{pem}" }}] }}\n'
        )
        # The flood below comes from one address: no refusals for its many failures.
        self.host = Host(self, extra=f'admin_token = "{ADMIN}"\n[addresses]\nmax_failures = 0\n' + idp + local)
        await self.host.ready()

    async def connect(self, tenant, token):
        """The first frame of a connection with `token`, or (status, error body) of a refusal."""
        url = f"ws://127.0.0.1:{self.host.port}/v1/ws/{tenant}?token={token}"
        try:
            async with websockets.connect(url, open_timeout=STEP) as ws:
                return json.loads(await asyncio.wait_for(ws.recv(), STEP))
        except websockets.exceptions.InvalidStatus as e:
            return e.response.status_code, json.loads(e.response.body)["error"]

    async def assert_welcome(self, tenant, token, user="alice"):
        frame = await self.connect(tenant, token)
        self.assertIsInstance(frame, dict, frame)
        self.assertEqual((frame["type"], frame["user"]), ("welcome", user))

    async def assert_refused(self, tenant, token, words):
        refusal = await self.connect(tenant, token)
        self.assertIsInstance(refusal, tuple, refusal)
        status, body = refusal
        self.assertEqual(status, 401, body)
        self.assertIn(words, body["message"])
        return body

    def sign(self, alg, kid=None, **extra):
        return jwt.encode(claims(**extra), self.private[alg], algorithm=alg, headers={"kid": kid or f"k-{alg}"})

    async def test_every_algorithm_of_the_key_set_is_accepted(self):
        for alg in self.private:
            with self.subTest(alg=alg):
                await self.assert_welcome("idp", self.sign(alg))

    async def test_hmac_and_pem_keys_with_claims_of_the_tenants_choice(self):
        for alg in ["HS256", "HS384", "HS512"]:
            token = jwt.encode(
                {"email": "bob@example.com", "exp": int(time.time()) + 60, "realm_access": {"channels": ["news"]}},
                HMAC_SECRET,
                algorithm=alg,
                headers={"kid": "h"},
            )
            await self.assert_welcome("local", token, user="bob@example.com")
        for alg in ["RS256", "PS512"]:
            token = jwt.encode({"email": "carol@example.com", "exp": int(time.time()) + 60},
                               self.private["RS256"], algorithm=alg, headers={"kid": "r"})
            await self.assert_welcome("local", token, user="carol@example.com")

    async def test_refusals(self):
        now = int(time.time())
        none = jwt.encode(claims(), None, algorithm="none")
        await self.assert_refused("idp", none, "algorithm none is not accepted")
        # The RSA public key, which anyone can read from the JWKS, used as an HMAC secret.
        for tenant, kid in [("local", "r"), ("idp", "k-RS256")]:
            confused = hand_signed({"alg": "HS256", "typ": "JWT", "kid": kid}, claims(), self.rsa_pem.encode())
            await self.assert_refused(tenant, confused, "is for another algorithm")
        await self.assert_refused("idp", self.sign("ES256", iss="https://evil"), "`iss` is not an issuer")
        await self.assert_refused("idp", self.sign("ES256", aud="someone-else"), "`aud` does not name an audience")
        await self.assert_refused("idp", self.sign("ES256", iat=now - 600, exp=now - 300), "token expired")
        await self.assert_refused("idp", self.sign("ES256", nbf=now + 300), "not valid yet")
        await self.assert_refused("idp", self.sign("ES256", iat=now + 300), "`iat` is in the future")
        crit = jwt.encode(claims(), self.private["ES256"], algorithm="ES256",
                          headers={"kid": "k-ES256", "crit": ["exp"]})
        await self.assert_refused("idp", crit, "`crit`")
        wrong_key = jwt.encode(claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                               headers={"kid": "k-ES256"})
        await self.assert_refused("idp", wrong_key, "invalid token signature")
        # A key of one family presented under another algorithm of the same key set.
        await self.assert_refused("idp", self.sign("ES256", kid="k-ES384"), "is for another algorithm")
        body = await self.assert_refused("idp", self.sign("ES256", sub="no spaces allowed"), "invalid user id")
        self.assertEqual(body["code"], "unauthorized")

    async def test_rotation_and_the_provider_going_away(self):
        old = self.sign("ES256")
        await self.assert_welcome("idp", old)
        # Rotation: a new kid appears, the old one goes; notify is not restarted.
        fresh = ec.generate_private_key(ec.SECP256R1())
        self.provider.keys = [jwk(fresh.public_key(), "ES256", "rotated")]
        self.private["rotated"] = fresh
        await self.assert_welcome("idp", jwt.encode(claims(), fresh, algorithm="ES256", headers={"kid": "rotated"}))
        await until(lambda: self.kids() == ["rotated"])
        await self.assert_refused("idp", old, 'no key with kid "k-ES256"')

        # The provider goes away: the last good set keeps working, a new kid is refused with
        # the reason, and the state shows on the admin API and in the metrics.
        self.provider.stop()
        failures = self.jwks()["failures"]
        # Down for many refresh periods (the floor is 1 s here; a minute at the default 60 s).
        await until(lambda: self.jwks()["failures"] >= failures + 5)
        await self.assert_welcome("idp", jwt.encode(claims(), fresh, algorithm="ES256", headers={"kid": "rotated"}))
        newer = ec.generate_private_key(ec.SECP256R1())
        token = jwt.encode(claims(), newer, algorithm="ES256", headers={"kid": "newer"})
        await asyncio.sleep(1.1)  # past the cooldown, so this token causes a fetch
        await self.assert_refused("idp", token, "could not be fetched")
        self.assertEqual(self.kids(), ["rotated"])
        metrics = self.metrics()
        self.assertIn('notify_jwks_keys{tenant="idp"} 1', metrics)
        self.assertRegex(metrics, r'notify_jwks_fetches_total\{tenant="idp",result="error"\} [1-9]')

        # It comes back with the newer key: recovered without a restart.
        self.provider.keys = [jwk(newer.public_key(), "ES256", "newer")]
        self.provider.start()
        await until(lambda: self.jwks()["last_error"] is None)
        await self.assert_welcome("idp", token)

    async def test_a_flood_of_unknown_kids_is_one_fetch_per_cooldown(self):
        await until(lambda: self.jwks()["fetched_at"])
        # The cooldown here is 1 s: bound the fetches by the time the flood took.
        started, before = time.monotonic(), self.provider.requests
        tokens = [jwt.encode(claims(), self.private["ES256"], algorithm="ES256", headers={"kid": str(uuid.uuid4())})
                  for _ in range(60)]
        results = await asyncio.gather(*(self.connect("idp", t) for t in tokens))
        self.assertTrue(all(isinstance(r, tuple) and r[0] == 401 for r in results), results)
        # Background refreshes (max-age 1 s) plus at most one forced fetch per second.
        seconds = time.monotonic() - started
        self.assertLessEqual(self.provider.requests - before, 2 * (seconds + 2), (seconds, self.provider.requests))

    async def test_a_key_set_too_large_or_too_slow_is_refused(self):
        await until(lambda: self.jwks()["fetched_at"])
        for mode, reason in [("huge", "larger than"), ("slow", "no answer within")]:
            self.provider.mode = mode
            error = await until(lambda: self.jwks()["last_error"])
            self.assertIn(reason, error)
            await self.assert_welcome("idp", self.sign("EdDSA"))  # the last good set stays
            self.provider.mode = "ok"
            await until(lambda: self.jwks()["last_error"] is None)

    def admin(self, path):
        request = urllib.request.Request(f"http://127.0.0.1:{self.host.port}{path}",
                                         headers={"authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=STEP) as r:
            return json.loads(r.read())

    def jwks(self):
        return self.admin("/v1/admin/tenants/idp")["auth"]["jwks"]

    def kids(self):
        return self.jwks()["kids"]

    def metrics(self):
        request = urllib.request.Request(f"http://127.0.0.1:{self.host.port}/metrics",
                                         headers={"authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(request, timeout=STEP) as r:
            return r.read().decode()


class JwksOverTlsTest(unittest.IsolatedAsyncioTestCase):
    """The key set over HTTPS, as providers serve it: the node trusts the system's roots
    (here a test CA through SSL_CERT_FILE), and an untrusted certificate is an error."""

    async def test_a_key_set_over_https_with_a_trusted_and_an_untrusted_certificate(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        paths = tls_files(folder.name)
        provider = Provider()
        self.addCleanup(provider.stop)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(paths["cert.pem"], paths["key.pem"])
        provider.server.socket = context.wrap_socket(provider.server.socket, server_side=True)
        key = ec.generate_private_key(ec.SECP256R1())
        provider.keys = [jwk(key.public_key(), "ES256", "tls")]
        url = f"https://localhost:{provider.port}/certs"
        tenants = "".join(
            f'[tenants.{t}]\npublish_key = "{t}-publish-key"\n'
            f'auth = {{ mode = "jwt", jwks_url = "{url}", jwks_timeout_ms = 2000 }}\n'
            for t in ["tls"]
        )
        trusted = Host(self, extra=f'admin_token = "{ADMIN}"\n' + tenants, env={"SSL_CERT_FILE": paths["ca.pem"]})
        untrusted = Host(self, extra=f'admin_token = "{ADMIN}"\n' + tenants, env={"SSL_CERT_FILE": os.devnull})
        await trusted.ready()
        await untrusted.ready()
        token = jwt.encode({"sub": "tina", "exp": int(time.time()) + 60}, key, algorithm="ES256", headers={"kid": "tls"})
        url = f"ws://127.0.0.1:{trusted.port}/v1/ws/tls?token={token}"
        async with websockets.connect(url, open_timeout=STEP) as ws:
            self.assertEqual(json.loads(await asyncio.wait_for(ws.recv(), STEP))["user"], "tina")

        def status(host):
            request = urllib.request.Request(f"http://127.0.0.1:{host.port}/v1/admin/tenants/tls",
                                             headers={"authorization": f"Bearer {ADMIN}"})
            with urllib.request.urlopen(request, timeout=STEP) as r:
                return json.loads(r.read())["auth"]["jwks"]

        error = await until(lambda: status(untrusted)["last_error"])
        self.assertIn("TLS", error)
        self.assertEqual(status(untrusted)["kids"], [])


if __name__ == "__main__":
    unittest.main()
