"""Bytes on the wire with and without permessage-deflate, per payload, and the host's time
per compressed frame (from its metrics): one host, two raw WebSocket clients (one offers
the extension, one does not), each payload published COUNT times.

    python3 bench/compression.py HOST_BIN [COUNT]   (default 200)

Payloads (bench/payloads.json): the README's order event, a realistic notification of about
1 KB, and a 2 KB dashboard document. Frame bytes are header plus payload, as sent.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST_BIN = sys.argv[1]
COUNT = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ADMIN = "bench-admin-token"

# The payloads, shared with `notify-deflate-levels`.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "payloads.json")) as f:
    PAYLOADS = {p["name"]: p["data"] for p in json.load(f)}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Raw:
    """A WebSocket client on a raw socket that counts the bytes of each frame it reads."""

    def __init__(self, port, offer):
        self.sock = socket.create_connection(("127.0.0.1", port))
        extension = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if offer else ""
        self.sock.sendall((f"GET /v1/ws/demo?user=ann HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                           f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                           f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extension}\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.negotiated = b"permessage-deflate" in head
        self.frame()  # the welcome

    def need(self, n):
        while len(self.buf) < n:
            self.buf += self.sock.recv(65536)

    def frame(self):
        """(first byte, bytes of the whole frame)."""
        self.need(2)
        n, at = self.buf[1] & 0x7F, 2
        if n == 126:
            self.need(4)
            n, at = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self.need(10)
            n, at = int.from_bytes(self.buf[2:10], "big"), 10
        self.need(at + n)
        first, self.buf = self.buf[0], self.buf[at + n:]
        return first, at + n


def publish(port, data):
    body = json.dumps({"users": ["ann"], "event": "order.updated", "data": data}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/publish", data=body,
                                 headers={"authorization": "Bearer demo-key"})
    urllib.request.urlopen(req).read()


def metric(port, name):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    text = urllib.request.urlopen(req).read().decode()
    return float(next(l.split()[-1] for l in text.splitlines() if l.startswith(name + " ")))


def main():
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{port}"\nmetrics_listen = "off"\nadmin_token = "{ADMIN}"\n'
                    '[log]\nlevel = "warn"\n[tenants.demo]\npublish_key = "demo-key"\nauth = { mode = "insecure" }\n')
        host = subprocess.Popen([HOST_BIN, "--config", config])
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    time.sleep(0.1)
            deflating, plain = Raw(port, True), Raw(port, False)
            assert deflating.negotiated and not plain.negotiated
            print(f"date: {time.strftime('%Y-%m-%d')}, {COUNT} events per payload")
            print("| payload | uncompressed frame | compressed frame | ratio |")
            print("| --- | --- | --- | --- |")
            for name, data in PAYLOADS.items():
                sizes = {"plain": 0, "deflate": 0}
                for _ in range(COUNT):
                    publish(port, data)
                    sizes["plain"] += plain.frame()[1]
                    sizes["deflate"] += deflating.frame()[1]
                p, c = sizes["plain"] / COUNT, sizes["deflate"] / COUNT
                print(f"| {name} | {p:.0f} B | {c:.0f} B | {c / p:.2f} |")
            frames = metric(port, "notify_frames_compressed_total")
            seconds = metric(port, "notify_compression_seconds_total")
            print(f"compressed frames {frames:.0f}, {seconds / frames * 1e6:.1f} µs each")
        finally:
            host.kill()
            host.wait()


main()
