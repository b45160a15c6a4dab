"""A local stand-in for PayPal's REST API (Orders v2, Payments v2, webhooks), for tests:
PayPal's servers cannot be reached here.

It speaks PayPal's wire format: OAuth client credentials (Basic auth → a bearer token),
JSON orders with purchase units and items whose totals PayPal checks, `PayPal-Request-Id`
(a repeated id gets the first answer), PayPal's error objects (`name`, `message`,
`details[].issue`), the approval page behind the `payer-action` link, captures, refunds, and
webhook deliveries with the `PAYPAL-TRANSMISSION-*` headers, verified by
`POST /v1/notifications/verify-webhook-signature` as PayPal verifies them: the signature
over `transmission_id|transmission_time|webhook_id|crc32(event as sent)`.

    python paypal_fake.py [--lifetime 600]   prints {"port": N}
    python paypal_fake.py --selftest         PayPal's official SDK (paypal-server-sdk) against it

Tests drive the buyer and PayPal's side through /_fake/ endpoints: approve an order, dispute a
capture, fail a path with 503 or decline the next captures (INSTRUMENT_DECLINED), deliver events.
"""

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
import uuid

from fake_server import LOCK, JsonHandler, deliver, deliver_later, main, serve, token

CLIENT_ID = "AV-ferrocast-fake-client"
CLIENT_SECRET = "EK-ferrocast-fake-secret"
WEBHOOK_ID = "8PT597110X687430LKGECATA"
# Signs deliveries; PayPal signs with its certificate's key, this fake with a secret only it
# knows. Either way only the verify endpoint can tell a good signature.
SIGNING_KEY = secrets.token_bytes(32)
EXPONENT = {"JPY": 0, "HUF": 0, "TWD": 0}
STATE = {"tokens": set(), "orders": {}, "captures": {}, "refunds": {}, "request_ids": {},
         "config": {"webhook_url": None, "webhook_id": WEBHOOK_ID}, "failures": {}, "seen_request_ids": [],
         "declines": 0}


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def error(status, name, message, issue=None, field=None):
    body = {"name": name, "message": message, "debug_id": secrets.token_hex(7)}
    if issue:
        body["details"] = [{"issue": issue, "field": field or "", "description": message}]
    return status, body


def unprocessable(issue, message):
    return error(422, "UNPROCESSABLE_ENTITY",
                 "The requested action could not be performed, semantically incorrect, or failed business "
                 "validation.", issue) if not message else error(422, "UNPROCESSABLE_ENTITY", message, issue)


def minor(amount):
    """A PayPal amount object in minor units; None if its value is not a valid decimal for
    its currency."""
    try:
        currency, value = amount["currency_code"], amount["value"]
    except (KeyError, TypeError):
        return None
    places = EXPONENT.get(currency, 2)
    whole, _, frac = value.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac) > places or ("." in value and not frac):
        return None
    return int(whole) * 10 ** places + int((frac or "0").ljust(places, "0")[:places] or "0")


def money(currency, units):
    places = EXPONENT.get(currency, 2)
    if places == 0:
        return {"currency_code": currency, "value": str(units)}
    return {"currency_code": currency, "value": f"{units // 10 ** places}.{units % 10 ** places:0{places}d}"}


def base(port):
    return f"http://127.0.0.1:{port}"


def sign(payload, bad=False):
    """The headers PayPal sends with a delivery."""
    transmission_id = str(uuid.uuid4())
    transmission_time = now_iso()
    crc = binascii.crc32(payload) & 0xFFFFFFFF
    message = f"{transmission_id}|{transmission_time}|{STATE['config']['webhook_id']}|{crc}"
    sig = base64.b64encode(hmac.new(SIGNING_KEY, message.encode(), hashlib.sha256).digest()).decode()
    if bad:
        sig = base64.b64encode(secrets.token_bytes(32)).decode()
    return {"PAYPAL-TRANSMISSION-ID": transmission_id, "PAYPAL-TRANSMISSION-TIME": transmission_time,
            "PAYPAL-TRANSMISSION-SIG": sig, "PAYPAL-AUTH-ALGO": "SHA256withRSA",
            "PAYPAL-CERT-URL": f"{STATE['cert_url']}"}


def event(kind, resource_type, resource, summary):
    return {"id": "WH-" + token(17) + "-" + token(17), "create_time": now_iso(), "resource_type": resource_type,
            "event_type": kind, "summary": summary, "resource": json.loads(json.dumps(resource)),
            "event_version": "1.0", "resource_version": "2.0",
            "links": [{"href": "https://api-m.paypal.com/v1/notifications/webhooks-events/WH-x", "rel": "self",
                       "method": "GET"}]}


class Fake:
    def __init__(self, port):
        self.port = port

    def create_order(self, p):
        if p.get("intent") not in ("CAPTURE", "AUTHORIZE"):
            return error(400, "INVALID_REQUEST", "Request is not well-formed, syntactically incorrect, or violates "
                                                 "schema.", "MISSING_REQUIRED_PARAMETER", "/intent")
        units = p.get("purchase_units")
        if not isinstance(units, list) or not units:
            return error(400, "INVALID_REQUEST", "Request is not well-formed, syntactically incorrect, or violates "
                                                 "schema.", "MISSING_REQUIRED_PARAMETER", "/purchase_units")
        for unit in units:
            amount = unit.get("amount") or {}
            total = minor(amount)
            if total is None:
                return error(400, "INVALID_REQUEST", "The value of a field is invalid.", "DECIMAL_PRECISION",
                             "/purchase_units/@reference_id=='default'/amount/value")
            items = unit.get("items") or []
            breakdown = amount.get("breakdown") or {}
            if items:
                if "item_total" not in breakdown:
                    return unprocessable("ITEM_TOTAL_REQUIRED", None)
                item_sum = 0
                for item in items:
                    price = minor(item.get("unit_amount") or {})
                    if price is None or not str(item.get("quantity", "")).isdigit() or not item.get("name"):
                        return error(400, "INVALID_REQUEST", "The value of a field is invalid.", "INVALID_PARAMETER_VALUE",
                                     "/purchase_units/@reference_id=='default'/items")
                    if len(item["name"]) > 127:
                        return error(400, "INVALID_REQUEST", "The value of a field is too long.",
                                     "INVALID_STRING_MAX_LENGTH", "/purchase_units/@reference_id=='default'/items/0/name")
                    if item["unit_amount"]["currency_code"] != amount["currency_code"]:
                        return unprocessable("CURRENCY_MISMATCH", None)
                    item_sum += price * int(item["quantity"])
                if item_sum != minor(breakdown["item_total"]):
                    return unprocessable("ITEM_TOTAL_MISMATCH", None)
            if breakdown:
                expected = sum(minor(breakdown[k]) or 0 for k in ("item_total", "tax_total", "shipping", "handling",
                                                                    "insurance") if k in breakdown)
                expected -= sum(minor(breakdown[k]) or 0 for k in ("discount", "shipping_discount") if k in breakdown)
                if expected != total:
                    return unprocessable("AMOUNT_MISMATCH", None)
        context = ((p.get("payment_source") or {}).get("paypal") or {}).get("experience_context") or {}
        context = context or p.get("application_context") or {}
        order = {"id": token(17), "intent": p["intent"], "status": "PAYER_ACTION_REQUIRED" if p.get("payment_source")
                 else "CREATED", "create_time": now_iso(),
                 "payment_source": {"paypal": {}} if p.get("payment_source") else None,
                 "purchase_units": [{**u, "reference_id": u.get("reference_id", "default")} for u in units],
                 "_return_url": context.get("return_url"), "_cancel_url": context.get("cancel_url")}
        if order["payment_source"] is None:
            del order["payment_source"]
        STATE["orders"][order["id"]] = order
        return 201, self.view(order)

    def view(self, order):
        b = base(self.port)
        links = [{"href": f"{b}/v2/checkout/orders/{order['id']}", "rel": "self", "method": "GET"}]
        if order["status"] in ("CREATED", "PAYER_ACTION_REQUIRED"):
            rel = "payer-action" if order.get("payment_source") else "approve"
            links.append({"href": f"{b}/checkoutnow?token={order['id']}", "rel": rel, "method": "GET"})
        if order["status"] == "APPROVED":
            links.append({"href": f"{b}/v2/checkout/orders/{order['id']}/capture", "rel": "capture",
                          "method": "POST"})
        return {**{k: v for k, v in order.items() if not k.startswith("_")}, "links": links}

    def approve(self, order_id):
        """The buyer approves on PayPal's page; returns the approval's webhook event."""
        order = STATE["orders"].get(order_id)
        if not order:
            return error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID")
        if order["status"] not in ("CREATED", "PAYER_ACTION_REQUIRED"):
            return unprocessable("ORDER_ALREADY_APPROVED" if order["status"] == "APPROVED" else "ORDER_COMPLETED",
                                 None)
        order["status"] = "APPROVED"
        order["payer"] = {"payer_id": token(13), "email_address": "buyer@example.com",
                          "name": {"given_name": "Ada", "surname": "Buyer"}}
        return 200, {"events": [event("CHECKOUT.ORDER.APPROVED", "checkout-order", self.view(order),
                                      "An order has been approved by buyer")]}

    def capture(self, order_id):
        order = STATE["orders"].get(order_id)
        if not order:
            return error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID")
        if order["status"] == "COMPLETED":
            return unprocessable("ORDER_ALREADY_CAPTURED", None)
        if order["status"] != "APPROVED":
            return unprocessable("ORDER_NOT_APPROVED", None)
        if STATE["declines"] > 0:
            # The buyer's card or bank says no: PayPal wants the buyer to approve again.
            STATE["declines"] -= 1
            order["status"] = "PAYER_ACTION_REQUIRED"
            return unprocessable("INSTRUMENT_DECLINED", "The instrument presented was either declined by the "
                                                        "processor or bank, or it can't be used for this payment.")
        b = base(self.port)
        events = []
        for unit in order["purchase_units"]:
            cap = {"id": token(17), "status": "COMPLETED", "amount": unit["amount"] and
                   {"currency_code": unit["amount"]["currency_code"], "value": unit["amount"]["value"]},
                   "final_capture": True, "custom_id": unit.get("custom_id"), "create_time": now_iso(),
                   "update_time": now_iso(), "seller_protection": {"status": "ELIGIBLE"},
                   "supplementary_data": {"related_ids": {"order_id": order_id}}, "_refunded": 0}
            cap["links"] = [{"href": f"{b}/v2/payments/captures/{cap['id']}", "rel": "self", "method": "GET"},
                            {"href": f"{b}/v2/payments/captures/{cap['id']}/refund", "rel": "refund",
                             "method": "POST"},
                            {"href": f"{b}/v2/checkout/orders/{order_id}", "rel": "up", "method": "GET"}]
            STATE["captures"][cap["id"]] = cap
            unit["payments"] = {"captures": [public(cap)]}
            events.append(event("PAYMENT.CAPTURE.COMPLETED", "capture", public(cap),
                                "Payment completed for " + cap["amount"]["value"]))
        order["status"] = "COMPLETED"
        return 201, {"order": self.view(order), "events": events}

    def refund(self, capture_id, p):
        cap = STATE["captures"].get(capture_id)
        if not cap:
            return error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID")
        currency = cap["amount"]["currency_code"]
        total = minor(cap["amount"])
        left = total - cap["_refunded"]
        if p.get("amount"):
            if p["amount"].get("currency_code") != currency:
                return unprocessable("CURRENCY_MISMATCH", None)
            amount = minor(p["amount"])
            if amount is None:
                return error(400, "INVALID_REQUEST", "The value of a field is invalid.", "DECIMAL_PRECISION",
                             "/amount/value")
        else:
            amount = left
        if amount <= 0 or amount > left:
            return unprocessable("REFUND_AMOUNT_EXCEEDED" if left > 0 else "CAPTURE_FULLY_REFUNDED", None)
        cap["_refunded"] += amount
        cap["status"] = "REFUNDED" if cap["_refunded"] == total else "PARTIALLY_REFUNDED"
        b = base(self.port)
        refund = {"id": token(17), "status": "COMPLETED", "amount": money(currency, amount),
                  "custom_id": cap.get("custom_id"), "create_time": now_iso(), "update_time": now_iso(),
                  "seller_payable_breakdown": {"gross_amount": money(currency, amount),
                                               "paypal_fee": money(currency, 0),
                                               "net_amount": money(currency, amount),
                                               "total_refunded_amount": money(currency, cap["_refunded"])},
                  "links": [{"href": f"{b}/v2/payments/refunds/X", "rel": "self", "method": "GET"},
                            {"href": f"{b}/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"}]}
        refund["links"][0]["href"] = f"{b}/v2/payments/refunds/{refund['id']}"
        STATE["refunds"][refund["id"]] = refund
        return 201, {"refund": refund, "events": [event("PAYMENT.CAPTURE.REFUNDED", "refund", refund,
                                                        "A " + refund["amount"]["value"] + " payment was refunded")]}

    def dispute(self, capture_id):
        cap = STATE["captures"].get(capture_id)
        if not cap:
            return error(404, "RESOURCE_NOT_FOUND", "no such capture")
        dispute = {"dispute_id": "PP-D-" + token(5), "create_time": now_iso(), "reason": "UNAUTHORISED",
                   "status": "OPEN", "dispute_amount": cap["amount"],
                   "disputed_transactions": [{"seller_transaction_id": capture_id,
                                              "seller": {"merchant_id": token(13)}}]}
        return 200, {"events": [event("CUSTOMER.DISPUTE.CREATED", "dispute", dispute, "A new dispute opened")]}

    def verify(self, raw):
        """PayPal's postback: the event must be the bytes that were signed."""
        try:
            p = json.loads(raw)
        except ValueError:
            return error(400, "INVALID_REQUEST", "Request is not well-formed")
        for field in ("auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time",
                      "webhook_id", "webhook_event"):
            if field not in p:
                return error(400, "VALIDATION_ERROR", "Invalid request - see details", "MISSING_REQUIRED_FIELD",
                             field)
        at = raw.rfind(b'"webhook_event":')
        try:
            event_raw = raw[at + len(b'"webhook_event":'):].rstrip()[:-1].strip()
            json.loads(event_raw)
        except ValueError:
            return 200, {"verification_status": "FAILURE"}
        crc = binascii.crc32(event_raw) & 0xFFFFFFFF
        message = f"{p['transmission_id']}|{p['transmission_time']}|{p['webhook_id']}|{crc}"
        expected = base64.b64encode(hmac.new(SIGNING_KEY, message.encode(), hashlib.sha256).digest()).decode()
        ok = (hmac.compare_digest(expected, str(p["transmission_sig"]))
              and p["webhook_id"] == STATE["config"]["webhook_id"] and p["cert_url"] == STATE["cert_url"]
              and p["auth_algo"] == "SHA256withRSA")
        return 200, {"verification_status": "SUCCESS" if ok else "FAILURE"}


def public(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def make_handler():
    fake = Fake(0)

    class Handler(JsonHandler):
        def setup(self):
            super().setup()
            fake.port = self.server.server_address[1]
            STATE["cert_url"] = f"{base(fake.port)}/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270"

        def authorised(self):
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and auth[7:] in STATE["tokens"]:
                return True
            self.reply(*error(401, "AUTHENTICATION_FAILURE", "Authentication failed due to invalid authentication "
                                                             "credentials or a missing Authorization header."))
            return False

        def failing(self, path):
            """Answers 503 while a test has asked this path to fail."""
            for prefix, left in STATE["failures"].items():
                if path.startswith(prefix) and left > 0:
                    STATE["failures"][prefix] = left - 1
                    self.reply(*error(503, "SERVICE_UNAVAILABLE", "Service Unavailable."))
                    return True
            return False

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            path = url.path
            if path == "/checkoutnow":
                order_id = urllib.parse.parse_qs(url.query).get("token", [""])[0]
                order = STATE["orders"].get(order_id)
                if not order:
                    return self.reply(*error(404, "RESOURCE_NOT_FOUND", "no such order"))
                amount = order["purchase_units"][0]["amount"]
                return self.html(f"<!doctype html><title>PayPal</title><h1>Pay {amount['value']} "
                                 f"{amount['currency_code']} with PayPal</h1><form method=post "
                                 f"action='/checkoutnow?token={order_id}'><button id=pay>Pay Now</button></form>")
            if not self.authorised():
                return
            with LOCK:
                if path.startswith("/v2/checkout/orders/"):
                    order = STATE["orders"].get(path.rsplit("/", 1)[1])
                    if order:
                        return self.reply(200, fake.view(order))
                if path.startswith("/v2/payments/captures/"):
                    cap = STATE["captures"].get(path.rsplit("/", 1)[1])
                    if cap:
                        return self.reply(200, public(cap))
            self.reply(*error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.",
                              "INVALID_RESOURCE_ID"))

        def do_POST(self):
            url = urllib.parse.urlparse(self.path)
            path = url.path
            raw = self.raw_body()
            if raw is None:
                return self.reply(*error(413, "REQUEST_TOO_LARGE", "too large"))
            if path == "/checkoutnow":
                return self.approve_and_return(urllib.parse.parse_qs(url.query).get("token", [""])[0])
            if path.startswith("/_fake/"):
                return self.control(path, json.loads(raw or b"{}"))
            with LOCK:
                if self.failing(path):
                    return
            if path == "/v1/oauth2/token":
                return self.oauth(raw)
            if not self.authorised():
                return
            if path == "/v1/notifications/verify-webhook-signature":
                return self.reply(*fake.verify(raw))
            try:
                p = json.loads(raw or b"{}")
            except ValueError:
                return self.reply(*error(400, "INVALID_REQUEST", "Request is not well-formed, syntactically "
                                                                 "incorrect, or violates schema."))
            request_id = self.headers.get("PayPal-Request-Id")
            with LOCK:
                if request_id:
                    STATE["seen_request_ids"].append(request_id)
                    if request_id in STATE["request_ids"]:
                        first_path, status, body = STATE["request_ids"][request_id]
                        if first_path == path:
                            return self.reply(200 if status == 201 else status, body)
                events = []
                if path == "/v2/checkout/orders":
                    status, body = fake.create_order(p)
                elif path.startswith("/v2/checkout/orders/") and path.endswith("/capture"):
                    status, body = fake.capture(path.split("/")[4])
                    if status == 201:
                        events, body = body["events"], body["order"]
                elif path.startswith("/v2/payments/captures/") and path.endswith("/refund"):
                    status, body = fake.refund(path.split("/")[4], p)
                    if status == 201:
                        events, body = body["events"], body["refund"]
                else:
                    status, body = error(404, "NOT_FOUND", f"No route for {path}")
                if request_id and status < 500:
                    STATE["request_ids"][request_id] = (path, status, body)
            if events and STATE["config"]["webhook_url"]:
                deliver_later(STATE["config"]["webhook_url"], events, sign)
            self.reply(status, body)

        def oauth(self, raw):
            expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
            form = urllib.parse.parse_qs(raw.decode())
            if self.headers.get("Authorization") != expected:
                return self.reply(401, {"error": "invalid_client", "error_description": "Client Authentication failed"})
            if form.get("grant_type") != ["client_credentials"]:
                return self.reply(400, {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"})
            access = "A21AA" + secrets.token_urlsafe(40)
            with LOCK:
                STATE["tokens"].add(access)
            self.reply(200, {"scope": "https://uri.paypal.com/services/payments/payment", "access_token": access,
                             "token_type": "Bearer", "app_id": "APP-80W284485P519543T", "expires_in": 32400,
                             "nonce": now_iso() + secrets.token_hex(8)})

        def approve_and_return(self, order_id):
            """The buyer approves: PayPal sends CHECKOUT.ORDER.APPROVED, then the browser goes
            to the return URL with the order's token and the payer's id."""
            with LOCK:
                status, body = fake.approve(order_id)
            if status != 200:
                return self.reply(status, body)
            if STATE["config"]["webhook_url"]:
                deliver(STATE["config"]["webhook_url"], body["events"], sign)
            order = STATE["orders"][order_id]
            sep = "&" if "?" in (order["_return_url"] or "") else "?"
            self.redirect(f"{order['_return_url']}{sep}token={order_id}&PayerID={order['payer']['payer_id']}")

        def control(self, path, p):
            with LOCK:
                if path.startswith("/_fake/approve/"):
                    return self.reply(*fake.approve(path[len("/_fake/approve/"):]))
                if path.startswith("/_fake/refund/"):
                    # The seller refunds the whole capture in PayPal's dashboard.
                    return self.reply(*fake.refund(path[len("/_fake/refund/"):], {}))
                if path.startswith("/_fake/dispute/"):
                    return self.reply(*fake.dispute(path[len("/_fake/dispute/"):]))
                if path == "/_fake/config":
                    STATE["config"].update(p)
                    return self.reply(200, {"ok": True})
                if path == "/_fake/fail":
                    STATE["failures"][p["path"]] = p["times"]
                    return self.reply(200, {"ok": True})
                if path == "/_fake/decline":
                    STATE["declines"] = p["times"]
                    return self.reply(200, {"ok": True})
                if path == "/_fake/requests":
                    return self.reply(200, {"request_ids": STATE["seen_request_ids"],
                                            "captures": sorted(STATE["captures"])})
            if path == "/_fake/deliver":
                results = deliver(p["url"], p["events"], lambda payload: sign(payload, p.get("bad_signature")),
                                  p.get("copies", 1), p.get("concurrency", 1))
                return self.reply(200, {"results": results})
            self.reply(404, {"error": "no such control"})

    return Handler


def selftest():
    """PayPal's official Python SDK against this fake: its models must parse every answer."""
    from paypalserversdk.configuration import Environment, Server
    from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
    from paypalserversdk.models.amount_breakdown import AmountBreakdown
    from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
    from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
    from paypalserversdk.models.item import Item
    from paypalserversdk.models.money import Money
    from paypalserversdk.models.order_request import OrderRequest
    from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
    from paypalserversdk.models.refund_request import RefundRequest
    from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient
    from paypalserversdk.configuration import Configuration
    import paypalserversdk

    _, port = serve(make_handler(), announce=False)
    Configuration.environments[Environment.SANDBOX][Server.DEFAULT] = base(port)
    client = PaypalServersdkClient(
        client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
            o_auth_client_id=CLIENT_ID, o_auth_client_secret=CLIENT_SECRET),
        environment=Environment.SANDBOX)
    unit = PurchaseUnitRequest(
        reference_id="ord_1", custom_id="ord_1",
        amount=AmountWithBreakdown(currency_code="EUR", value="9.51",
                                   breakdown=AmountBreakdown(item_total=Money(currency_code="EUR", value="9.51"))),
        items=[Item(name="Cup final live", quantity="1", unit_amount=Money(currency_code="EUR", value="9.51"))])
    created = client.orders.create_order({"body": OrderRequest(intent=CheckoutPaymentIntent.CAPTURE,
                                                               purchase_units=[unit]),
                                          "paypal_request_id": "self-1", "prefer": "return=representation"})
    order = created.body
    assert created.status_code == 201 and order.status == "CREATED", (created.status_code, created.text)
    approve = next(link.href for link in order.links if link.rel == "approve")
    assert approve.endswith(order.id), approve
    again = client.orders.create_order({"body": OrderRequest(intent=CheckoutPaymentIntent.CAPTURE,
                                                             purchase_units=[unit]),
                                        "paypal_request_id": "self-1"})
    assert again.body.id == order.id, "a repeated PayPal-Request-Id returns the first order"
    wrong = PurchaseUnitRequest(amount=AmountWithBreakdown(
        currency_code="EUR", value="9.52", breakdown=AmountBreakdown(item_total=Money(currency_code="EUR",
                                                                                      value="9.51"))),
        items=[Item(name="x", quantity="1", unit_amount=Money(currency_code="EUR", value="9.51"))])
    try:
        client.orders.create_order({"body": OrderRequest(intent=CheckoutPaymentIntent.CAPTURE,
                                                         purchase_units=[wrong])})
        raise AssertionError("an amount that is not its breakdown's sum must fail")
    except paypalserversdk.exceptions.error_exception.ErrorException as e:
        assert e.response_code == 422 and e.details[0].issue == "AMOUNT_MISMATCH", e
    try:
        client.orders.capture_order({"id": order.id, "prefer": "return=representation"})
        raise AssertionError("an order not approved cannot be captured")
    except paypalserversdk.exceptions.error_exception.ErrorException as e:
        assert e.details[0].issue == "ORDER_NOT_APPROVED", e
    with LOCK:
        approved = Fake(port).approve(order.id)[1]["events"][0]
    assert approved["event_type"] == "CHECKOUT.ORDER.APPROVED"
    captured = client.orders.capture_order({"id": order.id, "prefer": "return=representation",
                                            "paypal_request_id": "self-cap"}).body
    capture = captured.purchase_units[0].payments.captures[0]
    assert captured.status == "COMPLETED" and capture.status == "COMPLETED", captured
    assert capture.amount.value == "9.51" and capture.custom_id == "ord_1", capture
    fetched = client.orders.get_order({"id": order.id}).body
    assert fetched.purchase_units[0].payments.captures[0].id == capture.id
    refund = client.payments.refund_captured_payment({
        "capture_id": capture.id, "paypal_request_id": "self-r1", "prefer": "return=representation",
        "body": RefundRequest(amount=Money(currency_code="EUR", value="5.00"))}).body
    assert refund.status == "COMPLETED" and refund.amount.value == "5.00", refund
    assert refund.seller_payable_breakdown.total_refunded_amount.value == "5.00", refund
    try:
        client.payments.refund_captured_payment({
            "capture_id": capture.id, "body": RefundRequest(amount=Money(currency_code="EUR", value="5.00"))})
        raise AssertionError("refunding more than is left must fail")
    except paypalserversdk.exceptions.error_exception.ErrorException as e:
        assert e.details[0].issue == "REFUND_AMOUNT_EXCEEDED", e
    print(json.dumps({"selftest": "ok", "paypal-server-sdk": "2.4.0"}))


if __name__ == "__main__":
    main(make_handler, selftest)
