"""What the Python tests share: a host process on a free loopback port (the binary cargo
built, or NOTIFY_HOST_BIN), stopped when the test ends, a bounded wait, and a test CA with
a certificate for localhost."""

import asyncio
import datetime
import json
import os
import socket
import subprocess
import tempfile
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
HOST_BIN = os.environ.get("NOTIFY_HOST_BIN", os.path.join(ROOT, "target", "debug", "notify-host"))
TENANT = '[tenants.demo]\npublish_key = "demo-key"\nauth = { mode = "insecure" }\n'
# How long any one step may take before the test fails (not a speed assertion).
STEP = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(check, seconds=STEP):
    """Waits until `check()` (plain or async) returns something truthy, and returns it."""
    for _ in range(seconds * 20):
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


class Process:
    """A child process stopped (SIGKILL) when the test ends."""

    def __init__(self, test, args, env=None):
        environment = {**os.environ, **(env or {})}
        self.child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
        test.addCleanup(self.stop)

    def stop(self):
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


class Host(Process):
    """A host with the demo tenant; `extra` goes before the tenant (tables of its own), and
    `tenant_extra` into the tenant's table; `env` adds to its environment."""

    def __init__(self, test, extra="", tenant_extra="", env=None):
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory()
        test.addCleanup(self.dir.cleanup)
        config = os.path.join(self.dir.name, "config.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{self.port}"\nmetrics_listen = "off"\n{extra}{TENANT}{tenant_extra}')
        super().__init__(test, [HOST_BIN, "--config", config], env)

    async def ready(self, seconds=STEP):
        """Waits until the host answers `/readyz` (its plugins compiled)."""
        async def answers():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        await until(answers, seconds)

    def publish(self, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/publish",
            data=json.dumps(body).encode(),
            headers={"authorization": "Bearer demo-key", "content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=STEP) as r:
            assert r.status == 202, r.status


def tls_files(folder):
    """A CA, and a certificate it signed for localhost: the CA's file and the server's."""
    now = datetime.datetime.now(datetime.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {n: os.path.join(folder, n) for n in ["ca.pem", "cert.pem", "key.pem"]}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert.pem"], "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key.pem"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return paths
