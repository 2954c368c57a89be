"""Clients that keep a deployed app busy while something happens to it, and say what they saw.

`run_load` keeps HTTP, WebSocket and SSE clients going until a stop file exists (the Molecule
scenarios start it as `python -m probes load`, then deploy, reload or kill something) and returns
a LoadReport; `Watch` runs it in a thread around a block of Python. `WebSocketHolder` and `hold`
open WebSockets by the thousand and keep them (the benchmark starts `python -m probes hold`
processes).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

import httpx
import websockets


@dataclass
class LoadReport:
    """What clients saw while something happened to the server (a deploy, a reload, a restart).

    HTTP counts and latencies (seconds; over every completed request, ok or not), the app
    versions /health answered with, in the order they first appeared, and, for the long-lived
    clients, how each of their connections ended: WebSocket close codes by the close frame the
    server sent (`ws_resets`: ended with none), SSE streams ended cleanly or broken, and how
    many of those ends came after the app's `shutdown` event.
    """

    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    concurrency: int = 0
    elapsed: float = 0.0
    ready_after: float | None = None
    latency_max: float = 0.0
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    versions: dict[str, int] = field(default_factory=dict)
    first_version: str | None = None
    last_version: str | None = None
    pids: int = 0
    ws_clients: int = 0
    ws_connections: int = 0
    ws_closes: dict[str, int] = field(default_factory=dict)
    ws_resets: int = 0
    ws_echoes: int = 0
    ws_errors: int = 0
    ws_connect_failures: int = 0
    sse_clients: int = 0
    sse_streams: int = 0
    sse_ends: dict[str, int] = field(default_factory=lambda: {"clean": 0, "broken": 0})
    sse_shutdown_events: int = 0
    sse_events: int = 0
    sse_connect_failures: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class Watch:
    """run_load in a background thread while a block runs, stopped when the block ends.

    with Watch("http://127.0.0.1:8000") as watch:
        ...  # deploy, reload, break something
    watch.result  # the LoadReport: what the clients saw
    """

    def __init__(self, base_url: str, **options):
        self.base_url = base_url
        self.options = {"min_requests": 0, "concurrency": 1, "websockets": 1, "sse": 1, **options}
        self.result: LoadReport | None = None
        self._files = tempfile.TemporaryDirectory()
        self._stop = os.path.join(self._files.name, "stop")
        self._ready = os.path.join(self._files.name, "ready")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.result = run_load(self.base_url, stop_file=self._stop, ready_file=self._ready, **self.options)

    def __enter__(self) -> "Watch":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not os.path.exists(self._ready) and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        open(self._stop, "w").close()
        self._thread.join(timeout=60)
        self._files.cleanup()


def _count(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def run_load(base_url: str, *, stop_file: str, ready_file: str | None = None, min_requests: int = 2000,
             concurrency: int = 20, websockets: int = 4, sse: int = 2, path: str = "/health",
             timeout: float = 60.0) -> LoadReport:
    """Keep HTTP, WebSocket and SSE clients busy until `stop_file` exists and `min_requests` are done.

    Every HTTP request opens a new TCP connection, as a client behind no pool would, so each one
    meets whatever process accepts at that moment. WebSocket and SSE clients reconnect whenever
    the server ends their connection. `ready_file` is written once every client is connected
    and the first requests are answered: the moment to start the event under test.
    """
    return asyncio.run(_run_load(base_url.rstrip("/"), stop_file, ready_file, min_requests, concurrency,
                                 websockets, sse, path, timeout))


async def _run_load(base_url: str, stop_file: str, ready_file: str | None, min_requests: int,
                    concurrency: int, ws_clients: int, sse_clients: int, path: str,
                    timeout: float) -> LoadReport:
    from websockets.asyncio.client import connect

    result = LoadReport(concurrency=concurrency, ws_clients=ws_clients, sse_clients=sse_clients)
    latencies: list[float] = []
    pids: set[int] = set()
    stopping = asyncio.Event()
    started_clients: dict[str, set[int]] = {"http": set(), "ws": set(), "sse": set()}
    started = time.monotonic()

    def client_started(kind: str, number: int) -> None:
        started_clients[kind].add(number)
        if result.ready_after is None and all(
                len(started_clients[k]) >= n
                for k, n in (("http", concurrency), ("ws", ws_clients), ("sse", sse_clients))):
            result.ready_after = round(time.monotonic() - started, 3)
            if ready_file:
                with open(ready_file + ".tmp", "w") as handle:
                    json.dump({"ready_after": result.ready_after}, handle)
                os.replace(ready_file + ".tmp", ready_file)

    async def http_client(number: int, session: httpx.AsyncClient) -> None:
        while not stopping.is_set():
            sent = time.monotonic()
            try:
                response = await session.get(base_url + path)
                error = None if response.status_code == 200 else f"HTTP {response.status_code}"
            except (httpx.HTTPError, OSError) as exc:
                error = type(exc).__name__
            latencies.append(time.monotonic() - sent)
            result.requests += 1
            if error:
                result.failed += 1
                _count(result.errors, error)
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    if body.get("pid"):
                        pids.add(body["pid"])
                    if body.get("version") is not None:
                        result.last_version = str(body["version"])
                        result.first_version = result.first_version or result.last_version
                        _count(result.versions, result.last_version)
            client_started("http", number)

    async def ws_client(number: int) -> None:
        url = base_url.replace("http", "ws", 1) + "/ws"
        while not stopping.is_set():
            try:
                ws = await connect(url, open_timeout=timeout, close_timeout=2)
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                if not stopping.is_set():
                    result.ws_connect_failures += 1
                    await asyncio.sleep(0.2)
                continue
            result.ws_connections += 1
            client_started("ws", number)
            try:
                async with ws:
                    for sequence in itertools.count(1):
                        if stopping.is_set():
                            return
                        message = f"client {number} message {sequence}"
                        await ws.send(message)
                        try:
                            reply = await asyncio.wait_for(ws.recv(), timeout)
                        except asyncio.TimeoutError:
                            result.ws_errors += 1
                            break  # closed by this side: reconnect rather than read stale echoes
                        if reply != f"echo: {message}":
                            result.ws_errors += 1
                            break
                        result.ws_echoes += 1
                        await asyncio.sleep(0.2)
            except websockets.ConnectionClosed as exc:
                if stopping.is_set():
                    return
                if exc.rcvd is None:
                    result.ws_resets += 1
                else:
                    _count(result.ws_closes, str(exc.rcvd.code))
            except OSError:
                if not stopping.is_set():
                    result.ws_resets += 1

    async def sse_client(number: int) -> None:
        url = base_url + "/sse?count=10000&interval=0.2"
        async with httpx.AsyncClient(timeout=timeout, headers={"Accept": "text/event-stream"}) as session:
            while not stopping.is_set():
                try:
                    async with session.stream("GET", url) as response:
                        if response.status_code != 200:
                            raise httpx.HTTPStatusError(f"HTTP {response.status_code}",
                                                        request=response.request, response=response)
                        result.sse_streams += 1
                        event: dict[str, str] = {}
                        last_event = None
                        try:
                            async for line in response.aiter_lines():
                                if stopping.is_set():
                                    return
                                if line:
                                    name, _, value = line.partition(":")
                                    event[name] = value.lstrip(" ")
                                    continue
                                if event:
                                    result.sse_events += 1
                                    last_event = event.get("event", "message")
                                    event = {}
                                    client_started("sse", number)
                            end = "clean"
                        except (httpx.HTTPError, OSError):
                            end = "broken"
                        if stopping.is_set():
                            return
                        _count(result.sse_ends, end)
                        if last_event == "shutdown":
                            result.sse_shutdown_events += 1
                        continue
                except (httpx.HTTPError, OSError):
                    if stopping.is_set():
                        return
                    result.sse_connect_failures += 1
                await asyncio.sleep(0.2)

    async def watch_stop_file() -> None:
        while not (os.path.exists(stop_file) and (result.requests >= min_requests or not concurrency)):
            await asyncio.sleep(0.1)
        stopping.set()

    # No keep-alive: each request on a connection of its own, which the server closes once it has
    # answered ("Connection: close"). The side that closes first keeps the connection in TIME_WAIT
    # for a minute: on the server's side that costs nothing, on the client's it holds one of
    # about 28,000 local ports. Past about 470 new connections a second to a container (through
    # Docker's port proxy, which closes its side when the client does), those run out and
    # requests fail with "Cannot assign requested address", counted as failures of the server.
    limits = httpx.Limits(max_connections=max(concurrency, 1), max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, headers={"Connection": "close"}) as session:
        long_lived = [asyncio.create_task(ws_client(n)) for n in range(ws_clients)]
        long_lived += [asyncio.create_task(sse_client(n)) for n in range(sse_clients)]
        watcher = asyncio.create_task(watch_stop_file())
        try:
            await asyncio.gather(*(http_client(n, session) for n in range(concurrency)))
            await watcher
        finally:
            # The flag ends the long-lived clients too, should a cancellation be lost: on Python
            # 3.11, asyncio.wait_for swallows one that arrives as the awaited result does.
            stopping.set()
            for task in [*long_lived, watcher]:
                task.cancel()
            await asyncio.gather(*long_lived, watcher, return_exceptions=True)
    result.elapsed = round(time.monotonic() - started, 3)
    latencies.sort()
    result.latency_max = round(latencies[-1], 4) if latencies else 0.0
    result.latency_p50 = round(_percentile(latencies, 0.50), 4)
    result.latency_p99 = round(_percentile(latencies, 0.99), 4)
    result.pids = len(pids)
    return result


@dataclass
class HoldReport:
    """WebSockets one process opened and holds, and how a round of echoes on all of them went."""
    opened: int = 0
    refused: int = 0
    echoed: int = 0
    lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class WebSocketHolder:
    """Opens many WebSocket connections, keeps them open, and echoes on all of them on demand.

    One holder lives in one process and one event loop; a load larger than one process's
    open-files limit is spread over several (the benchmark starts one `hold` process each).
    local_address picks the loopback source address, so each holder has its own client ports.
    """

    def __init__(self, url: str, local_address: str | None = None, timeout: float = 30.0):
        self.url, self.timeout = url, timeout
        self.local_addr = (local_address, 0) if local_address else None
        self.connections: list = []

    async def open(self, count: int, in_flight: int = 64) -> HoldReport:
        report = HoldReport()
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                try:
                    kwargs = {"local_addr": self.local_addr} if self.local_addr else {}
                    connection = await websockets.connect(
                        self.url, open_timeout=self.timeout, ping_interval=None, max_queue=4, **kwargs)
                except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                    report.refused += 1
                    _count(report.errors, type(exc).__name__)
                    return
                self.connections.append(connection)
                report.opened += 1

        await asyncio.gather(*(one() for _ in range(count)))
        return report

    async def echo_all(self, report: HoldReport | None = None) -> HoldReport:
        """One message on every connection; counts the echoes and the connections that failed."""
        report = report or HoldReport(opened=len(self.connections))

        async def one(number: int, connection) -> bool:
            try:
                await connection.send(f"hold {number}")
                reply = await asyncio.wait_for(connection.recv(), self.timeout)
                return reply == f"echo: hold {number}"
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
                _count(report.errors, type(exc).__name__)
                return False

        results = await asyncio.gather(*(one(n, c) for n, c in enumerate(self.connections)))
        report.echoed = sum(results)
        report.lost = len(results) - report.echoed
        return report

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        self.connections.clear()


async def hold(url: str, count: int, local_address: str | None = None, timeout: float = 30.0) -> None:
    """Open `count` WebSockets, echo on each and print a HoldReport as JSON; then one more echo
    round (and report) per "echo" line on stdin; close them at EOF."""
    holder = WebSocketHolder(url, local_address, timeout)
    loop = asyncio.get_running_loop()
    print(json.dumps(asdict(await holder.echo_all(await holder.open(count)))), flush=True)
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "echo":
        print(json.dumps(asdict(await holder.echo_all())), flush=True)
    await holder.close()
