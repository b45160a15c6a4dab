"""A local stand-in for Stripe's API, for tests: Stripe's servers cannot be reached here.

It speaks Stripe's wire format: form-encoded requests with bracketed keys, bearer secret
keys, Idempotency-Key (a key reused with other parameters is refused as Stripe refuses it),
Stripe's JSON objects and error objects. It keeps Checkout Sessions, PaymentIntents, Charges
and Refunds. What a customer does on the hosted page, and what Stripe then sends, tests ask
for through /_fake/ endpoints: pay a session, build the events that follow a payment or a
refund, and deliver events to a webhook URL, signed with the official library's
stripe.WebhookSignature, in any order and any number of times.

    python stripe_fake.py --secret-key sk_test_x [--lifetime 600]   prints {"port": N}
    python stripe_fake.py --selftest   the official `stripe` client against this fake

Listens on 127.0.0.1 only and stops after --lifetime seconds or when stdin closes.
"""

import argparse
import hashlib
import json
import secrets
import sys
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

LOCK = threading.Lock()
# Where the hosted page's payments send their events (set by /_fake/config).
WEBHOOK = {"url": None, "secret": None}
STATE = {"sessions": {}, "payment_intents": {}, "charges": {}, "refunds": {}, "subscriptions": {},
         "invoices": {}, "idempotency": {}}
DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


def new_id(prefix):
    return f"{prefix}_test_{secrets.token_hex(12)}"


def parse_form(body):
    """Stripe's bracketed form keys (a[b][0][c]=1) into nested dicts and lists."""
    root = {}
    for key, value in urllib.parse.parse_qsl(body, keep_blank_values=True):
        parts = key.replace("]", "").split("[")
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return lists(root)


def lists(node):
    if isinstance(node, dict):
        node = {k: lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


def error(status, message, kind="invalid_request_error", param=None):
    body = {"error": {"type": kind, "message": message}}
    if param:
        body["error"]["param"] = param
    return status, body


class Fake:
    def __init__(self, secret_key, port_holder):
        self.secret_key = secret_key
        self.port = port_holder

    # --- Stripe's API -----------------------------------------------------------------

    def create_session(self, p):
        for field in ("mode", "success_url"):
            if not p.get(field):
                return error(400, f"Missing required param: {field}.", param=field)
        if p["mode"] not in ("payment", "subscription", "setup"):
            return error(400, "Invalid mode", param="mode")
        items = p.get("line_items") or []
        if not isinstance(items, list) or not items:
            return error(400, "Missing required param: line_items.", param="line_items")
        total, currency = 0, None
        for i, item in enumerate(items):
            data = item.get("price_data") or {}
            try:
                amount, quantity = int(data["unit_amount"]), int(item.get("quantity", "1"))
            except (KeyError, ValueError):
                return error(400, f"Invalid line_items[{i}]", param=f"line_items[{i}]")
            if not (data.get("product_data") or {}).get("name"):
                return error(400, f"Missing required param: line_items[{i}][price_data][product_data][name].")
            if currency and data.get("currency") != currency:
                return error(400, "All line items must have the same currency.")
            currency = data.get("currency")
            if data.get("recurring") and p["mode"] != "subscription":
                return error(400, "You specified `payment` mode but passed a recurring price.")
            total += amount * quantity
        session = {
            "id": new_id("cs"), "object": "checkout.session", "livemode": False,
            "mode": p["mode"], "status": "open", "payment_status": "unpaid",
            "client_reference_id": p.get("client_reference_id"),
            "metadata": p.get("metadata") or {}, "currency": currency,
            "amount_subtotal": total, "amount_total": total,
            "success_url": p["success_url"], "cancel_url": p.get("cancel_url"),
            "customer": None, "payment_intent": None, "subscription": None,
            "created": int(time.time()), "expires_at": int(time.time()) + 86400,
            "url": None,
        }
        session["url"] = f"http://127.0.0.1:{self.port[0]}/pay/{session['id']}"
        session["_payment_intent_metadata"] = (p.get("payment_intent_data") or {}).get("metadata") or {}
        sub_data = p.get("subscription_data") or {}
        session["_subscription_metadata"] = sub_data.get("metadata") or {}
        session["_trial_days"] = int(sub_data.get("trial_period_days") or 0)
        intervals = [(i.get("price_data") or {}).get("recurring", {}).get("interval") for i in items]
        session["_interval"] = next((i for i in intervals if i), None)
        if p["mode"] == "subscription" and not session["_interval"]:
            return error(400, "You must provide at least one recurring price in `subscription` mode.")
        STATE["sessions"][session["id"]] = session
        return 200, public(session)

    def refund(self, p):
        pi_id = p.get("payment_intent")
        pi = STATE["payment_intents"].get(pi_id)
        if not pi:
            return error(404, f"No such payment_intent: '{pi_id}'", param="payment_intent")
        charge = STATE["charges"][pi["latest_charge"]]
        left = charge["amount"] - charge["amount_refunded"]
        amount = int(p["amount"]) if p.get("amount") else left
        if amount <= 0 or amount > left:
            return error(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                         param="amount")
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {"id": new_id("re"), "object": "refund", "amount": amount, "charge": charge["id"],
                  "payment_intent": pi_id, "currency": charge["currency"], "status": "succeeded",
                  "created": int(time.time()), "metadata": {}}
        STATE["refunds"][refund["id"]] = refund
        return 200, refund

    # --- What the customer and Stripe do (tests drive these) ---------------------------

    def pay(self, session_id):
        """The customer pays on the hosted page: the session completes; returns its events."""
        s = STATE["sessions"].get(session_id)
        if not s:
            return error(404, "no such session")
        if s["status"] != "open":
            return error(400, "session is not open")
        if s["mode"] == "subscription":
            return self.subscribe(s)
        pi = {"id": new_id("pi"), "object": "payment_intent", "amount": s["amount_total"],
              "currency": s["currency"], "status": "succeeded", "metadata": s["_payment_intent_metadata"],
              "latest_charge": None, "livemode": False}
        charge = {"id": new_id("ch"), "object": "charge", "amount": s["amount_total"], "amount_refunded": 0,
                  "refunded": False, "currency": s["currency"], "payment_intent": pi["id"], "paid": True,
                  "status": "succeeded", "metadata": pi["metadata"], "livemode": False, "disputed": False}
        pi["latest_charge"] = charge["id"]
        STATE["payment_intents"][pi["id"]] = pi
        STATE["charges"][charge["id"]] = charge
        s.update(status="complete", payment_status="paid", payment_intent=pi["id"])
        return 200, {"events": [event("payment_intent.succeeded", pi), event("charge.succeeded", charge),
                                event("checkout.session.completed", public(s))]}

    def subscribe(self, s):
        now = int(time.time())
        trial = s["_trial_days"]
        end = now + 86400 * (trial or DAYS[s["_interval"]])
        sub = {"id": new_id("sub"), "object": "subscription", "status": "trialing" if trial else "active",
               "customer": new_id("cus"), "current_period_start": now, "current_period_end": end,
               "cancel_at_period_end": False, "canceled_at": None, "ended_at": None,
               "metadata": s["_subscription_metadata"], "currency": s["currency"], "livemode": False,
               "items": {"object": "list", "data": [{"id": new_id("si"), "object": "subscription_item",
                                                     "current_period_start": now, "current_period_end": end}]},
               "_interval": s["_interval"], "_amount": s["amount_total"]}
        STATE["subscriptions"][sub["id"]] = sub
        invoice = self.invoice(sub, 0 if trial else s["amount_total"], now, end, "subscription_create")
        s.update(status="complete", payment_status="no_payment_required" if trial else "paid",
                 subscription=sub["id"], customer=sub["customer"])
        return 200, {"events": [event("customer.subscription.created", sub), event("invoice.paid", invoice),
                                event("checkout.session.completed", public(s))]}

    def invoice(self, sub, amount, start, end, billing_reason):
        inv = {"id": new_id("in"), "object": "invoice", "status": "paid", "subscription": sub["id"],
               "customer": sub["customer"], "amount_paid": amount, "currency": sub["currency"],
               "billing_reason": billing_reason, "payment_intent": None, "charge": None,
               "subscription_details": {"metadata": sub["metadata"]}, "livemode": False,
               "lines": {"object": "list", "data": [{"id": new_id("il"), "object": "line_item", "amount": amount,
                                                     "period": {"start": start, "end": end}}]}}
        if amount > 0:
            # The invoice's own payment intent and charge: they carry none of the
            # subscription's metadata, so a refund or dispute of them names only the payment.
            pi = {"id": new_id("pi"), "object": "payment_intent", "amount": amount, "currency": sub["currency"],
                  "status": "succeeded", "metadata": {}, "latest_charge": None, "livemode": False,
                  "invoice": inv["id"]}
            charge = {"id": new_id("ch"), "object": "charge", "amount": amount, "amount_refunded": 0,
                      "refunded": False, "currency": sub["currency"], "payment_intent": pi["id"], "paid": True,
                      "status": "succeeded", "metadata": {}, "livemode": False, "disputed": False,
                      "invoice": inv["id"]}
            pi["latest_charge"] = charge["id"]
            STATE["payment_intents"][pi["id"]] = pi
            STATE["charges"][charge["id"]] = charge
            inv.update(payment_intent=pi["id"], charge=charge["id"])
        STATE["invoices"][inv["id"]] = inv
        return inv

    def renew(self, sub_id):
        """A period ends and the next is paid: invoice.paid, then the subscription's update."""
        sub = STATE["subscriptions"].get(sub_id)
        if not sub or sub["status"] == "canceled":
            return error(400, "no such running subscription")
        start = sub["current_period_end"]
        end = start + 86400 * DAYS[sub["_interval"]]
        sub.update(status="active", current_period_start=start, current_period_end=end)
        sub["items"]["data"][0].update(current_period_start=start, current_period_end=end)
        invoice = self.invoice(sub, sub["_amount"], start, end, "subscription_cycle")
        return 200, {"events": [event("invoice.paid", invoice), event("customer.subscription.updated", sub)]}

    def update_subscription(self, sub_id, p):
        sub = STATE["subscriptions"].get(sub_id)
        if not sub:
            return error(404, f"No such subscription: '{sub_id}'", param="id")
        if "cancel_at_period_end" in p:
            sub["cancel_at_period_end"] = p["cancel_at_period_end"] == "true"
            sub["canceled_at"] = int(time.time()) if sub["cancel_at_period_end"] else None
        return 200, public(sub)

    def delete_subscription(self, sub_id):
        sub = STATE["subscriptions"].get(sub_id)
        if not sub:
            return error(404, f"No such subscription: '{sub_id}'", param="id")
        sub.update(status="canceled", ended_at=int(time.time()), canceled_at=int(time.time()))
        return 200, public(sub)

    def end(self, sub_id):
        """A subscription set to cancel reaches its period's end (or is deleted): its event."""
        sub = STATE["subscriptions"].get(sub_id)
        if not sub:
            return error(404, "no such subscription")
        sub.update(status="canceled", ended_at=int(time.time()))
        return 200, {"events": [event("customer.subscription.deleted", sub)]}

    def charge_event(self, kind, payment_intent):
        pi = STATE["payment_intents"].get(payment_intent)
        if not pi:
            return error(404, "no such payment_intent")
        charge = STATE["charges"][pi["latest_charge"]]
        if kind.startswith("charge.dispute."):
            # A dispute is its own object: it names the charge and payment intent, and carries
            # no metadata of theirs.
            charge["disputed"] = True
            dispute = {"id": new_id("dp"), "object": "dispute", "amount": charge["amount"],
                       "charge": charge["id"], "payment_intent": payment_intent, "currency": charge["currency"],
                       "reason": "fraudulent", "status": "needs_response", "metadata": {}, "livemode": False}
            return 200, {"events": [event(kind, dispute)]}
        return 200, {"events": [event(kind, charge)]}


def public(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def event(kind, obj):
    return {"id": new_id("evt"), "object": "event", "api_version": "2024-06-20",
            "created": int(time.time()), "type": kind, "livemode": False, "pending_webhooks": 1,
            "data": {"object": json.loads(json.dumps(public(obj)))}}


def deliver(url, secret, events, copies=1, concurrency=1, age_s=0, bad_signature=False):
    """POSTs each event `copies` times (up to `concurrency` at once), signed as Stripe signs."""
    jobs = [e for e in events for _ in range(copies)]

    def send(e):
        payload = json.dumps(e)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, "whsec_wrong" if bad_signature else secret, int(time.time()) - age_s)
        req = urllib.request.Request(url, data=payload.encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Stripe-Signature": header})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return {"status": resp.status, "body": json.loads(resp.read() or b"null")}
        except urllib.error.HTTPError as err:
            return {"status": err.code, "body": json.loads(err.read() or b"null")}

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(send, jobs))


def make_handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_" + secrets.token_hex(7))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > 1 << 20:
                return None
            return self.rfile.read(n).decode()

        def authorised(self):
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {fake.secret_key}":
                self.reply(*error(401, "Invalid API Key provided: " + auth[7:15] + "****"))
                return False
            return True

        def do_GET(self):
            path = urllib.parse.urlparse(self.path).path
            if path.startswith("/pay/"):
                return self.hosted_page(path[len("/pay/"):])
            if not self.authorised():
                return
            kinds = {"/v1/checkout/sessions/": "sessions", "/v1/payment_intents/": "payment_intents",
                     "/v1/charges/": "charges", "/v1/refunds/": "refunds", "/v1/subscriptions/": "subscriptions",
                     "/v1/invoices/": "invoices"}
            for prefix, kind in kinds.items():
                if path.startswith(prefix):
                    obj = STATE[kind].get(path[len(prefix):])
                    if obj:
                        return self.reply(200, public(obj))
                    return self.reply(*error(404, f"No such {kind[:-1]}: '{path[len(prefix):]}'"))
            self.reply(*error(404, f"Unrecognized request URL (GET: {path})."))

        def hosted_page(self, session_id):
            """Stripe's hosted checkout, as far as a buyer sees it: the amount and a pay button."""
            s = STATE["sessions"].get(session_id)
            if not s:
                return self.reply(*error(404, "no such session"))
            amount = s["amount_total"]
            html = (f"<!doctype html><title>Pay</title><h1>Pay {amount} {s['currency']} (minor units)</h1>"
                    f"<form method=post action='/pay/{session_id}'><button id=pay>Pay</button></form>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def pay_and_return(self, session_id):
            """The buyer pays: the session completes, its events go to the webhook, in order,
            and the browser goes back to the success URL."""
            with LOCK:
                status, body = fake.pay(session_id)
            if status != 200:
                return self.reply(status, body)
            if WEBHOOK["url"]:
                deliver(WEBHOOK["url"], WEBHOOK["secret"], body["events"])
            self.send_response(303)
            self.send_header("Location", STATE["sessions"][session_id]["success_url"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            path = urllib.parse.urlparse(self.path).path
            raw = self.body()
            if raw is None:
                return self.reply(*error(413, "request too large"))
            if path.startswith("/pay/"):
                return self.pay_and_return(path[len("/pay/"):])
            if path.startswith("/_fake/"):
                return self.fake_control(path, json.loads(raw or "{}"))
            if not self.authorised():
                return
            params = parse_form(raw)
            key = self.headers.get("Idempotency-Key")
            digest = hashlib.sha256(f"{path}\n{raw}".encode()).hexdigest()
            with LOCK:
                if key and key in STATE["idempotency"]:
                    first_digest, status, body = STATE["idempotency"][key]
                    if first_digest != digest:
                        return self.reply(*error(
                            400, "Keys for idempotent requests can only be used with the same parameters "
                                 "they were first used with. Try using a key other than "
                                 f"'{key}' if you meant to execute a different request.",
                            kind="idempotency_error"))
                    return self.reply(status, body, [("Idempotent-Replayed", "true")])
                if path == "/v1/checkout/sessions":
                    status, body = fake.create_session(params)
                elif path == "/v1/refunds":
                    status, body = fake.refund(params)
                elif path.startswith("/v1/subscriptions/"):
                    status, body = fake.update_subscription(path[len("/v1/subscriptions/"):], params)
                else:
                    status, body = error(404, f"Unrecognized request URL (POST: {path}).")
                if key and status < 500:
                    STATE["idempotency"][key] = (digest, status, body)
            self.reply(status, body)

        def do_DELETE(self):
            path = urllib.parse.urlparse(self.path).path
            self.body()
            if not self.authorised():
                return
            if path.startswith("/v1/subscriptions/"):
                with LOCK:
                    return self.reply(*fake.delete_subscription(path[len("/v1/subscriptions/"):]))
            self.reply(*error(404, f"Unrecognized request URL (DELETE: {path})."))

        def fake_control(self, path, p):
            with LOCK:
                if path.startswith("/_fake/pay/"):
                    return self.reply(*fake.pay(path[len("/_fake/pay/"):]))
                if path.startswith("/_fake/renew/"):
                    return self.reply(*fake.renew(path[len("/_fake/renew/"):]))
                if path.startswith("/_fake/end/"):
                    return self.reply(*fake.end(path[len("/_fake/end/"):]))
                if path == "/_fake/charge-event":
                    return self.reply(*fake.charge_event(p["type"], p["payment_intent"]))
                if path == "/_fake/config":
                    WEBHOOK.update(url=p["webhook_url"], secret=p["webhook_secret"])
                    return self.reply(200, {"ok": True})
                if path == "/_fake/requests":
                    return self.reply(200, {"idempotency_keys": sorted(STATE["idempotency"]),
                                            "payment_intents": sorted(STATE["payment_intents"])})
            if path == "/_fake/deliver":
                results = deliver(p["url"], p["secret"], p["events"], p.get("copies", 1),
                                  p.get("concurrency", 1), p.get("age_s", 0), p.get("bad_signature", False))
                return self.reply(200, {"results": results})
            self.reply(*error(404, "no such control"))

    return Handler


def serve(secret_key, lifetime, announce=True):
    port = [0]
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Fake(secret_key, port)))
    server.daemon_threads = True
    port[0] = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if announce:
        print(json.dumps({"port": port[0]}), flush=True)
    return server, port[0]


def selftest():
    """Stripe's own client against this fake: every response must parse into its models."""
    _, port = serve("sk_test_self", 60, announce=False)
    stripe.api_key = "sk_test_self"
    stripe.api_base = f"http://127.0.0.1:{port}"
    stripe.max_network_retries = 0
    session = stripe.checkout.Session.create(
        mode="payment", success_url="https://example.com/ok", cancel_url="https://example.com/no",
        client_reference_id="ord_1", metadata={"order_id": "ord_1"},
        payment_intent_data={"metadata": {"order_id": "ord_1"}},
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1902,
                                                   "product_data": {"name": "Cup final × 2"}}}],
        idempotency_key="self-1")
    assert isinstance(session, stripe.checkout.Session), type(session)
    assert session.amount_total == 1902 and session.url.startswith("http://127.0.0.1"), session
    again = stripe.checkout.Session.create(
        mode="payment", success_url="https://example.com/ok", cancel_url="https://example.com/no",
        client_reference_id="ord_1", metadata={"order_id": "ord_1"},
        payment_intent_data={"metadata": {"order_id": "ord_1"}},
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 1902,
                                                   "product_data": {"name": "Cup final × 2"}}}],
        idempotency_key="self-1")
    assert again.id == session.id, "an idempotent retry returns the first session"
    try:
        stripe.checkout.Session.create(mode="payment", success_url="https://example.com/ok",
                                       line_items=[{"quantity": 1, "price_data": {
                                           "currency": "eur", "unit_amount": 1, "product_data": {"name": "x"}}}],
                                       idempotency_key="self-1")
        raise AssertionError("a reused key with other parameters must fail")
    except stripe.IdempotencyError:
        pass
    try:
        stripe.checkout.Session.create(mode="payment", success_url="https://example.com/ok", line_items=[])
        raise AssertionError("no line items must fail")
    except stripe.InvalidRequestError:
        pass
    with LOCK:
        events = Fake("sk_test_self", [port]).pay(session.id)[1]["events"]
    completed = stripe.Event.construct_from(events[-1], stripe.api_key)
    assert completed.type == "checkout.session.completed"
    paid = stripe.checkout.Session.retrieve(session.id)
    assert paid.payment_status == "paid" and paid.payment_intent.startswith("pi_"), paid
    pi = stripe.PaymentIntent.retrieve(paid.payment_intent)
    charge = stripe.Charge.retrieve(pi.latest_charge)
    assert charge.metadata["order_id"] == "ord_1", charge
    refund = stripe.Refund.create(payment_intent=pi.id, amount=500, idempotency_key="r-1")
    assert isinstance(refund, stripe.Refund) and refund.amount == 500, refund
    assert stripe.Charge.retrieve(charge.id).amount_refunded == 500
    try:
        stripe.Refund.create(payment_intent=pi.id, amount=5000)
        raise AssertionError("refunding more than is left must fail")
    except stripe.InvalidRequestError:
        pass
    sub_session = stripe.checkout.Session.create(
        mode="subscription", success_url="https://example.com/ok",
        subscription_data={"metadata": {"order_id": "ord_2"}, "trial_period_days": 7},
        line_items=[{"quantity": 1, "price_data": {"currency": "eur", "unit_amount": 499,
                                                   "recurring": {"interval": "month"},
                                                   "product_data": {"name": "Monthly"}}}])
    with LOCK:
        sub_events = Fake("sk_test_self", [port]).pay(sub_session.id)[1]["events"]
    sub = stripe.Subscription.retrieve(stripe.checkout.Session.retrieve(sub_session.id).subscription)
    assert sub.status == "trialing" and sub.metadata["order_id"] == "ord_2", sub
    invoice = stripe.Event.construct_from(sub_events[1], stripe.api_key).data.object
    assert invoice.object == "invoice" and invoice.subscription == sub.id, invoice
    canceling = stripe.Subscription.modify(sub.id, cancel_at_period_end=True)
    assert canceling.cancel_at_period_end is True, canceling
    ended = stripe.Subscription.cancel(sub.id)
    assert ended.status == "canceled", ended
    # A delivery signed here verifies with the official library.
    payload = json.dumps(events[-1])
    header = stripe.WebhookSignature.generate_signature_header(payload, "whsec_self")
    assert stripe.Webhook.construct_event(payload, header, "whsec_self").id == events[-1]["id"]
    try:
        stripe.checkout.Session.retrieve(session.id, api_key="sk_test_wrong")
        raise AssertionError("a wrong key must fail")
    except stripe.AuthenticationError:
        pass
    print(json.dumps({"selftest": "ok", "stripe": stripe.VERSION}))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret-key", default="sk_test_ferrocast")
    parser.add_argument("--lifetime", type=float, default=600)
    parser.add_argument("--selftest", action="store_true")
    args = parser.parse_args()
    if args.selftest:
        return selftest()
    serve(args.secret_key, args.lifetime)
    deadline = time.time() + args.lifetime
    # Ends with its test: stdin closing (the test process gone) or the lifetime.
    watcher = threading.Thread(target=lambda: sys.stdin.read(), daemon=True)
    watcher.start()
    while time.time() < deadline and watcher.is_alive():
        time.sleep(0.2)


if __name__ == "__main__":
    main()
