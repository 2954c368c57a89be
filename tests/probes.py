"""Probes that use a deployed ASGI app the way its clients do.

One library for every consumer: the Molecule scenarios' tests, the demo's report and the
benchmarks. Each probe returns plain data (dataclasses) and asserts nothing; callers decide.
Run as a script it prints a report: ``python tests/probes.py http://127.0.0.1:8000``;
``python tests/probes.py load URL --stop-file F ...`` prints a LoadReport (see run_load) as JSON,
``python tests/probes.py table REPORT.json ...`` prints such reports as a table, and
``python tests/probes.py hold WS_URL --count N`` opens N WebSockets and keeps them (see hold_main).
"""

from __future__ import annotations

import argparse
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


def _counts_cell(counts: dict, extra: dict | None = None) -> str:
    items = [(key, n) for key, n in {**counts, **(extra or {})}.items() if n]
    return ", ".join(f"{key} x{n}" for key, n in items) or "-"


def format_table(records: list[dict]) -> str:
    """One row per load report, with the keys an orchestrator adds: event, stop_seconds, sigkill.

    The output is a Markdown table whose columns are also aligned as plain text.
    """
    header = ["event", "requests", "failed", "p99 (s)", "slowest (s)", "WS closes", "SSE ends", "stop (s)", "version"]
    numeric = {"requests", "failed", "p99 (s)", "slowest (s)", "stop (s)"}
    rows = []
    for record in records:
        stop = record.get("stop_seconds")
        stop_cell = "-" if stop is None else f"{stop:.2f}"
        if record.get("sigkill"):
            stop_cell += f", SIGKILL x{record['sigkill']}"
        first, last = record.get("first_version"), record.get("last_version")
        rows.append([
            str(record.get("event", "")),
            str(record.get("requests", 0)),
            str(record.get("failed", 0)),
            f"{record.get('latency_p99', 0.0):.2f}",
            f"{record.get('latency_max', 0.0):.2f}",
            _counts_cell(record.get("ws_closes") or {}, {"reset": record.get("ws_resets", 0)}),
            _counts_cell(record.get("sse_ends") or {}),
            stop_cell,
            (f"{first} -> {last}" if first and first != last else last) or "-",
        ])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.rjust(width) if name in numeric and cells is not header
                                 else cell.ljust(width)
                                 for name, cell, width in zip(header, cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (w + 1) + ":" if name in numeric else "-" * (w + 2)
                               for name, w in zip(header, widths, strict=True)) + "|"
    return "\n".join([line(header), separator, *(line(row) for row in rows)])


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


async def _hold(url: str, count: int, local_address: str | None, timeout: float) -> None:
    """Open, echo, print a HoldReport; then one more echo round per "echo" line on stdin."""
    holder = WebSocketHolder(url, local_address, timeout)
    loop = asyncio.get_running_loop()
    print(json.dumps(asdict(await holder.echo_all(await holder.open(count)))), flush=True)
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "echo":
        print(json.dumps(asdict(await holder.echo_all())), flush=True)
    await holder.close()


def hold_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="probes.py hold",
        description="Open COUNT WebSockets and hold them: print a JSON HoldReport once all are open "
                    "and have echoed, another after each 'echo' line on stdin; close them at EOF.")
    parser.add_argument("url", help="for example ws://127.0.0.1:8000/ws")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--local-address", help="loopback source address, e.g. 127.0.0.2")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    asyncio.run(_hold(args.url, args.count, args.local_address, args.timeout))
    return 0


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="probes.py load",
        description="Keep clients busy during an event; print what they saw as one JSON object.")
    parser.add_argument("base_url", help="for example http://127.0.0.1:8000")
    parser.add_argument("--stop-file", required=True, help="stop once this file exists")
    parser.add_argument("--ready-file", help="written once every client is connected")
    parser.add_argument("--min-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--websockets", type=int, default=4)
    parser.add_argument("--sse", type=int, default=2)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    result = run_load(args.base_url, stop_file=args.stop_file, ready_file=args.ready_file,
                      min_requests=args.min_requests, concurrency=args.concurrency,
                      websockets=args.websockets, sse=args.sse, path=args.path, timeout=args.timeout)
    print(json.dumps(result.to_dict()))
    return 0


def table_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="probes.py table",
                                     description="Print load reports (JSON files) as one table.")
    parser.add_argument("files", nargs="+", help="each a JSON object or a list of them")
    args = parser.parse_args(argv)
    records: list[dict] = []
    for name in args.files:
        with open(name) as handle:
            data = json.load(handle)
        records.extend(data if isinstance(data, list) else [data])
    print(format_table(records))
    return 0


def main() -> int:
    commands = {"load": load_main, "table": table_main, "hold": hold_main}
    if len(sys.argv) > 1 and sys.argv[1] in commands:
        return commands[sys.argv[1]](sys.argv[2:])
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
