"""A tenant's webhook receiver for the tests: every POST to /NAME is a delivery to endpoint
NAME, verified with the Standard Webhooks reference library (PyPI `standardwebhooks`)
against each secret the test gave for NAME, recorded, and answered with NAME's status (200
unless set). Listens on 127.0.0.1 (--port, or any), and stops with its test (stdin
closing) or after --lifetime seconds.

Controls: POST /_fake/secrets {"NAME": ["whsec_…", …]}, POST /_fake/status {"NAME": 500},
POST /_fake/received → {"events": [...]}, each {endpoint, webhook_id, verified: [the
indexes of the secrets that verify it], body, status, at}."""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

LOCK = threading.Lock()
SECRETS = {}
STATUS = {}
RECEIVED = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            return self.reply(413, {"error": "too large"})
        body = self.rfile.read(n)
        path = self.path.split("?")[0]
        if path == "/_fake/secrets":
            with LOCK:
                SECRETS.update(json.loads(body))
            return self.reply(200, {})
        if path == "/_fake/status":
            with LOCK:
                STATUS.update(json.loads(body))
            return self.reply(200, {})
        if path == "/_fake/received":
            with LOCK:
                return self.reply(200, {"events": list(RECEIVED)})
        name = path.strip("/")
        headers = {k: v for k, v in self.headers.items()}
        with LOCK:
            secrets = list(SECRETS.get(name, []))
            status = STATUS.get(name, 200)
        verified = []
        for i, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(i)
            except WebhookVerificationError:
                pass
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        with LOCK:
            RECEIVED.append({
                "endpoint": name,
                "webhook_id": self.headers.get("webhook-id"),
                "verified": verified,
                "body": parsed,
                "status": status,
                "at": time.time(),
            })
        self.reply(status, {"received": status < 300, "note": "answered by the test receiver"})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=600)
    args = parser.parse_args()
    # Many deliveries come at once (16 per node): the default backlog of 5 would refuse some.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    deadline = time.time() + args.lifetime
    watcher = threading.Thread(target=lambda: sys.stdin.read(), daemon=True)
    watcher.start()
    while time.time() < deadline and watcher.is_alive():
        time.sleep(0.2)


if __name__ == "__main__":
    main()
