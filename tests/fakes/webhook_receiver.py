"""A tenant's webhook receiver for the tests: every POST to /NAME is a delivery to endpoint
NAME, verified with the Standard Webhooks reference library (PyPI `standardwebhooks`)
against each secret the test gave for NAME, recorded, and answered with NAME's status (200
unless set). Listens on 127.0.0.1 (--port, or any), and stops with its test (stdin
closing) or after --lifetime seconds.

Controls: POST /_fake/secrets {"NAME": ["whsec_…", …]}, POST /_fake/status {"NAME": 500},
POST /_fake/received → {"events": [...]}, each {endpoint, webhook_id, verified: [the
indexes of the secrets that verify it], body, status, at}."""

import json
import threading
import time

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from fake_server import JsonHandler, main

LOCK = threading.Lock()
SECRETS = {}
STATUS = {}
RECEIVED = []


class Handler(JsonHandler):
    def do_POST(self):
        body = self.raw_body()
        if body is None:
            return self.reply(413, {"error": "too large"})
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


if __name__ == "__main__":
    main(lambda: Handler)
