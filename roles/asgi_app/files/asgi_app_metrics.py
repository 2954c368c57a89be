"""Prometheus metrics of an app's web service, right across its workers, their recycling and its
restarts (asgi_app_metrics). Installed by the role into each release's virtualenv, beside
asgi_app_worker, with prometheus_client.

Every process of the service writes its numbers to its own files in one directory,
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode), which outlives the service's
restarts; the app's own prometheus_client metrics, if it has any, go there too.

- In each worker, `RequestMetrics` (ASGI middleware around the app) counts requests by method and
  status, times them, and keeps the requests in flight and the open WebSockets.
- In gunicorn's master, `fold` takes the files of a worker that exited into the directory's
  archive files (counters, histograms and summaries keep their counts; a dead process's gauges
  go), and `fold_dead` does so for every process no longer running when a master starts. The
  directory so holds the files of live processes and one archive per kind, however many workers
  max_requests has replaced, and no count goes back.
- `python -m asgi_app_metrics --listen HOST:PORT` (NAME-metrics.service) answers GET /metrics
  with the sum over every file: the web service's metrics and the app's own.

Folding and reading take a lock on the directory (LOCK_FILE), so a scrape never sees a worker's
counts twice, or not at all, while they move to the archive; `guard_collectors` makes
prometheus_client's MultiProcessCollector take it too, for an app that serves its own /metrics.
Both pass over a file that is still empty: prometheus_client creates a process's file, then sizes
it, and reading it in between fails the whole scrape (prometheus/client_python#1199); a process
killed in between leaves it empty for good.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import os
import re
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK_FILE = "fold.lock"
# A process's file: prometheus_client's name for it, TYPE[_MODE]_PID.db.
PROCESS_FILE_RE = re.compile(r"^(?P<kind>counter|histogram|summary|gauge_[a-z]+)_(?P<pid>\d+)\.db$")
# What a dead process's counts add to: counters, histograms (their buckets, sum and count),
# summaries and gauges summed over processes ('sum'). A gauge of any other mode describes a
# process that is gone, and goes with it.
FOLDED_KINDS = {"counter", "histogram", "summary", "gauge_sum"}
ARCHIVE = "{kind}_archive.db"

# The methods that get a label of their own; anything else is counted as OTHER, so that a client
# cannot grow the number of series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
# Seconds: prometheus_client's default buckets, and 30 and 60 for slow endpoints.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)


# --- The directory: locking and folding ---------------------------------------------------------

@contextlib.contextmanager
def locked(directory, exclusive):
    """Hold the directory's lock: shared to read every file, exclusive to move a process's files."""
    with open(os.path.join(directory, LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_files(directory):
    """{pid: [(kind, path)]} of the processes whose files are in the directory."""
    files = {}
    for path in glob.glob(os.path.join(directory, "*.db")):
        match = PROCESS_FILE_RE.match(os.path.basename(path))
        if match:
            files.setdefault(int(match["pid"]), []).append((match["kind"], path))
    return files


def _written(path):
    """Whether prometheus_client has sized the file yet: until then it holds nothing to read."""
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:
        return False


def _fold_files(directory, files):
    """Add the counts of `files` ((kind, path) of processes that ended) to the archive of their
    kind, and remove them. The caller holds the exclusive lock."""
    from prometheus_client.mmap_dict import MmapedDict

    archives = {}
    try:
        for kind, path in files:
            if kind in FOLDED_KINDS and _written(path):
                try:
                    values = list(MmapedDict.read_all_values_from_file(path))
                except FileNotFoundError:
                    continue
                if kind not in archives:
                    archives[kind] = MmapedDict(os.path.join(directory, ARCHIVE.format(kind=kind)))
                archive = archives[kind]
                for key, value, _timestamp, _position in values:
                    archive.write_value(key, archive.read_value(key)[0] + value, 0.0)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    finally:
        for archive in archives.values():
            archive.close()


def fold(directory, pid):
    """gunicorn's master, when worker `pid` exited: its counts into the archive, its gauges gone."""
    with locked(directory, exclusive=True):
        _fold_files(directory, process_files(directory).get(pid, []))


def fold_dead(directory):
    """A master that starts: the files of every process that no longer runs (the workers and the
    master of an earlier start, a worker killed before it was folded) into the archive."""
    with locked(directory, exclusive=True):
        for pid, files in process_files(directory).items():
            if not _running(pid):
                _fold_files(directory, files)


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True


def guard_collectors():
    """Make prometheus_client's MultiProcessCollector read under the directory's shared lock, and
    only the files already written, in this process and the processes it forks: an app's own
    /metrics then sums every worker's counts exactly once while a worker's files move to the
    archive, and a worker that is making its files does not fail it."""
    from prometheus_client import multiprocess

    if getattr(multiprocess.MultiProcessCollector.collect, "asgi_app_guarded", False):
        return

    def guarded_collect(self):
        # MultiProcessCollector.collect, with the lock and without the files not yet written.
        with locked(self._path, exclusive=False):
            files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _written(path)]
            return list(self.merge(files, accumulate=True))

    guarded_collect.asgi_app_guarded = True
    multiprocess.MultiProcessCollector.collect = guarded_collect


# --- The web service's metrics ------------------------------------------------------------------

class ServiceMetrics:
    """The web service's own metrics, made in the process that counts (a worker, or the master
    for worker exits), in no registry: the exporter reads them from the files."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter("asgi_app_http_requests", "HTTP requests answered, by method and status.",
                                ["method", "status"], registry=None)
        self.duration = Histogram("asgi_app_http_request_duration_seconds",
                                  "Seconds from a request's first byte to its response's last.",
                                  buckets=DURATION_BUCKETS, registry=None)
        self.in_flight = Gauge("asgi_app_http_requests_in_flight", "HTTP requests being answered.",
                               multiprocess_mode="livesum", registry=None)
        self.websockets = Counter("asgi_app_websockets", "WebSockets accepted.", registry=None)
        self.websockets_open = Gauge("asgi_app_websockets_open", "WebSockets open.",
                                     multiprocess_mode="livesum", registry=None)
        self._by_label = {}

    def count(self, method, status):
        # Keyed by the label, not by what the client sent: a client that makes up methods (h11
        # takes any token) grows neither the series nor this cache.
        key = (method if method in METHODS else "OTHER", status)
        child = self._by_label.get(key)
        if child is None:
            child = self._by_label[key] = self.requests.labels(key[0], str(status))
        child.inc()


def worker_exits():
    """The master's counter of workers that exited (each replaced unless the service stops)."""
    from prometheus_client import Counter

    return Counter("asgi_app_worker_exits", "gunicorn workers that exited: replaced after max_requests, "
                   "killed, crashed, or stopped with the service.", registry=None)


class RequestMetrics:
    """ASGI middleware: counts each HTTP request when its response has ended (method, status,
    duration from the request's first byte if the protocol noted it under `began_key`), and the
    requests in flight; each WebSocket accepted, and those open. Lifespan passes through."""

    def __init__(self, app, metrics, began_key=None):
        self.app, self.metrics, self.began_key = app, metrics, began_key

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def http(self, scope, receive, send):
        metrics = self.metrics
        began = scope.get(self.began_key) or time.monotonic()
        status, ended = 0, None

        async def send_and_note(message):
            nonlocal status, ended
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body", False):
                ended = time.monotonic()
            await send(message)

        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            metrics.in_flight.dec()
            metrics.count(scope.get("method", "GET"), status or 500)
            metrics.duration.observe((ended or time.monotonic()) - began)

    async def websocket(self, scope, receive, send):
        metrics = self.metrics
        accepted = False

        async def send_and_note(message):
            nonlocal accepted
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                metrics.websockets.inc()
                metrics.websockets_open.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if accepted:
                metrics.websockets_open.dec()


# --- The exporter -------------------------------------------------------------------------------

def exposition(directory):
    """The text format of every metric in the directory, summed over its processes."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    guard_collectors()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


class MetricsHandler(BaseHTTPRequestHandler):
    directory = ""
    server_version = "asgi_app_metrics"

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.partition("?")[0] != "/metrics":
            self.send_error(404, "Not found: the metrics are at /metrics")
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        body = exposition(self.directory)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - http.server's signature
        """Scrapes are not logged: one every few seconds would fill the journal."""


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True


class MetricsServer6(MetricsServer):
    address_family = socket.AF_INET6


def serve(listen, directory):
    """Answer GET /metrics on `listen` (HOST:PORT, [IPv6]:PORT) until SIGTERM."""
    host, _colon, port = listen.rpartition(":")
    MetricsHandler.directory = directory
    server_class = MetricsServer6 if host.startswith("[") else MetricsServer
    server = server_class((host.strip("[]"), int(port)), MetricsHandler)
    print(f"Serving the metrics of {directory} at http://{listen}/metrics", flush=True)
    server.serve_forever()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m asgi_app_metrics",
                                     description="Serve the web service's Prometheus metrics.")
    parser.add_argument("--listen", required=True, help="HOST:PORT, for example 127.0.0.1:9464")
    parser.add_argument("--directory", default=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
                        help="the metrics directory (default: $PROMETHEUS_MULTIPROC_DIR)")
    args = parser.parse_args(argv)
    if not args.directory or not os.path.isdir(args.directory):
        parser.error(f"the metrics directory {args.directory!r} does not exist")
    serve(args.listen, args.directory)


if __name__ == "__main__":
    sys.exit(main())
