"""Example ASGI application deployed by the asgi_app role in the demo and the Molecule scenarios.

It is an example, not part of the role: each endpoint exists to prove one property of a
deployment (health, WebSocket upgrade, unbuffered Server-Sent Events, concurrent I/O).
"""

import asyncio
import os
import time

from fastapi import FastAPI, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

VERSION = os.environ.get("APP_VERSION", "1")

app = FastAPI(title="asgi-app example", version=VERSION)


@app.get("/health")
async def health() -> dict:
    """Liveness for the role's post-deploy check and for load balancers."""
    return {"status": "ok", "version": VERSION, "pid": os.getpid()}


@app.get("/io")
async def io_bound(delay: float = Query(0.2, ge=0, le=30)) -> dict:
    """Stands for a call to a slow backend: the worker is free while it waits."""
    started = time.monotonic()
    await asyncio.sleep(delay)
    return {"delay": delay, "elapsed": round(time.monotonic() - started, 4), "pid": os.getpid()}


@app.get("/sse")
async def server_sent_events(
    count: int = Query(10, ge=1, le=10_000), interval: float = Query(0.1, ge=0, le=60)
) -> StreamingResponse:
    """One event every `interval` seconds; each must reach the client on its own."""

    async def events():
        for number in range(count):
            yield f"id: {number}\nevent: tick\ndata: {time.time():.6f}\n\n"
            await asyncio.sleep(interval)

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
