"""Plain helpers of the fast tests, imported by the tests and by conftest.py (which holds the fixtures):
the repository's paths, its scripts loaded as modules, a local HTTP server, process helpers."""

import contextlib
import http.server
import importlib.util
import os
import re
import socket
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "asgi_app"
# The role's gunicorn worker module, which it installs into each release's virtualenv: the
# gunicorn_config.py the tests render imports it, in this process and in the gunicorns they start
# (conftest.py puts it on both paths).
WORKER_MODULE_DIR = ROLE / "files"
# Where the probe package lives (tools/probes/), for `python -m probes` in a child process.
TOOLS = REPO / "tools"


def probes_cli(*args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `python -m probes ARGS` in a child process, as the scenarios run it."""
    path = os.pathsep.join(filter(None, [str(TOOLS), os.environ.get("PYTHONPATH")]))
    return [sys.executable, "-m", "probes", *args], {**os.environ, "PYTHONPATH": path}


def load_module(name, path):
    """A script of the repository's as a module; the scripts beside it can be imported, as when it runs."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def debian_releases_under_test():
    """{release number: codename} of the Debian releases `make test` runs the scenarios on:
    the Makefile's DEBIAN_RELEASES, named as tools/test-image.sh names them."""
    makefile = (REPO / "Makefile").read_text()
    releases = re.search(r"^DEBIAN_RELEASES := (.+)$", makefile, re.MULTILINE).group(1).split()
    script = (REPO / "tools" / "test-image.sh").read_text()
    codenames = dict(re.findall(r"^\s*(\d+)\) suite=(\w+) ;;", script, re.MULTILINE))
    return {release: codenames[release] for release in releases}


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """A quiet keep-alive HTTP/1.1 handler; subclasses answer with send_json in do_GET."""
    protocol_version = "HTTP/1.1"  # keep-alive unless the client closes

    def send_json(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def local_http_server(handler):
    """Serve `handler` on a free port of 127.0.0.1 in a thread; yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# The host the fast tests render the role for: two CPUs, 8 GiB, no quota.
TWO_CPUS = {"online_cpus": 2, "affinity_cpus": 2, "cpu_quota": None, "memory_mb": 8192}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {seconds} s waiting for {what}")
        time.sleep(0.05)
