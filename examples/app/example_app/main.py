"""Example ASGI application deployed by the asgi_app role in the demo and the Molecule scenarios.

It is an example, not part of the role: each endpoint exists to prove one property of a
deployment (health, WebSocket upgrade, unbuffered Server-Sent Events, concurrent I/O, what a
proxy passes on about the client, and a browser's view of the streams). example_app.wsgi is
its WSGI twin for the benchmark's sync and gthread rows.
"""

import asyncio
import os
import time
from importlib import resources

from fastapi import FastAPI, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, StreamingResponse

from example_app import __version__

VERSION = os.environ.get("APP_VERSION") or __version__

# Seconds to spend at import, as a real app with heavy imports, a model to load or a pool to
# fill does; 0 unless set. The zero-downtime scenario sets it to measure deploys of a slow app.
time.sleep(float(os.environ.get("EXAMPLE_APP_IMPORT_DELAY") or 0))

app = FastAPI(title="asgi-app example", version=VERSION)

# Package data, so it is found from a source directory and from an installed wheel alike.
PAGE = resources.files("example_app").joinpath("page.html").read_text(encoding="utf-8")


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    """A browser's view: the page reads /sse with EventSource and echoes through /ws.

    Its URLs are relative, so it works behind a proxy, under a path prefix, on http or https.
    """
    return PAGE


@app.get("/health")
async def health() -> dict:
    """Liveness for the role's post-deploy check and for load balancers."""
    return {"status": "ok", "version": VERSION, "pid": os.getpid()}


@app.get("/client")
async def client(request: Request) -> dict:
    """What the app was told about its client.

    Behind a proxy, gunicorn's forwarded_allow_ips decides whether Uvicorn replaces the proxy's
    address and scheme with the X-Forwarded-For and X-Forwarded-Proto it sent.
    """
    return {
        "client": request.client.host if request.client else None,  # a unix socket has no address
        "scheme": request.url.scheme,
        "host": request.headers.get("host"),
        "forwarded_for": request.headers.get("x-forwarded-for"),
        "forwarded_proto": request.headers.get("x-forwarded-proto"),
    }


@app.get("/json")
async def json_message() -> dict:
    """CPU-light JSON, the benchmark's measure of what the server stack itself costs."""
    return {"message": "Hello, World!"}


@app.get("/io")
async def io_bound(delay: float = Query(0.2, ge=0, le=30)) -> dict:
    """Stands for a call to a slow backend: the worker is free while it waits."""
    started = time.monotonic()
    await asyncio.sleep(delay)
    return {"delay": delay, "elapsed": round(time.monotonic() - started, 4), "pid": os.getpid()}


@app.get("/sse")
async def server_sent_events(
    request: Request,
    count: int = Query(10, ge=1, le=10_000),
    interval: float = Query(0.1, ge=0, le=60),
) -> StreamingResponse:
    """One event every `interval` seconds; each must reach the client on its own.

    When the worker begins to stop (restart, reload, recycling) the stream ends at once with a
    last `shutdown` event, cleanly, so the client reconnects to a live worker instead of
    waiting for the server's graceful-shutdown deadline. The asgi_app role's worker puts
    the asyncio.Event it sets then in the ASGI state as `asgi_app_shutdown`.
    """
    shutdown: asyncio.Event = getattr(request.state, "asgi_app_shutdown", None) or asyncio.Event()

    async def events():
        for number in range(count):
            yield f"id: {number}\nevent: tick\ndata: {time.time():.6f}\n\n"
            try:
                await asyncio.wait_for(shutdown.wait(), interval)
            except asyncio.TimeoutError:
                continue
            yield "event: shutdown\ndata: the server is restarting\nretry: 500\n\n"
            return

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket) -> None:
    """Echoes every text message back, prefixed so the client knows the server answered."""
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(f"echo: {message}")
    except WebSocketDisconnect:
        pass
