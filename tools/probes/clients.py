"""One-shot probes: a deployed app used once the way each kind of client uses it.

An HTTP GET, a WebSocket handshake and echo, a Server-Sent-Events stream read event by event,
many concurrent GETs, and `report`, every one of them once (what the demo prints). Each returns
plain data (dataclasses) and asserts nothing; callers decide.
"""

from __future__ import annotations

import asyncio
import itertools
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
        return min((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)


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
    result = LoadResult(requests, concurrency, 0, 0, 0.0)
    asyncio.run(_concurrent_get(url, requests, concurrency, timeout, result))
    return result


async def _concurrent_get(url: str, requests: int, concurrency: int, timeout: float, result: LoadResult) -> None:
    """Send `requests` GETs over `concurrency` keep-alive connections, adding what came back to `result`."""
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
    result.elapsed += time.monotonic() - started


def concurrent_get_across(url: str, pids: set[int], requests: int, concurrency: int,
                          within: float = 30.0) -> LoadResult:
    """concurrent_get, at least `requests` of them, then again in smaller batches until every worker
    in `pids` has answered one, `within` seconds at most. One batch is not enough: its keep-alive
    connections all open at once, and the worker that wakes first may accept every one of them."""
    total = LoadResult(0, concurrency, 0, 0, 0.0)
    deadline = time.monotonic() + within
    batch = requests
    while True:
        total.requests += batch
        asyncio.run(_concurrent_get(url, batch, concurrency, 60.0, total))
        if pids <= total.pids or time.monotonic() > deadline:
            return total
        batch = max(requests // 10, concurrency)


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
