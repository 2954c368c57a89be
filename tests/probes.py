"""Probes that use a deployed ASGI app the way its clients do.

One library for every consumer: the Molecule scenarios' tests, the demo's report and the
benchmarks. Each probe returns plain data (dataclasses) and asserts nothing; callers decide.
Run as a script it prints a report: ``python tests/probes.py http://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx
import websockets


@dataclass
class HttpResult:
    status: int
    body: dict | str
    elapsed: float


@dataclass
class WebSocketResult:
    handshake: bool
    sent: list[str]
    received: list[str]
    close_code: int | None = None
    error: str | None = None

    @property
    def echoed(self) -> bool:
        return self.handshake and self.received == [f"echo: {m}" for m in self.sent]


@dataclass
class SseResult:
    status: int
    content_type: str
    events: list[dict] = field(default_factory=list)  # each with data, id, event, arrived (s)

    @property
    def spread(self) -> float:
        """Seconds between the first and the last event's arrival."""
        return self.events[-1]["arrived"] - self.events[0]["arrived"] if self.events else 0.0

    @property
    def smallest_gap(self) -> float:
        arrivals = [event["arrived"] for event in self.events]
        return min((b - a for a, b in zip(arrivals, arrivals[1:])), default=0.0)


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    ok: int
    failed: int
    elapsed: float
    errors: dict[str, int] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)


def http_get(url: str, timeout: float = 10.0) -> HttpResult:
    started = time.monotonic()
    response = httpx.get(url, timeout=timeout)
    try:
        body: dict | str = response.json()
    except ValueError:
        body = response.text
    return HttpResult(response.status_code, body, time.monotonic() - started)


def websocket_echo(url: str, messages: list[str], timeout: float = 10.0) -> WebSocketResult:
    return asyncio.run(_websocket_echo(url, messages, timeout))


async def _websocket_echo(url: str, messages: list[str], timeout: float) -> WebSocketResult:
    result = WebSocketResult(handshake=False, sent=[], received=[])
    try:
        async with websockets.connect(url, open_timeout=timeout, close_timeout=timeout) as ws:
            result.handshake = True
            for message in messages:
                await ws.send(message)
                result.sent.append(message)
                result.received.append(await asyncio.wait_for(ws.recv(), timeout))
        result.close_code = ws.close_code
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def sse_events(url: str, count: int, timeout: float = 30.0) -> SseResult:
    """Read a text/event-stream event by event, noting when each event arrived."""
    started = time.monotonic()
    with httpx.stream("GET", url, timeout=timeout, headers={"Accept": "text/event-stream"}) as resp:
        result = SseResult(resp.status_code, resp.headers.get("content-type", ""))
        event: dict = {}
        for line in resp.iter_lines():
            if line:
                name, _, value = line.partition(":")
                event[name] = value.lstrip(" ")
                continue
            if event:
                event["arrived"] = time.monotonic() - started
                result.events.append(event)
                event = {}
                if len(result.events) >= count:
                    break
    return result


def concurrent_get(url: str, requests: int, concurrency: int, timeout: float = 60.0) -> LoadResult:
    return asyncio.run(_concurrent_get(url, requests, concurrency, timeout))


async def _concurrent_get(url: str, requests: int, concurrency: int, timeout: float) -> LoadResult:
    result = LoadResult(requests, concurrency, 0, 0, 0.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(requests):
        queue.put_nowait(number)

    async def client(session: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            try:
                response = await session.get(url)
                if response.status_code == 200:
                    result.ok += 1
                    pid = response.json().get("pid")
                    if pid:
                        result.pids.add(pid)
                    continue
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = type(exc).__name__
            result.failed += 1
            result.errors[error] = result.errors.get(error, 0) + 1

    started = time.monotonic()
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    result.elapsed = time.monotonic() - started
    return result


@dataclass
class WatchResult:
    http_ok: int = 0
    http_failed: int = 0
    http_errors: dict[str, int] = field(default_factory=dict)
    ws_sent: int = 0
    ws_echoed: int = 0
    ws_error: str | None = None
    sse_events: int = 0
    sse_error: str | None = None

    @property
    def failures(self) -> int:
        return self.http_failed + (self.ws_sent - self.ws_echoed) + bool(self.ws_error) + bool(self.sse_error)


class Watch:
    """Keep an HTTP poller, a WebSocket echo client and an SSE reader busy while a block runs.

    with Watch("http://127.0.0.1:8000") as watch:
        ...  # deploy, reload, break something
    watch.result  # what the clients saw, failures counted
    """

    def __init__(self, base_url: str, interval: float = 0.05):
        self.base_url = base_url.rstrip("/")
        self.interval = interval
        self.result = WatchResult()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=target, daemon=True)
                         for target in (self._http, self._websocket, self._sse)]

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)  # every client connected before the block starts
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _http(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    status = client.get(self.base_url + "/health").status_code
                    error = None if status == 200 else f"HTTP {status}"
                except httpx.HTTPError as exc:
                    error = type(exc).__name__
                if error:
                    self.result.http_failed += 1
                    self.result.http_errors[error] = self.result.http_errors.get(error, 0) + 1
                else:
                    self.result.http_ok += 1
                self._stop.wait(self.interval)

    def _websocket(self) -> None:
        from websockets.sync.client import connect

        url = self.base_url.replace("http", "ws", 1) + "/ws"
        try:
            with connect(url, open_timeout=10) as ws:
                while not self._stop.is_set():
                    self.result.ws_sent += 1
                    ws.send(f"ping {self.result.ws_sent}")
                    if ws.recv(timeout=10) == f"echo: ping {self.result.ws_sent}":
                        self.result.ws_echoed += 1
                    self._stop.wait(0.2)
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.result.ws_error = f"{type(exc).__name__}: {exc}"

    def _sse(self) -> None:
        try:
            with httpx.stream("GET", self.base_url + "/sse?count=10000&interval=0.2", timeout=10) as resp:
                if resp.status_code != 200:
                    self.result.sse_error = f"HTTP {resp.status_code}"
                    return
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        self.result.sse_events += 1
                    if self._stop.is_set():
                        return
            self.result.sse_error = "the stream ended before the watch did"
        except httpx.HTTPError as exc:
            self.result.sse_error = f"{type(exc).__name__}: {exc}"


def report(base_url: str) -> dict:
    """Every probe once, as the demo shows it."""
    ws_url = base_url.replace("http", "ws", 1) + "/ws"
    health = http_get(base_url + "/health")
    ws = websocket_echo(ws_url, ["hello", "world"])
    sse = sse_events(base_url + "/sse?count=5&interval=0.1", count=5)
    load = concurrent_get(base_url + "/io?delay=0.5", requests=200, concurrency=200)
    return {
        "health": asdict(health),
        "websocket": {**asdict(ws), "echoed": ws.echoed},
        "sse": {"status": sse.status, "content_type": sse.content_type,
                "arrivals": [round(e["arrived"], 3) for e in sse.events],
                "smallest_gap": round(sse.smallest_gap, 3)},
        "concurrency": {"requests": load.requests, "ok": load.ok, "failed": load.failed,
                        "elapsed": round(load.elapsed, 3), "workers_seen": len(load.pids)},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Probe a deployed ASGI app.")
    parser.add_argument("base_url", help="for example http://127.0.0.1:8000")
    args = parser.parse_args()
    result = report(args.base_url.rstrip("/"))
    h, ws, sse, load = result["health"], result["websocket"], result["sse"], result["concurrency"]
    print(f"HTTP      GET /health -> {h['status']} {json.dumps(h['body'])}")
    print(f"WebSocket /ws handshake={'ok' if ws['handshake'] else 'FAILED'} "
          f"sent={ws['sent']} received={ws['received']} {ws['error'] or ''}".rstrip())
    print(f"SSE       /sse {sse['status']} {sse['content_type']}; events arrived at "
          f"{sse['arrivals']} s (smallest gap {sse['smallest_gap']} s)")
    print(f"I/O       {load['requests']} concurrent GET /io?delay=0.5 -> {load['ok']} ok, "
          f"{load['failed']} failed in {load['elapsed']} s, served by {load['workers_seen']} worker pids")
    healthy = (h["status"] == 200 and ws["echoed"] and len(sse["arrivals"]) == 5
               and load["failed"] == 0)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
