#
# Reference file rendered by tools/render_role.py from roles/asgi_app/templates
# for a host with 4 CPUs and 8 GiB serving examples/app; the role renders it for your host.
#
# Gunicorn configuration of example: gunicorn manages the processes, Uvicorn serves
# ASGI inside each worker. Checked with `gunicorn --check-config` before it went live.

# --- The application ---------------------------------------------------------
# What to serve. Its code is imported from the service's working directory,
# /opt/example/current/app, which systemd resolves to the live release when the service starts.
wsgi_app = "example_app.main:app"
# Import the app in each worker, after the fork, so a HUP reload picks up new code.
preload_app = False

# --- Where it listens --------------------------------------------------------
# systemd's example.socket listens here and hands the socket over (LISTEN_FDS), so it
# stays open while the service restarts; gunicorn binds it itself only when run by hand.
bind = ["127.0.0.1:8000"]
# Only these peers may set X-Forwarded-For/-Proto (the proxy in front, if any).
forwarded_allow_ips = "127.0.0.1"

# --- Workers -----------------------------------------------------------------
# 4 usable CPU(s), limited by online CPUs (online 4, affinity 4, cgroup quota none).
# mixed rule 2 x cores + 1 = 9.
workers = 9
# Uvicorn's worker, subclassed so that Uvicorn receives the settings gunicorn does not pass on:
# its graceful-shutdown deadline (25 s, below graceful_timeout), and so that the app
# learns when its worker begins to stop (restart, reload, max_requests): the ASGI state holds
# an asyncio.Event, `asgi_app_shutdown`, set at that moment, for streams to end themselves.
import asyncio  # noqa: E402
import sys  # noqa: E402

from gunicorn.arbiter import Arbiter  # noqa: E402
from uvicorn import Server  # noqa: E402
from uvicorn.protocols.http.auto import AutoHTTPProtocol  # noqa: E402
from uvicorn_worker import UvicornWorker as _UvicornWorkerBase  # noqa: E402


class _Server(Server):
    async def startup(self, sockets=None):
        self.lifespan.state["asgi_app_shutdown"] = self.shutting_down = asyncio.Event()
        await super().startup(sockets=sockets)

    async def shutdown(self, sockets=None):
        self.shutting_down.set()
        # Stop accepting, then give HTTP connections up to half a second to leave on their own
        # before Uvicorn's shutdown closes them: one accepted but not read yet (no request cycle)
        # or idle between kept-alive requests gets to deliver its next request, and every
        # request answered from now on says "Connection: close" (see _HTTPProtocol), so the
        # client reconnects to a live worker instead of writing into a socket closed under it.
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


class _HTTPProtocol(AutoHTTPProtocol):
    def data_received(self, data):
        super().data_received(data)
        # A request that arrives once the worker is stopping is answered with "Connection: close".
        cycle = self.cycle
        shutting_down = self.app_state.get("asgi_app_shutdown")
        if cycle is not None and not cycle.response_started and shutting_down and shutting_down.is_set():
            cycle.keep_alive = False


class UvicornWorker(_UvicornWorkerBase):
    CONFIG_KWARGS = {
        **_UvicornWorkerBase.CONFIG_KWARGS,
        "http": _HTTPProtocol,
        "timeout_graceful_shutdown": 25,
    }

    async def _serve(self):
        # The base class's _serve, with the server above.
        self.config.app = self.wsgi
        server = _Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


worker_class = UvicornWorker
# Heartbeat files on tmpfs (the unit's RuntimeDirectory), never on a disk that can stall.
worker_tmp_dir = "/run/example/gunicorn"

# --- Timeouts (they nest: Uvicorn 25 s < gunicorn 30 s < systemd TimeoutStopSec 40 s)
# A worker silent this long is killed and replaced; long-lived WebSocket/SSE connections
# do not count, the worker's event loop keeps notifying the master.
timeout = 120
# On stop or reload, workers get this long to finish open requests before they are killed.
graceful_timeout = 30
# Idle keep-alive connections are closed after this many seconds.
keepalive = 5

# --- Recycling ---------------------------------------------------------------
# Replace a worker after this many requests to bound slow memory leaks; the jitter keeps
# workers from being replaced all at once.
max_requests = 10000
max_requests_jitter = 1000

# --- Logging: to stdout/stderr, which systemd sends to the journal ----------------
accesslog = "-"
errorlog = "-"
loglevel = "info"
proc_name = "example"
# Uvicorn's access lines, one per request as it writes them, but not one LogRecord, one write
# and one journald wake-up per line: on a small endpoint that cost as much CPU as the request
# itself. Lines are batched and written at most 0.1 s after the first, at once past 64 KiB,
# and when the worker exits.
import logging  # noqa: E402
import threading  # noqa: E402


class _AccessLog(logging.Logger):
    def __init__(self, name, level=logging.NOTSET):
        super().__init__(name, level)
        self.batch, self.size, self.pending, self.batch_lock = [], 0, False, threading.Lock()

    def info(self, msg, *args, **kwargs):
        if not self.isEnabledFor(logging.INFO):
            return
        line = (msg % args if args else msg) + "\n"
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


logging.setLoggerClass(_AccessLog)
logging.getLogger("uvicorn.access")
logging.setLoggerClass(logging.Logger)


def worker_exit(server, worker):
    logging.getLogger("uvicorn.access").flush()

# --- Control socket (gunicornc): in the runtime directory, the only place the
# hardened service may create it; readable by the app's user only.
control_socket = "/run/example/gunicorn/gunicorn.ctl"
control_socket_mode = 0o600
