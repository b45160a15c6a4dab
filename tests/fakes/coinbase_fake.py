"""A local stand-in for Coinbase Commerce's charges API and webhooks, for tests: Coinbase's
servers cannot be reached here.

It speaks Coinbase Commerce's wire format: `X-CC-Api-Key` and `X-CC-Version` headers, JSON
charges wrapped in `{"data": …}`, its error objects (`{"error": {"type", "message"}}`), a
hosted payment page at the charge's `hosted_url`, and webhook deliveries
(`{"id", "scheduled_for", "attempt_number", "event": {"id", "type", "data": charge}}`)
signed with `X-CC-Webhook-Signature`: the hex HMAC-SHA256 of the body under the shared
secret.

    python coinbase_fake.py [--lifetime 600]   prints {"port": N}
    python coinbase_fake.py --selftest         Coinbase's official client (coinbase-commerce) against it
"""

import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
import uuid

from fake_server import LOCK, JsonHandler, deliver, main, serve, token

API_KEY = "cc-ferrocast-fake-key"
SHARED_SECRET = "cc-ferrocast-fake-shared-secret"
STATE = {"charges": {}, "config": {"webhook_url": None, "shared_secret": SHARED_SECRET}}


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def error(status, kind, message):
    return status, {"error": {"type": kind, "message": message}}


def sign(payload, secret=None, bad=False):
    key = (secret or STATE["config"]["shared_secret"]).encode()
    digest = hmac.new(key, payload, hashlib.sha256).hexdigest()
    return {"X-CC-Webhook-Signature": secrets.token_hex(32) if bad else digest}


def event(kind, charge):
    return {"id": str(uuid.uuid4()), "scheduled_for": now_iso(), "attempt_number": 1,
            "event": {"id": str(uuid.uuid4()), "resource": "event", "type": kind, "api_version": "2018-03-22",
                      "created_at": now_iso(), "data": json.loads(json.dumps(charge))}}


class Fake:
    def __init__(self, port):
        self.port = port

    def create_charge(self, p):
        if not p.get("name") or len(p["name"]) > 100:
            return error(400, "invalid_request", "name is required and at most 100 characters")
        if p.get("pricing_type") not in ("fixed_price", "no_price"):
            return error(400, "invalid_request", "pricing_type must be fixed_price or no_price")
        price = p.get("local_price") or {}
        if p["pricing_type"] == "fixed_price":
            amount = str(price.get("amount", ""))
            whole, _, frac = amount.partition(".")
            if not whole.isdigit() or (frac and not frac.isdigit()) or not price.get("currency"):
                return error(400, "invalid_request", "local_price must have an amount and a currency")
        charge = {"id": str(uuid.uuid4()), "resource": "charge", "code": token(8), "name": p["name"],
                  "description": p.get("description", ""), "pricing_type": p["pricing_type"],
                  "metadata": p.get("metadata") or {}, "created_at": now_iso(),
                  "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600)),
                  "pricing": {"local": price} if price else {}, "local_price": price,
                  "redirect_url": p.get("redirect_url"), "cancel_url": p.get("cancel_url"),
                  "timeline": [{"time": now_iso(), "status": "NEW"}], "payments": [],
                  "addresses": {"bitcoin": "bc1q" + secrets.token_hex(16), "ethereum": "0x" + secrets.token_hex(20)},
                  "support_email": "merchant@example.com"}
        charge["hosted_url"] = f"http://127.0.0.1:{self.port}/pay/{charge['code']}"
        STATE["charges"][charge["id"]] = charge
        return 201, {"data": charge}

    def find(self, id_or_code):
        return STATE["charges"].get(id_or_code) or next(
            (c for c in STATE["charges"].values() if c["code"] == id_or_code), None)

    def pay(self, code):
        """The buyer pays on chain: pending, then confirmed; returns both events."""
        charge = self.find(code)
        if not charge:
            return error(404, "not_found", "Not found")
        if charge["timeline"][-1]["status"] != "NEW":
            return error(400, "invalid_request", "the charge is not open")
        charge["payments"].append({"network": "ethereum", "transaction_id": "0x" + secrets.token_hex(32),
                                   "status": "CONFIRMED", "value": {"local": charge["local_price"]}})
        charge["timeline"].append({"time": now_iso(), "status": "PENDING", "payment": {"network": "ethereum"}})
        pending = event("charge:pending", charge)
        charge["timeline"].append({"time": now_iso(), "status": "COMPLETED"})
        confirmed = event("charge:confirmed", charge)
        return 200, {"events": [pending, confirmed]}

    def resolve(self, code):
        """Paid after all (late or short, and the merchant accepted it): charge:resolved."""
        charge = self.find(code)
        if not charge:
            return error(404, "not_found", "Not found")
        charge["timeline"].append({"time": now_iso(), "status": "RESOLVED", "context": "DELAYED"})
        return 200, {"events": [event("charge:resolved", charge)]}

    def expire(self, code):
        charge = self.find(code)
        if not charge:
            return error(404, "not_found", "Not found")
        charge["timeline"].append({"time": now_iso(), "status": "EXPIRED"})
        return 200, {"events": [event("charge:failed", charge)]}


def make_handler():
    fake = Fake(0)

    class Handler(JsonHandler):
        def setup(self):
            super().setup()
            fake.port = self.server.server_address[1]

        def authorised(self):
            if self.headers.get("X-CC-Api-Key") != API_KEY:
                self.reply(*error(401, "authorization_error", "No such API key."))
                return False
            if not self.headers.get("X-CC-Version"):
                self.reply(*error(400, "invalid_request", "Missing X-CC-Version header"))
                return False
            return True

        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            if path.startswith("/pay/"):
                charge = fake.find(path[len("/pay/"):])
                if not charge:
                    return self.reply(*error(404, "not_found", "Not found"))
                price = charge["local_price"]
                return self.html(f"<!doctype html><title>Coinbase Commerce</title><h1>Pay {price.get('amount')} "
                                 f"{price.get('currency')} in crypto</h1><form method=post "
                                 f"action='/pay/{charge['code']}'><button id=pay>Pay</button></form>")
            if not self.authorised():
                return
            if path.startswith("/charges/"):
                with LOCK:
                    charge = fake.find(path[len("/charges/"):])
                if charge:
                    return self.reply(200, {"data": charge})
            self.reply(*error(404, "not_found", "Not found"))

        def do_POST(self):
            path = urllib.parse.urlparse(self.path).path
            raw = self.raw_body()
            if raw is None:
                return self.reply(*error(413, "invalid_request", "too large"))
            if path.startswith("/pay/"):
                return self.pay_and_return(path[len("/pay/"):])
            if path.startswith("/_fake/"):
                return self.control(path, json.loads(raw or b"{}"))
            if not self.authorised():
                return
            try:
                p = json.loads(raw or b"{}")
            except ValueError:
                return self.reply(*error(400, "invalid_request", "the body is not JSON"))
            if path in ("/charges", "/charges/"):
                with LOCK:
                    return self.reply(*fake.create_charge(p))
            self.reply(*error(404, "not_found", "Not found"))

        def pay_and_return(self, code):
            with LOCK:
                status, body = fake.pay(code)
            if status != 200:
                return self.reply(status, body)
            if STATE["config"]["webhook_url"]:
                deliver(STATE["config"]["webhook_url"], body["events"], sign)
            self.redirect(fake.find(code)["redirect_url"])

        def control(self, path, p):
            with LOCK:
                if path.startswith("/_fake/pay/"):
                    return self.reply(*fake.pay(path[len("/_fake/pay/"):]))
                if path.startswith("/_fake/expire/"):
                    return self.reply(*fake.expire(path[len("/_fake/expire/"):]))
                if path.startswith("/_fake/resolve/"):
                    return self.reply(*fake.resolve(path[len("/_fake/resolve/"):]))
                if path == "/_fake/config":
                    STATE["config"].update(p)
                    return self.reply(200, {"ok": True})
            if path == "/_fake/deliver":
                results = deliver(p["url"], p["events"], lambda payload: sign(payload, bad=p.get("bad_signature")),
                                  p.get("copies", 1), p.get("concurrency", 1))
                return self.reply(200, {"results": results})
            self.reply(404, {"error": "no such control"})

    return Handler


def selftest():
    """Coinbase's official Python client against this fake: it must read every answer, and
    its webhook check must take the fake's signatures."""
    import warnings

    from coinbase_commerce.client import Client
    from coinbase_commerce.error import AuthenticationError, SignatureVerificationError
    from coinbase_commerce.webhook import Webhook

    warnings.simplefilter("ignore")
    _, port = serve(make_handler(), announce=False)
    client = Client(api_key=API_KEY, base_api_uri=f"http://127.0.0.1:{port}/")
    charge = client.charge.create(name="Cup final live", description="Order ord_1", pricing_type="fixed_price",
                                  local_price={"amount": "9.51", "currency": "EUR"},
                                  metadata={"order_id": "ord_1"}, redirect_url="https://example.com/ok")
    assert charge.code and charge.hosted_url.endswith(charge.code), charge
    again = client.charge.retrieve(charge.id)
    assert again.metadata["order_id"] == "ord_1" and again.local_price["amount"] == "9.51", again
    try:
        Client(api_key="wrong", base_api_uri=f"http://127.0.0.1:{port}/").charge.retrieve(charge.id)
        raise AssertionError("a wrong key must fail")
    except AuthenticationError:
        pass
    with LOCK:
        events = Fake(port).pay(charge.code)[1]["events"]
    payload = json.dumps(events[-1])
    header = sign(payload.encode())["X-CC-Webhook-Signature"]
    checked = Webhook.construct_event(payload, header, SHARED_SECRET)
    assert checked.type == "charge:confirmed" and checked.data["metadata"]["order_id"] == "ord_1", checked
    try:
        Webhook.construct_event(payload, header, "another secret")
        raise AssertionError("another secret must not verify")
    except SignatureVerificationError:
        pass
    print(json.dumps({"selftest": "ok", "coinbase-commerce": "1.0.1"}))


if __name__ == "__main__":
    main(make_handler, selftest)
