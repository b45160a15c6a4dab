"""Schemathesis hooks for tests/schema.rs: how to send the body types it does not know as
they travel: CMCD event lines (`application/cmcd`) and SDP offers (`application/sdp`) as
text, tus chunks (`application/offset+octet-stream`) as bytes."""

import schemathesis


def _bytes(value):
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


@schemathesis.serializer("application/cmcd", "application/sdp")
def text(ctx, value):
    return {"data": _bytes(value)}


@schemathesis.serializer("application/offset+octet-stream")
def chunk(ctx, value):
    return {"data": _bytes(value)}
