"""Schemathesis hooks for tests/schema.rs: how to send the one body type it does not know,
CMCD event lines (`POST /v1/cmcd`, `application/cmcd`), as text."""

import schemathesis


@schemathesis.serializer("application/cmcd")
def cmcd(ctx, value):
    if isinstance(value, bytes):
        return {"data": value}
    return {"data": str(value).encode("utf-8")}
