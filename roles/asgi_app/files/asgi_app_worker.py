"""The gunicorn worker of the asgi.gunicorn role: Uvicorn inside gunicorn, as the role runs it.

The role installs this module into each release's virtualenv; the release's gunicorn_config.py
imports it and passes it the settings (``uvicorn_worker_class(...)``, the hooks below). It adds
to the Uvicorn worker what a deploy without a stall needs:

- **Readiness.** A service is ready when every one of its workers serves, not when gunicorn's
  master has bound its socket (which is when gunicorn itself tells systemd). Each worker marks
  itself ready once its app has run its lifespan startup and accepts connections; the worker
  that completes the set tells the master, which sends systemd ``READY=1`` and a ``STATUS=``
  naming the release. Only the master may notify systemd (``NotifyAccess=main``), not the
  workers that run the app's code. `systemctl start` returns only then, so the role (and
  ``NAME-handover.service``) stop the old workers only once the new ones serve.
- **A first answer before the first connection** (``ASGI_APP_CHECK_HEALTH=1``, set by the standby
  unit that carries a new release in): a worker calls its app's health path in-process, with the
  Host header the role's health check sends, and takes connections only once it answered 200.
  A release that does not answer never receives a request.
- **A graceful end.** When a worker begins to stop (stop, restart, reload, ``max_requests``), the
  ASGI state's ``asgi_app_shutdown`` (an ``asyncio.Event``) is set for streams to end themselves;
  idle and not-yet-read connections get half a second to deliver a request, answered with
  ``Connection: close``; WebSockets get 1012 from Uvicorn.
- **Limits on a request's head**: its size, its header fields, and the time a client may take to
  send it (Uvicorn has none), so that a worker exposed without nginx holds against slow and
  endless headers.
- **Access lines in batches**, so that writing them does not cost as much CPU as the requests;
  as Uvicorn writes them, or one JSON object per request with its status, duration and request id
  (``X-Request-ID``, taken from the request when sane, else made, and sent back).
- **Workers that cost little to replace** (``max_requests``): the master imports what each
  worker's Uvicorn would import and freezes what it holds (``gc.freeze``), so that a new worker
  neither imports nor copies the app's memory; a worker that ends cleanly skips the interpreter's
  teardown, which would write to every object it inherited.
- **Metrics** (``keep_metrics``, asgi_app_metrics): each worker counts its requests in
  prometheus_client's multiprocess files (asgi_app_metrics.RequestMetrics), and the master folds
  the files of each worker that exits into the directory's archive, so the counts add up across
  workers, their replacement and restarts.
- **Workers go before the master** when the service passes its memory limit: each raises its own
  OOM score, so the kernel kills a worker, which gunicorn replaces, not the master and all of them.

It overrides a few internals of uvicorn, uvicorn-worker and gunicorn (named where they are used);
tests/test_worker_module.py runs it against the pinned versions and the oldest the role accepts,
so that a version that changes them fails a test, not a deploy.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import importlib
import importlib.util
import itertools
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from json.encoder import encode_basestring_ascii as quote

# Where a worker marks itself ready, inside gunicorn's worker_tmp_dir (the service's own runtime
# directory, emptied when it stops).
READY_DIR = "workers-ready"
# What systemd's NOTIFY_SOCKET was when the master started (on_starting): the master keeps it
# from gunicorn's own notification, and from the workers, which systemd would not listen to.
_notify_socket = None
# The signal by which the worker that completes the set wakes the master to tell systemd. gunicorn
# neither uses nor sends it, and its default is to ignore it, so a stray one does no harm (the
# master only counts the ready marks again).
READY_SIGNAL = signal.SIGURG
# gunicorn's master (its Arbiter), set in the master before the first fork (on_starting).
_arbiter = None
# The metrics directory (PROMETHEUS_MULTIPROC_DIR) when the service keeps metrics (keep_metrics),
# and the master's counter of worker exits, made at the first.
_metrics_dir = None
_worker_exits = None


# --- Readiness -------------------------------------------------------------------------------

def on_starting(server):
    """gunicorn hook (master, after it imported the app with preload_app, before the first fork):
    keep systemd's notification socket for READY=1 once every worker serves, listen for the
    worker that completes the set, and freeze the app's objects.

    gunicorn tells systemd READY=1 as soon as its master has bound the socket, before any worker
    has imported the app; without NOTIFY_SOCKET it does not.
    """
    global _notify_socket, _arbiter
    _notify_socket = os.environ.pop("NOTIFY_SOCKET", None)
    _arbiter = server
    signal.signal(READY_SIGNAL, _tell_systemd_when_all_serve)
    if _metrics_dir:
        import asgi_app_metrics

        asgi_app_metrics.fold_dead(_metrics_dir)
    import_what_workers_load(server.worker_class, server.log)
    freeze_shared_objects()


def import_what_workers_load(worker_class, log):
    """Import in the master what each worker's Uvicorn imports as it starts (its HTTP, WebSocket
    and lifespan protocols, its event loop, its middleware), by loading a Uvicorn config with the
    worker's settings. A worker that imports them itself spends about 12 ms of CPU doing so (the
    WebSocket implementation most of it), and the modules are then its own copy; imported here
    they are shared, and a worker that replaces one after max_requests starts in a third of that.
    What fails here is left to the workers, which report it as they would have.
    """
    settings = getattr(worker_class, "CONFIG_KWARGS", None)  # a UvicornWorker's
    if settings is None:
        return
    try:
        from uvicorn import Config

        config = Config(app=_no_app, log_config=None, **settings)
        config.load()
        if hasattr(config, "get_loop_factory"):  # uvicorn 0.36 and later: imports, creates no loop
            config.get_loop_factory()
        else:  # before: the worker calls a setup function of the loop's module
            from uvicorn.config import LOOP_SETUPS

            importlib.import_module((LOOP_SETUPS.get(config.loop) or "uvicorn.loops").partition(":")[0])
            if config.loop in ("auto", "uvloop") and importlib.util.find_spec("uvloop"):
                importlib.import_module("uvicorn.loops.uvloop")
    except (Exception, SystemExit) as error:  # noqa: BLE001 - the workers will say it
        log.warning("Workers will import Uvicorn's protocols themselves: %s: %s", type(error).__name__, error)


async def _no_app(scope, receive, send):
    """An ASGI app for import_what_workers_load's config, which never serves."""


def freeze_shared_objects():
    """Keep the objects the master holds (the preloaded app) out of its workers' garbage collector.

    A worker's full collections, and the last one as it exits, write to every object they walk:
    each one the worker inherited costs it a copy of the page that holds it (copy-on-write). At
    max_requests' rate a worker is replaced every few hours in production, every few seconds in
    the benchmark, where those copies cost 10-17 % of the CPU per request (tools/benchmark.py,
    "Worker recycling"). Frozen (CPython's advice for servers that fork), they stay shared and
    are never collected, which for what an app builds at import is what happens anyway.
    """
    gc.freeze()


def post_fork(server, worker):
    """gunicorn hook (worker, just forked): be the one the kernel kills when the service passes
    its memory limit (MemoryMax), not the master, which would take every worker with it. A
    worker killed so is replaced by the master like any that exits; the others serve on.
    And leave systemd to the master: a worker neither notifies it nor answers READY_SIGNAL."""
    global _notify_socket
    _notify_socket = None
    signal.signal(READY_SIGNAL, signal.SIG_DFL)
    prefer_to_be_killed_first()


def prefer_to_be_killed_first(raise_by=500, path="/proc/self/oom_score_adj"):
    """Raise this process's OOM score adjustment (any process may raise its own) by `raise_by`."""
    try:
        with open(path, "r+") as adjustment:
            raised = min(1000, int(adjustment.read()) + raise_by)
            adjustment.seek(0)
            adjustment.write(str(raised))
    except OSError:  # not Linux, or a /proc this process may not write to
        return False
    return True


def child_exit(server, worker):
    """gunicorn hook (master): a worker that exited, however, no longer counts as ready; with
    metrics, its counts go to the archive and the exit is counted."""
    global _worker_exits
    _forget(server.cfg, worker.pid)
    if _metrics_dir:
        import asgi_app_metrics

        asgi_app_metrics.fold(_metrics_dir, worker.pid)
        if _worker_exits is None:
            _worker_exits = asgi_app_metrics.worker_exits()
        _worker_exits.inc()


def keep_metrics(directory):
    """gunicorn_config.py, with asgi_app_metrics: count requests in each worker and fold the
    files of workers that exit, in `directory` (the service's PROMETHEUS_MULTIPROC_DIR). An app
    that serves its own metrics with prometheus_client reads them under the directory's lock."""
    global _metrics_dir
    import asgi_app_metrics

    _metrics_dir = directory
    asgi_app_metrics.guard_collectors()


def worker_exit(server, worker):
    """gunicorn hook (worker, as it exits): unmark it, write out its last access lines, and end
    without the interpreter's teardown when it ends cleanly."""
    _forget(server.cfg, worker.pid)
    access = logging.getLogger("uvicorn.access")
    if isinstance(access, AccessLog):
        access.flush()
    exit_without_teardown(sys.exc_info()[1])


def exit_without_teardown(exiting):
    """End a worker that is exiting cleanly (`exiting`: gunicorn's ``sys.exit(0)`` after its
    server stopped) as the interpreter would, less its teardown.

    The teardown clears every module and collects what is left: it writes to each object the
    worker inherited from the master, copying all of the app's pages once more just to exit, and
    that was a third of what replacing a worker after max_requests cost. The app's atexit
    functions still run (and with them logging's flush and weakref finalizers), and standard
    output and error are flushed; only what CPython does not promise at exit (``__del__`` of
    objects still alive) is skipped, as Instagram's forking servers do with gc.freeze ("Dismissing
    Python Garbage Collection at Instagram", 2017).
    A worker that exits with an error, or with a thread that exit would wait for, exits as usual.
    """
    if not isinstance(exiting, SystemExit) or exiting.code not in (0, None):
        return
    main = threading.main_thread()
    if any(thread is not main and not thread.daemon for thread in threading.enumerate()):
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def post_worker_init(worker):
    """gunicorn hook (worker): for gunicorn's own asgi worker, ready once the app is imported."""
    mark_ready(worker.cfg, worker.pid)


def _ready_dir(cfg):
    return os.path.join(cfg.worker_tmp_dir or "/tmp", READY_DIR)


def mark_ready(cfg, pid):
    """Mark worker `pid` ready; the one that completes the set tells the master, which tells
    systemd. Each worker counts after it marked itself, so the last one to mark sees them all."""
    directory = _ready_dir(cfg)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, str(pid)), "w"):
        pass
    if len(os.listdir(directory)) >= cfg.workers:
        wake_master()


def wake_master():
    """Worker: signal the master that the set is complete. Only the master it was forked from,
    which listens for the signal since on_starting; a worker whose master is gone signals no one."""
    if _arbiter is None or os.getppid() != _arbiter.pid:
        return False
    try:
        os.kill(_arbiter.pid, READY_SIGNAL)
    except ProcessLookupError:  # the master ended meanwhile
        return False
    return True


def _tell_systemd_when_all_serve(signum=None, frame=None):
    """Master (signal handler, between two steps of gunicorn's loop): READY=1 and the STATUS line
    once every worker is marked ready. The unit accepts notifications from the master only."""
    cfg = _arbiter.cfg  # a reload (HUP) replaces it
    try:
        ready = len(os.listdir(_ready_dir(cfg)))
        if ready >= cfg.workers:
            notify(f"READY=1\nSTATUS={status_line(ready)}")
    except OSError:  # no mark yet, or no systemd listening: nothing to tell, and gunicorn's loop goes on
        pass


def status_line(workers):
    """What `systemctl status` shows: the release that serves and how many workers serve it."""
    release = os.path.basename(os.path.dirname(sys.prefix))
    return f"{workers} workers serving release {release}"


def _forget(cfg, pid):
    try:
        os.unlink(os.path.join(_ready_dir(cfg), str(pid)))
    except FileNotFoundError:
        pass


def notify(message):
    """Send `message` to systemd's notification socket, if the service has one (sd_notify(3))."""
    if not _notify_socket:
        return False
    address = _notify_socket
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


# --- The health path, answered in-process ------------------------------------------------------

async def call_health(app, path, host, state, timeout=5.0):
    """One GET of `path` to the ASGI `app`, in-process; returns (status, start of the body)."""
    raw_path, _question_mark, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 0), "server": (host, None), "state": dict(state),
    }
    answer = {"status": 0, "body": b""}
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # a client that stays until the response is complete

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body" and len(answer["body"]) < 300:
            answer["body"] += message.get("body", b"")

    await asyncio.wait_for(app(scope, receive, send), timeout)
    return answer["status"], answer["body"][:300].decode("utf-8", "replace")


# --- The Uvicorn server, protocol and worker ---------------------------------------------------

def uvicorn_worker_class(base="uvicorn_worker.UvicornWorker", *, timeout_graceful_shutdown,
                         health_path="/health", health_host="localhost", uvicorn_options=None,
                         max_header_bytes=65536, max_headers=100, header_timeout=10.0,
                         access_log_format="text"):
    """The worker class for gunicorn_config.py's ``worker_class``: `base` (a UvicornWorker, as a
    dotted path) with this module's server and protocol, and these Uvicorn settings.

    With ``access_log_format="json"`` each worker wraps its app in JsonAccessLines, writing to
    the batched access log (batch_access_log), and Uvicorn's own access lines are off.
    """
    from uvicorn import Server
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    module_name, _dot, class_name = base.rpartition(".")
    base_class = getattr(importlib.import_module(module_name), class_name)
    check_health = os.environ.get("ASGI_APP_CHECK_HEALTH") == "1"
    if access_log_format not in ("text", "json"):
        raise ValueError(f"access_log_format is {access_log_format!r}: 'text' or 'json'")
    json_lines = access_log_format == "json"
    access_log = batch_access_log() if json_lines else None

    class _Server(Server):
        async def startup(self, sockets=None):
            self.lifespan.state["asgi_app_shutdown"] = self.shutting_down = asyncio.Event()
            # The app the health path is asked of in-process: no access line for it.
            self.app_unlogged = self.config.loaded_app
            if _metrics_dir:
                import asgi_app_metrics

                self.config.loaded_app = asgi_app_metrics.RequestMetrics(
                    self.config.loaded_app, asgi_app_metrics.ServiceMetrics(), REQUEST_BEGAN)
            if json_lines:
                # Outside Uvicorn's proxy-headers middleware, whose client it logs; the
                # protocols and the lifespan take the app from the config when they start.
                self.config.loaded_app = JsonAccessLines(self.config.loaded_app, access_log.write)
            if check_health:
                # uvicorn's Server.startup runs the lifespan startup, then takes connections:
                # the health path is answered between the two.
                lifespan_startup = self.lifespan.startup

                async def startup_then_health():
                    await lifespan_startup()
                    if not self.lifespan.should_exit:
                        await self.answer_health()

                self.lifespan.startup = startup_then_health
            await super().startup(sockets=sockets)
            if self.started and limits:
                self.head_sweeper = asyncio.create_task(
                    sweep_request_heads(self.server_state.connections, min(1.0, header_timeout / 2)))
            if self.started and self.worker is not None:
                mark_ready(self.worker.cfg, os.getpid())

        async def answer_health(self):
            log = logging.getLogger("uvicorn.error")
            started = time.monotonic()
            while not self.should_exit:
                try:
                    status, body = await call_health(self.app_unlogged, health_path, health_host,
                                                     self.lifespan.state)
                except Exception as error:  # noqa: BLE001 - what the app raised is the answer
                    status, body = 0, f"{type(error).__name__}: {error}"
                if status == 200:
                    log.info("%s answered 200 after %.1f s: taking connections", health_path,
                             time.monotonic() - started)
                    return
                log.warning("Not taking connections yet: %s (Host: %s) answered %s, body starting %r",
                            health_path, health_host, status or "nothing", body)
                await asyncio.sleep(1)

        async def shutdown(self, sockets=None):
            self.shutting_down.set()
            # Stop accepting, then give HTTP connections up to half a second to leave on their
            # own before Uvicorn's shutdown closes them: one accepted but not read yet (no request
            # cycle) or idle between kept-alive requests gets to deliver its next request, and
            # every request answered from now on says "Connection: close" (see _HTTPProtocol), so
            # the client reconnects to a live worker instead of writing into a socket closed
            # under it. (uvicorn internals: Server.servers, server_state.connections, and each
            # connection's cycle, keep_alive and response_complete.)
            for server in self.servers:
                server.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 0.5
            while loop.time() < deadline:
                waiting = False
                for connection in self.server_state.connections:
                    cycle = getattr(connection, "cycle", False)  # False: a WebSocket
                    if cycle is None or (cycle and cycle.response_complete):
                        waiting = True
                    elif cycle:
                        cycle.keep_alive = False
                if not waiting:
                    break
                await asyncio.sleep(0.01)
            await super().shutdown(sockets=sockets)
            if self.head_sweeper is not None:
                self.head_sweeper.cancel()

    limits = hasattr(AutoHTTPProtocol, "on_headers_complete")  # httptools, not h11
    max_lines = max_headers + 2  # the request line, the headers, the empty line

    # The time of a request's first byte, for its JSON line's duration and its metrics' (keep_metrics
    # comes first in gunicorn_config.py).
    timed = limits and (json_lines or _metrics_dir)
    mixins = ([RequestHeadLimits] if limits else []) + ([RequestBegan] if timed else [])

    class _HTTPProtocol(*mixins, AutoHTTPProtocol):
        head_max_bytes, head_max_lines, head_timeout = max_header_bytes, max_lines, header_timeout
        head_deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if limits:
                self.wait_for_head()

        def data_received(self, data):
            if self.head_deadline is not None:  # part of a request's head (RequestHeadLimits)
                size, lines = self.head_bytes + len(data), self.head_lines + data.count(b"\n")
                if (size > max_header_bytes or lines > max_lines) and not self.within_head_limits(data):
                    return
                self.head_bytes, self.head_lines = size, lines
            super().data_received(data)
            # A request that arrives once the worker is stopping is answered "Connection: close".
            cycle = self.cycle
            shutting_down = self.app_state.get("asgi_app_shutdown")
            if cycle is not None and not cycle.response_started and shutting_down and shutting_down.is_set():
                cycle.keep_alive = False

    class UvicornWorker(base_class):
        CONFIG_KWARGS = {
            **base_class.CONFIG_KWARGS,
            "http": _HTTPProtocol,
            "timeout_graceful_shutdown": timeout_graceful_shutdown,
            # The same limit on a request's head when Uvicorn parses with h11 (without httptools).
            "h11_max_incomplete_event_size": max_header_bytes,
            **(uvicorn_options or {}),
            # JsonAccessLines writes the access lines: Uvicorn's would be a second line per request.
            **({"access_log": False} if json_lines else {}),
        }

        async def _serve(self):
            # uvicorn-worker's UvicornWorker._serve, with the server above.
            from gunicorn.arbiter import Arbiter

            self.config.app = self.wsgi
            server = _Server(config=self.config)
            server.worker = self
            self._install_sigquit_handler()
            await server.serve(sockets=self.sockets)
            if not server.started:
                sys.exit(Arbiter.WORKER_BOOT_ERROR)

    _Server.worker = _Server.head_sweeper = None
    UvicornWorker.__qualname__ = UvicornWorker.__name__ = f"UvicornWorker({base})"
    return UvicornWorker


# --- Limits on a request's head ----------------------------------------------------------------

REFUSALS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# A connection's head_deadline while it waits for its next request after a response: the next
# sweep gives it its deadline (no clock read on a request's path).
WAITING = float("inf")


class RequestHeadLimits:
    """Limits on what a client may send before its request's headers are complete, for uvicorn's
    httptools protocol (which has none): at most `head_max_bytes` of request line and headers and
    `head_max_lines` lines (431), and `head_timeout` seconds from the moment the worker waits for
    a request (a new connection, the first byte of a request pipelined behind another, or after a
    response, then at least as long as Uvicorn keeps an idle connection open) until its headers
    are in: the connection is closed then, with a 408 if a request had begun. Without them one
    endless header grows a worker without bound, and connections that send nothing, or a byte now
    and then, are kept until the worker's open files run out.

    Cheap on every request: the protocol's data_received counts a read's bytes and lines (in C)
    and calls `within_head_limits` only past a limit, and a deadline is a number that
    `sweep_request_heads` looks at once a second, not a timer per request. (uvicorn internals:
    HttpToolsProtocol's on_message_begin, on_headers_complete, on_response_complete, loop, client,
    cycle, timeout_keep_alive, and the server state's connections.) Without httptools Uvicorn
    parses with h11, which calls none of these; its h11_max_incomplete_event_size limits the bytes.
    """

    # The limits (the worker class sets them); lines: the request line, the headers, the empty line.
    head_max_bytes, head_max_lines, head_timeout = 65536, 102, 10.0
    # When the head being waited for must be in (loop time); None once it is.
    head_deadline = None
    head_bytes = head_lines = 0

    def wait_for_head(self):
        self.head_deadline = self.loop.time() + self.head_timeout

    def within_head_limits(self, data):
        """Whether `data`, a read that takes the head over a limit counted whole, does so up to the
        head's end (its body may come in the same read); if it does, the request is refused."""
        end = data.find(b"\r\n\r\n")
        head = data if end < 0 else data[:end + 4]
        size, lines = self.head_bytes + len(head), self.head_lines + head.count(b"\n")
        if size > self.head_max_bytes:
            self.refuse(431, f"a request line and headers of more than {self.head_max_bytes} bytes")
            return False
        if lines > self.head_max_lines:
            self.refuse(431, f"more than {self.head_max_lines - 2} header fields")
            return False
        return True

    def on_message_begin(self):
        super().on_message_begin()
        if self.head_deadline is None:  # a request pipelined behind one being answered
            self.wait_for_head()

    def on_headers_complete(self):
        self.head_deadline, self.head_bytes, self.head_lines = None, 0, 0
        super().on_headers_complete()

    def on_response_complete(self):
        super().on_response_complete()
        if self.cycle.response_complete:  # no request pipelined behind it: waiting for the next
            self.head_deadline = WAITING

    def head_timed_out(self):
        self.head_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.head_bytes:
            self.refuse(408, f"no complete request head within {self.head_timeout:g} s")
        else:
            self.transport.close()

    def refuse(self, status, reason):
        self.head_deadline = None
        if self.transport.is_closing():
            return
        client = "%s:%d - " % self.client if self.client else ""
        logging.getLogger("uvicorn.error").warning("%sRefused a request with %d: %s", client, status, reason)
        body = f"{REFUSALS[status].decode()}: {reason}\n".encode()
        self.transport.write(b"".join([
            b"HTTP/1.1 %d %s\r\n" % (status, REFUSALS[status]),
            *(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n", body]))
        self.transport.close()


async def sweep_request_heads(connections, every=1.0):
    """Once every `every` seconds: give the connections that wait for a request after a response
    their deadline, and close those whose request head is late (RequestHeadLimits.head_deadline)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(every)
        now = loop.time()
        for connection in list(connections):
            deadline = getattr(connection, "head_deadline", None)
            if deadline == WAITING:
                connection.head_deadline = now + max(connection.head_timeout, connection.timeout_keep_alive)
            elif deadline is not None and deadline <= now:
                connection.head_timed_out()


# --- Access lines in batches -------------------------------------------------------------------

class AccessLog(logging.Logger):
    """Uvicorn's access lines, one per request as it writes them, but not one LogRecord, one
    write and one journald wake-up per line: on a small endpoint that cost as much CPU as the
    request itself. Lines are written at most 0.1 s after the first, at once past 64 KiB, and
    when the worker exits (worker_exit)."""

    def __init__(self, name, level=logging.NOTSET):
        super().__init__(name, level)
        self.batch, self.size, self.pending, self.batch_lock = [], 0, False, threading.Lock()

    def info(self, msg, *args, **kwargs):
        if self.isEnabledFor(logging.INFO):
            self.write((msg % args if args else msg) + "\n")

    def write(self, line):
        """Add `line` (with its newline) to the batch (JsonAccessLines writes here)."""
        with self.batch_lock:
            self.batch.append(line)
            self.size += len(line)
            if self.size < 65536:
                if self.pending:
                    return
                try:
                    asyncio.get_running_loop().call_later(0.1, self.flush)
                    self.pending = True
                    return
                except RuntimeError:  # not in the event loop: write at once
                    pass
        self.flush()

    def flush(self):
        with self.batch_lock:
            data, self.batch, self.size, self.pending = "".join(self.batch), [], 0, False
        if data:
            sys.stdout.write(data)
            sys.stdout.flush()


def batch_access_log():
    """Make Uvicorn's access logger an AccessLog (before uvicorn-worker configures it)."""
    previous = logging.getLoggerClass()
    logging.setLoggerClass(AccessLog)
    try:
        logger = logging.getLogger("uvicorn.access")
    finally:
        logging.setLoggerClass(previous)
    if not isinstance(logger, AccessLog):
        raise RuntimeError("uvicorn.access was created before asgi_app_worker could batch it")
    return logger


# --- Access lines as JSON ----------------------------------------------------------------------

# A request's X-Request-ID is kept when it is one such token (a UUID, a ULID, a trace id such as
# "Root=1-5759e988-bd862e3fe1be46a994272793"): nothing that can end a line, quote, or grow a log.
REQUEST_ID_RE = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")
# The scope key under which the protocol puts the monotonic time of a request's first byte
# (RequestBegan); a request without it (Uvicorn's h11 protocol) is timed from the app's call.
REQUEST_BEGAN = "asgi_app.request_began"
EMPTY = '""'  # an empty JSON string


class RequestBegan:
    """For uvicorn's httptools protocol: note in a request's scope when its first byte was parsed
    (``time.monotonic()``), so that its duration counts reading the request, as nginx's
    $request_time does. (uvicorn internals: HttpToolsProtocol.on_message_begin creates the scope.)"""

    def on_message_begin(self):
        super().on_message_begin()
        self.scope[REQUEST_BEGAN] = time.monotonic()


class JsonAccessLines:
    """ASGI middleware: one JSON object per HTTP request and per WebSocket, on one line, written
    to `write` (an AccessLog's, batched) when the request ends, in place of Uvicorn's line, which
    has neither the duration nor the request id. Lifespan passes through.

    - ``time``: when the line was made, the end of the request (UTC, milliseconds), as nginx's.
    - ``duration``: seconds from the request's first byte (RequestBegan) to its last body message
      sent; for a WebSocket the connection's life, from its handshake request read to its end.
    - ``status``: the response's; for a WebSocket 101 once accepted, 403 if closed before, the
      denial response's status; 500 if the app sent none (what Uvicorn answers then).
    - ``request_id``: the request's X-Request-ID if it is a sane token (REQUEST_ID_RE), or else
      32 hex digits, this worker's random prefix and a count (unique without a system call); the
      app finds it in the scope's headers (any other X-Request-ID is removed) and the response
      carries it, unless the app set its own.
    - ``client``: the address as the app sees it, after Uvicorn's proxy headers (this middleware
      wraps Uvicorn's ProxyHeadersMiddleware, which sets the scope's client in place).
    - ``bytes`` of the response's body, ``user_agent`` (its first 256 characters), ``query``,
      ``scheme``, ``http_version``.

    Cheap, it runs for every request: one pass over the request's headers, a line put together
    from its parts (what comes from the client escaped by json's C function: a quarter of what
    json.dumps of a dict costs), the time formatted once a second.
    """

    def __init__(self, app, write):
        self.app, self.write = app, write
        self.second, self.second_text = -1, ""
        # Made in the worker (the server's startup): each worker has its own prefix.
        self.id_prefix, self.id_count = os.urandom(8).hex(), itertools.count()

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            return await self.app(scope, receive, send)
        began = scope.get(REQUEST_BEGAN) or time.monotonic()
        headers = scope["headers"]
        request_id = user_agent = None
        ids = 0
        for name, value in headers:
            if name == b"x-request-id":
                request_id, ids = value, ids + 1
            elif name == b"user-agent":
                user_agent = value
        if ids != 1 or not REQUEST_ID_RE.fullmatch(request_id):
            request_id = f"{self.id_prefix}{next(self.id_count):016x}".encode()
            kept = [header for header in headers if header[0] != b"x-request-id"] if ids else list(headers)
            kept.append((b"x-request-id", request_id))
            scope = {**scope, "headers": kept}
        status = sent = 0
        ended = None

        async def send_and_note(message):
            nonlocal status, sent, ended
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
                if not message.get("more_body", False):
                    ended = time.monotonic()
            elif kind == "http.response.start" or kind == "websocket.accept" \
                    or kind == "websocket.http.response.start":
                status = message.get("status", 101)
                response_headers = message.get("headers") or ()
                for name, _value in response_headers:
                    if name.lower() == b"x-request-id":
                        break
                else:
                    message = {**message, "headers": [*response_headers, (b"x-request-id", request_id)]}
            elif kind == "websocket.close" and not status:
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            duration = (ended or time.monotonic()) - began
            client, query = scope.get("client"), scope["query_string"]
            # Escaped: what a client or a proxy sends. The method and HTTP version are tokens the
            # server's parser checks.
            self.write(
                f'{{"time":"{self.timestamp()}","request_id":"{request_id.decode()}",'
                f'"method":"{scope.get("method", "GET")}","path":{quote(scope["path"])},'
                f'"query":{quote(query.decode("latin-1")) if query else EMPTY},"status":{status or 500},'
                f'"duration":{duration:.6f},"bytes":{sent},"client":{quote(client[0]) if client else "null"},'
                f'"scheme":{quote(scope.get("scheme", "http"))},"http_version":"{scope.get("http_version", "1.1")}",'
                f'"user_agent":{quote(user_agent[:256].decode("latin-1")) if user_agent else "null"}}}\n')

    def timestamp(self):
        """Now, as 2026-12-05T07:12:03.042Z."""
        second, milliseconds = divmod(int(time.time() * 1000), 1000)
        if second != self.second:
            self.second, self.second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.second_text}.{milliseconds:03d}Z"
