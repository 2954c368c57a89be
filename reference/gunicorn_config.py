#
# Reference file rendered by tools/render_role.py from roles/asgi_app/templates
# for a host with 4 CPUs and 8 GiB serving examples/app; the role renders it for your host.
#
# Gunicorn configuration of example: gunicorn manages the processes, Uvicorn serves
# ASGI inside each worker. Checked with `gunicorn --check-config` before it went live.
import os

import asgi_app_worker

# --- The application ---------------------------------------------------------
# What to serve. Its code is imported from the service's working directory,
# /opt/example/current/app, which systemd resolves to the live release when the service starts.
wsgi_app = "example_app.main:app"
# Import the app once, here in the master: each worker (at start, after a kill, after
# max_requests) is a fork that serves at once, sharing the app's memory. New code comes with a
# new master (example-handover.service); a HUP only applies these settings.
preload_app = True

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
# Uvicorn's worker with the role's server (asgi_app_worker, installed in the release's
# virtualenv): ready once its app's lifespan has started, a new release answers its health path
# before its first connection, and when a worker begins to stop (stop, restart, reload,
# max_requests) the app's streams are told through the ASGI state's `asgi_app_shutdown`. Uvicorn
# gets the settings gunicorn does not pass on: its graceful-shutdown deadline
# (25 s, below graceful_timeout).
worker_class = asgi_app_worker.uvicorn_worker_class(
    "uvicorn_worker.UvicornWorker",
    timeout_graceful_shutdown=25,
    health_path="/health",
    health_host="localhost",
    # What a client may send before its request's headers are complete (431 beyond the first
    # two), and how long it may take from connecting (then the connection is closed): Uvicorn
    # alone limits neither, which matters most when no proxy stands in front.
    max_header_bytes=65536,
    max_headers=100,
    header_timeout=10,
)
# systemd learns the service is ready once every worker serves: the worker that completes the set
# tells the master, the one process systemd listens to (NotifyAccess=main); not when the master
# has bound the socket, before any worker has imported the app.
on_starting = asgi_app_worker.on_starting
child_exit = asgi_app_worker.child_exit
worker_exit = asgi_app_worker.worker_exit
# Past the service's MemoryMax the kernel kills a worker, never the master.
post_fork = asgi_app_worker.post_fork
# Heartbeat files and readiness marks on tmpfs, never on a disk that can stall: the runtime
# directory of the unit that runs gunicorn (example.service or example-standby.service).
runtime_directory = os.environ.get("RUNTIME_DIRECTORY", "/run/example/gunicorn")
worker_tmp_dir = runtime_directory

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
# Uvicorn's access lines in batches: at most 0.1 s late, and at a fraction of the CPU.
asgi_app_worker.batch_access_log()

# --- Control socket (gunicornc): in the runtime directory, the only place the
# hardened service may create it; readable by the app's user only.
control_socket = runtime_directory + "/gunicorn.ctl"
control_socket_mode = 0o600
