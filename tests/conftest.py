"""Helpers for the fast tests: the role's Python and templates, without any host."""

import contextlib
import http.server
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path

import pytest

from browser import stop_session  # noqa: F401 - the fast tests stop their gunicorns with it

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "asgi_app"
# The role's gunicorn worker module, which it installs into each release's virtualenv: the
# gunicorn_config.py the tests render imports it, in this process and in the gunicorns they start.
WORKER_MODULE_DIR = ROLE / "files"
sys.path.insert(0, str(WORKER_MODULE_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKER_MODULE_DIR), os.environ.get("PYTHONPATH")]))


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


@pytest.fixture(scope="session")
def sizing():
    """plugins/filter/asgi_app.py, the filters the role computes derived values with."""
    return load_module("asgi_app_filters", REPO / "plugins" / "filter" / "asgi_app.py")


@pytest.fixture(scope="session")
def host_resources():
    """roles/asgi_app/files/host_resources.py, the script the role runs on the target."""
    return load_module("host_resources", ROLE / "files" / "host_resources.py")


@pytest.fixture(scope="session")
def render():
    """Render one of the role's templates as the role would: render(template, resources, **vars)."""
    return load_module("render_role", REPO / "tools" / "render_role.py").render


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
