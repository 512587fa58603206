"""A webhook receiver for benchmarks, on 127.0.0.1 PORT: `answer` answers every request 204
(reading its body); `hang` accepts connections and never reads or answers (an endpoint
that hangs), holding at most 1,000 of them.

    python3 bench/webhook_receiver.py answer|hang PORT
"""

import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE, PORT = sys.argv[1], int(sys.argv[2])


class Answer(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if MODE == "answer":
    ThreadingHTTPServer(("127.0.0.1", PORT), Answer).serve_forever()
else:
    listener = socket.create_server(("127.0.0.1", PORT))
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)
        if len(held) > 1000:
            held.pop(0).close()
