"""What the PayPal and Coinbase Commerce fakes share: a JSON HTTP server on 127.0.0.1 that
stops with its test (stdin closing) or after its lifetime, and webhook delivery (each event
any number of times, some at once), signed by a function the fake gives."""

import argparse
import json
import secrets
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def post(url, payload, headers):
    """POSTs `payload` (bytes); returns {status, body} whatever the status."""
    req = urllib.request.Request(url, data=payload, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return {"status": resp.status, "body": json.loads(resp.read() or b"null")}
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return {"status": err.code, "body": json.loads(raw or b"null")}
        except ValueError:
            return {"status": err.code, "body": raw.decode(errors="replace")}


def deliver(url, events, sign, copies=1, concurrency=1):
    """POSTs each event `copies` times, up to `concurrency` at once; `sign(payload)` gives
    each delivery's headers."""
    jobs = [e for e in events for _ in range(copies)]

    def send(e):
        payload = json.dumps(e).encode()
        return post(url, payload, sign(payload))

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(send, jobs))


def deliver_later(url, events, sign, delay_s=0.2):
    """Delivers in the background, as a provider does after answering its API call."""
    def run():
        time.sleep(delay_s)
        deliver(url, events, sign)
    threading.Thread(target=run, daemon=True).start()


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def html(self, text):
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location):
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def raw_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 1 << 20:
            return None
        return self.rfile.read(n)


def serve(handler, announce=True, port=0):
    # Many requests may come at once: the default backlog of 5 would refuse some.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    if announce:
        print(json.dumps({"port": port}), flush=True)
    return server, port


def main(make_handler, selftest=None):
    """`--selftest` runs the provider's official client against the fake; else the fake
    serves (on --port, or any) until stdin closes or --lifetime passes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lifetime", type=float, default=600)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest and selftest:
        return selftest()
    serve(make_handler(), port=args.port)
    deadline = time.time() + args.lifetime
    watcher = threading.Thread(target=lambda: sys.stdin.read(), daemon=True)
    watcher.start()
    while time.time() < deadline and watcher.is_alive():
        time.sleep(0.2)


def token(n=17):
    """PayPal-style ids: upper-case letters and digits."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(n))
