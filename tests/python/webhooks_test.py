"""Webhooks checked by a receiver nobody here wrote the verification of: the `standardwebhooks`
package from the Python package index verifies the host's requests; a tampered body or a
stale timestamp is refused.

Run by scripts/test.sh: python tests/python/webhooks_test.py (NOTIFY_HOST_BIN names the host
binary).
"""

import json
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from harness import Host, until

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """An HTTP server on a free loopback port recording each request's headers and body."""

    def __init__(self, test):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        test.addCleanup(self.server.shutdown)

    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"


class Webhooks(unittest.IsolatedAsyncioTestCase):
    async def test_requests_verify_with_the_standard_webhooks_library(self):
        receiver = Receiver(self)
        endpoint = f'{{ url = "{receiver.url()}", secret = "{SECRET}" }}'
        host = Host(
            self,
            extra='[broker]\nkind = "memory"\npresence_debounce = "200ms"\n[webhooks]\nallow_private = true\n',
            tenant_extra=f"webhooks = [{endpoint}]\n",
        )
        await host.ready()
        ws = await websockets.connect(f"ws://127.0.0.1:{host.port}/v1/ws/demo?user=ann")
        await ws.recv()
        await ws.close()
        # The offline notice follows the online one by the 200 ms debounce, as long as a
        # batch may wait: they come in one request or two.
        await until(lambda: b"user.offline" in b"".join(body for _, body in receiver.received))

        hook = Webhook(SECRET)
        kinds = []
        for headers, body in receiver.received:
            payload = hook.verify(body, headers)
            self.assertEqual(payload["type"], "notify.batch")
            kinds += [(e["type"], e["data"]["user"]) for e in payload["data"]["events"]]
        self.assertEqual(kinds, [("user.online", "ann"), ("user.offline", "ann")])

        headers, body = receiver.received[0]
        tampered = body.replace(b'"ann"', b'"eve"')
        with self.assertRaises(WebhookVerificationError):
            hook.verify(tampered, headers)
        stale = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 3600)})
        with self.assertRaisesRegex(WebhookVerificationError, "too old"):
            hook.verify(body, stale)
        with self.assertRaises(WebhookVerificationError):
            Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY").verify(body, headers)
        self.assertEqual(json.loads(body)["data"]["tenant"], "demo")


if __name__ == "__main__":
    unittest.main()
