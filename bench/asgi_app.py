"""
The ASGI twin of bench/app.py's resource, for uvicorn: a small fixed body;
`/pid` answers the worker's pid.
"""

import os


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode() if scope["path"] == "/pid" else b"hello\n"
    # With a length, as the other servers answer (not chunked).
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
