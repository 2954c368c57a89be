"""The example app's /io and /json endpoints as a WSGI app, for the benchmark's sync and gthread
rows: those workers cannot serve the ASGI app, so they serve this one, doing the same work.

A WSGI worker is busy for the whole of a request: time.sleep stands where the ASGI app awaits
its slow backend, and holds a worker (or a thread) while it waits.
"""

import json
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/json":
        body = {"message": "Hello, World!"}
    elif path == "/io":
        delay = float(parse_qs(environ.get("QUERY_STRING", "")).get("delay", ["0.2"])[0])
        delay = min(max(delay, 0.0), 30.0)
        started = time.monotonic()
        time.sleep(delay)
        body = {"delay": delay, "elapsed": round(time.monotonic() - started, 4), "pid": os.getpid()}
    elif path == "/health":
        body = {"status": "ok", "pid": os.getpid()}
    else:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"detail": "Not Found"}']
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
