"""The role's gunicorn worker module (roles/asgi_app/files/asgi_app_worker.py) in a real gunicorn
with the role's gunicorn_config.py, against the versions the role pins and the oldest it accepts.

It overrides internals of gunicorn, uvicorn and uvicorn-worker: a version that changes them must
fail here, not in a deploy. No systemd: the tests listen on a NOTIFY_SOCKET of their own and read
what the workers tell systemd.
"""

import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, WORKER_MODULE_DIR, load_module, stop_session

TWO_CPUS = {"online_cpus": 2, "affinity_cpus": 2, "cpu_quota": None, "memory_mb": 8192}
FIXTURES = REPO / "tests" / "fixtures" / "worker_apps"
# The versions the role accepts at the oldest (plugins/filter/asgi_app_inputs.py FLOORS); the
# pinned ones are this checkout's .venv (requirements.txt pins the role's defaults).
FLOORS = load_module("asgi_app_inputs", REPO / "plugins" / "filter" / "asgi_app_inputs.py").FLOORS
OLDEST = [f"gunicorn=={FLOORS['asgi_app_gunicorn_version'][0]}",
          f"uvicorn[standard]=={FLOORS['asgi_app_uvicorn_version'][0]}",
          f"uvicorn-worker=={FLOORS['asgi_app_uvicorn_worker_version'][0]}",
          f"h11>={FLOORS['asgi_app_h11_min_version'][0]}"]
CACHE = REPO / ".cache" / "worker-versions"


def oldest_python() -> Path:
    """A virtualenv with the oldest versions, made once under .cache/."""
    venv = CACHE / ("oldest-" + "-".join(spec.replace("[standard]", "").replace(">=", "-").replace("==", "-")
                                         for spec in OLDEST[:3]))
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *OLDEST],
                                   capture_output=True, text=True)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        (venv / ".complete").touch()
    return python


@pytest.fixture(scope="session", params=["pinned", "oldest"])
def python(request):
    return Path(sys.executable) if request.param == "pinned" else oldest_python()


@functools.cache
def versions(python: Path) -> str:
    return subprocess.run([str(python), "-c", "import gunicorn, uvicorn; from importlib.metadata import version; "
                           "print(gunicorn.__version__, uvicorn.__version__, version('uvicorn-worker'))"],
                          capture_output=True, text=True, check=True).stdout.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Notifications:
    """A NOTIFY_SOCKET as systemd's: the datagrams the service sends, with when they came."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []

    def read(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.received.append((time.monotonic(), self.sock.recv(4096).decode()))
            except TimeoutError:
                pass

    def first(self, text: str):
        return next(((when, message) for when, message in self.received if text in message), None)


@pytest.fixture
def serve(tmp_path, render, python):
    """serve(module, env, **role vars) -> (base_url, process, notifications): gunicorn with the
    role's config (two workers), started in tests/fixtures/worker_apps, as systemd would start it."""
    processes = []

    def start(module: str, env: dict, **variables):
        port = free_port()
        config = tmp_path / "gunicorn_config.py"
        config.write_text(render("gunicorn_config.py.j2", TWO_CPUS, asgi_app_name="example", asgi_app_module=module,
                                 asgi_app_src=str(FIXTURES), asgi_app_workers=2, **variables))
        notifications = Notifications(tmp_path / "notify")
        runtime = tmp_path / "runtime"
        runtime.mkdir()
        command = [str(python.with_name("gunicorn")), "--config", str(config), "-b", f"127.0.0.1:{port}"]
        if not versions(python).startswith("23."):  # gunicorn 23 has no control socket, nor the option
            command.append("--no-control-socket")
        log = tmp_path / "gunicorn.log"
        with open(log, "w") as output:
            process = subprocess.Popen(
                command, cwd=FIXTURES, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(WORKER_MODULE_DIR),
                     "NOTIFY_SOCKET": str(notifications.path), "RUNTIME_DIRECTORY": str(runtime), **env})
        processes.append(process)
        return f"http://127.0.0.1:{port}", process, notifications, log

    yield start
    for process in processes:
        stop_session(process)


def test_ready_only_once_every_worker_serves(serve, tmp_path, python):
    (tmp_path / "open").touch()
    started = time.monotonic()
    # Without preload each worker imports the app (1.5 s) after the fork, and gunicorn's master
    # has long bound the socket by then.
    base_url, process, notifications, log = serve(
        "gated:app", {"GATED_APP_OPEN": str(tmp_path / "open"), "GATED_APP_IMPORT_DELAY": "1.5"},
        asgi_app_preload=False)
    notifications.read(8)
    ready = notifications.first("READY=1")
    assert ready, f"no READY=1 ({versions(python)}): {notifications.received}\n{log.read_text()}"
    when, message = ready
    print(f"\n{versions(python)}: READY=1 after {when - started:.2f} s: {message!r}")
    assert when - started >= 1.5
    assert "Gunicorn arbiter booted" not in " ".join(m for _, m in notifications.received)
    assert "STATUS=2 workers serving release" in message
    assert len(os.listdir(tmp_path / "runtime" / "workers-ready")) == 2
    assert httpx.get(base_url + "/health", timeout=2).status_code == 200


def test_a_worker_that_checks_health_first_takes_no_connection_until_it_answers(serve, tmp_path, python):
    gate = tmp_path / "open"
    base_url, process, notifications, log = serve(
        "gated:app", {"GATED_APP_OPEN": str(gate), "ASGI_APP_CHECK_HEALTH": "1"},
        asgi_app_health_host="shop.example")
    notifications.read(3)
    assert notifications.first("READY=1") is None, notifications.received
    # The master has bound the socket, so the kernel accepts the connection, but no worker takes it.
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(base_url + "/health", timeout=1)
    gate.touch()
    opened = time.monotonic()
    notifications.read(4)
    ready = notifications.first("READY=1")
    assert ready, f"{notifications.received}\n{log.read_text()}"
    print(f"\n{versions(python)}: READY=1 {ready[0] - opened:.2f} s after /health answered 200")
    answer = httpx.get(base_url + "/health", timeout=2)
    assert answer.status_code == 200 and "host=shop.example" not in answer.text
    text = log.read_text()
    assert "Not taking connections yet: /health (Host: shop.example) answered 503, body starting " \
           "'closed pid=" in text
    assert "host=shop.example" in text  # the in-process check sent the Host header the role's check sends
    assert "/health answered 200 after" in text


def test_streams_learn_that_their_worker_stops_and_access_lines_are_kept(serve, tmp_path, python):
    """A SIGTERM to the master: the worker sets asgi_app_shutdown, answers with Connection: close
    and writes out its batched access lines before it exits."""
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve("gated:app", {"GATED_APP_OPEN": str(tmp_path / "open")})
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    for _ in range(5):
        assert httpx.get(base_url + "/health", timeout=2).status_code == 200
    process.send_signal(signal.SIGTERM)
    process.wait(20)
    text = log.read_text()
    assert text.count('"GET /health HTTP/1.1" 200') == 5, text
    assert not os.path.exists(tmp_path / "runtime" / "workers-ready") or \
        not os.listdir(tmp_path / "runtime" / "workers-ready")


def test_the_internals_it_overrides_are_there(python):
    """What asgi_app_worker reaches into, by name, in each version."""
    check = """
import inspect
from uvicorn import Server
from uvicorn.lifespan.on import LifespanOn
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import RequestResponseCycle
from uvicorn_worker import UvicornWorker
from gunicorn.arbiter import Arbiter
source = inspect.getsource(Server.startup)
assert "await self.lifespan.startup()" in source and "self.servers" in source, "Server.startup"
assert "connections" in inspect.getsource(Server.shutdown), "Server.shutdown"
assert {"state", "should_exit", "startup"} <= set(dir(LifespanOn)) | set(LifespanOn.__init__.__code__.co_names)
assert "response_complete" in RequestResponseCycle.__init__.__code__.co_names
assert "keep_alive" in RequestResponseCycle.__init__.__code__.co_names
assert hasattr(AutoHTTPProtocol, "data_received") or callable(AutoHTTPProtocol)
assert hasattr(UvicornWorker, "_install_sigquit_handler") and hasattr(UvicornWorker, "_serve")
assert "loop" in UvicornWorker.CONFIG_KWARGS
assert Arbiter.WORKER_BOOT_ERROR == 3
assert "cfg.on_starting" in inspect.getsource(Arbiter.start) and "sd_notify" in inspect.getsource(Arbiter.start)
assert inspect.getsource(Arbiter.start).index("on_starting") < inspect.getsource(Arbiter.start).index("sd_notify")
"""
    result = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, f"{versions(python)}: {result.stderr}"


# gunicorn's own asgi worker exists from 27.0.0 on (NATIVE_ASGI_SINCE): the pinned version only.
@pytest.mark.parametrize("python", [Path(sys.executable)])
def test_gunicorns_own_asgi_worker_is_ready_once_every_worker_has_the_app(serve, tmp_path, python):
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve(
        "gated:app", {"GATED_APP_OPEN": str(tmp_path / "open"), "GATED_APP_IMPORT_DELAY": "1"},
        asgi_app_worker_class="asgi", asgi_app_preload=False)
    notifications.read(6)
    ready = notifications.first("READY=1")
    assert ready and "STATUS=2 workers serving release" in ready[1], f"{notifications.received}\n{log.read_text()}"
    assert httpx.get(base_url + "/health", timeout=2).status_code == 200
