"""
The WSGI twin of bench/app.py's `slow` resource, for gunicorn: `/pid` answers
the worker's pid, `/slow?seconds=N` answers after N seconds, anything else
answers at once.
"""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/slow":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("seconds", ["1"])[0])
        time.sleep(seconds)
        body = b"slow\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
