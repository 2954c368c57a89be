"""The role's gunicorn worker module (roles/asgi_app/files/asgi_app_worker.py) in a real gunicorn
with the role's gunicorn_config.py, against the versions the role pins and the oldest it accepts.

It overrides internals of gunicorn, uvicorn and uvicorn-worker: a version that changes them must
fail here, not in a deploy. No systemd: the tests listen on a NOTIFY_SOCKET of their own and read
what the service tells systemd, and which process told it.
"""

import fcntl
import functools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from probes import stop_session, websocket_echo
from support import REPO, TWO_CPUS, WORKER_MODULE_DIR, free_port, load_module

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
    """A virtualenv with the oldest versions, made once under .cache/. The test processes
    (pytest-xdist) all ask for it at once: the first to hold the lock makes it, the others wait."""
    venv = CACHE / ("oldest-" + "-".join(spec.replace("[standard]", "").replace(">=", "-").replace("==", "-")
                                         for spec in OLDEST[:3]))
    python = venv / "bin" / "python"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


class Notifications:
    """A NOTIFY_SOCKET as systemd's: the datagrams the service sends, with when they came and,
    as systemd reads it (SO_PASSCRED), the PID that sent each."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.received: list[tuple[float, str]] = []
        self.senders: list[int | None] = []

    def read(self, seconds: float) -> None:
        credentials = struct.Struct("3i")  # struct ucred: pid, uid, gid
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                message, ancillary, _flags, _address = self.sock.recvmsg(4096, socket.CMSG_SPACE(credentials.size))
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), message.decode()))
            self.senders.append(next((credentials.unpack(data[:credentials.size])[0] for level, kind, data in ancillary
                                      if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS), None))

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
    # Every notification from gunicorn's master, the one process the unit listens to
    # (NotifyAccess=main), none from the workers that run the app's code.
    assert set(notifications.senders) == {process.pid}, (process.pid, notifications.senders)
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


def test_a_worker_that_replaces_one_after_max_requests_shares_the_preloaded_app(serve, tmp_path, python):
    """The master imports what Uvicorn's workers import and freezes what it holds (on_starting):
    neither the first workers nor those that replace them after max_requests import anything or
    walk the app's objects in their garbage collector, which would copy the app's memory into each
    of them; and a worker that ends runs the app's atexit functions but not the interpreter's
    teardown, which would write to every object once more."""
    (tmp_path / "open").touch()
    exits = tmp_path / "exits"
    base_url, process, notifications, log = serve(
        "gated:app", {"GATED_APP_OPEN": str(tmp_path / "open"), "GATED_APP_EXITS": str(exits)},
        asgi_app_max_requests=5, asgi_app_max_requests_jitter=1)
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    answers = []
    for _ in range(40):  # a connection each; Uvicorn looks at its count every 0.1 s
        answers.append(httpx.get(base_url + "/frozen", timeout=2).json())
        time.sleep(0.03)
    pids = {answer["pid"] for answer in answers}
    print(f"\n{versions(python)}: {len(answers)} answers from {len(pids)} workers, "
          f"{answers[-1]['freeze_count']} objects frozen")
    assert len(pids) > 2, f"no worker was replaced: {answers}\n{log.read_text()}"
    assert all(answer["frozen"] for answer in answers), answers
    assert not [answer["imported_after_fork"] for answer in answers if answer["imported_after_fork"]], answers
    ended = {pid for pid in pids if f"Worker exiting (pid: {pid})" in log.read_text()}
    lines = exits.read_text().split("\n")
    assert ended and all(f"atexit {pid}" in lines for pid in ended), (ended, lines)
    assert not [pid for pid in ended if f"teardown {pid}" in lines], (ended, lines)
    # Past the service's MemoryMax the kernel kills a worker, not the master: each asks to go first.
    worker = httpx.get(base_url + "/frozen", timeout=2).json()["pid"]
    adjustment = {pid: int(Path(f"/proc/{pid}/oom_score_adj").read_text()) for pid in (process.pid, worker)}
    assert adjustment[worker] >= adjustment[process.pid] + 500, adjustment


def raw_request(base_url: str, head: bytes, *, body: bytes = b"", timeout: float = 10) -> tuple[str, float]:
    """Send `head` (and `body`) on a connection of its own; (the status line or what the server
    did instead, seconds until then). A server that refuses may close while the rest is sent."""
    host, port = base_url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        try:
            for offset in range(0, len(head + body), 65536):
                sock.sendall((head + body)[offset:offset + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            return "reset", time.monotonic() - started
    return (answer.split(b"\r\n", 1)[0].decode() if answer else "closed"), time.monotonic() - started


def test_request_heads_beyond_the_limits_are_refused_and_the_worker_keeps_serving(serve, tmp_path, python):
    """The role's limits on a request's head (asgi_app_max_header_bytes, asgi_app_max_headers):
    a 1 MB header and 10,000 header fields get 431; a body of any size is not part of the head."""
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve("gated:app", {"GATED_APP_OPEN": str(tmp_path / "open")})
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    start = b"GET /health HTTP/1.1\r\nHost: localhost\r\n"
    huge_header, _ = raw_request(base_url, start + b"X-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    many_fields, _ = raw_request(base_url, start + b"".join(b"X-%d: 1\r\n" % n for n in range(10_000)) + b"\r\n")
    just_under, _ = raw_request(base_url, start + b"".join(b"X-%d: 1\r\n" % n for n in range(90)) + b"\r\n")
    posted, _ = raw_request(base_url, b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 300000\r\n\r\n",
                            body=b"b" * 300_000)
    # Behind a request on the same connection (pipelined), the next one's head is limited too.
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(start + b"\r\n" + start + b"X-Big: " + b"a" * 1_000_000)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answers = b""
        try:
            while data := sock.recv(65536):
                answers += data
        except ConnectionResetError:
            pass
    pipelined = [line.decode() for line in answers.split(b"\r\n") if line.startswith(b"HTTP/1.1")]
    print(f"\n{versions(python)}: 1 MB header: {huge_header}; 10,000 fields: {many_fields}; "
          f"90 fields: {just_under}; 300 kB body: {posted}; pipelined: {pipelined}")
    assert pipelined[0] == "HTTP/1.1 200 OK" and pipelined[1:] in ([], ["HTTP/1.1 431 Request Header Fields Too Large"])
    assert huge_header in ("HTTP/1.1 431 Request Header Fields Too Large", "reset"), huge_header
    assert many_fields == "HTTP/1.1 431 Request Header Fields Too Large", many_fields
    assert just_under == "HTTP/1.1 200 OK" and posted == "HTTP/1.1 200 OK"
    text = log.read_text()
    assert "Refused a request with 431: a request line and headers of more than 65536 bytes" in text
    assert "Refused a request with 431: more than 100 header fields" in text
    assert httpx.get(base_url + "/health", timeout=2).status_code == 200


def test_a_client_that_takes_too_long_to_send_its_request_is_closed(serve, tmp_path, python):
    """asgi_app_header_timeout: a connection that sends nothing is closed, one that sends its
    head a byte at a time gets 408, both after the timeout; a kept-alive connection after a
    response, and a WebSocket, are not cut by it."""
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve("gated:app", {"GATED_APP_OPEN": str(tmp_path / "open")},
                                                  asgi_app_header_timeout=2, asgi_app_keepalive=4)
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    host, port = base_url.removeprefix("http://").split(":")

    def until_closed(trickle: bytes = b"") -> tuple[bytes, float]:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.settimeout(0.5)
            started, answer = time.monotonic(), b""
            for byte in (trickle or b"\0" * 40):
                if trickle:
                    try:
                        sock.sendall(bytes([byte]))
                    except (BrokenPipeError, ConnectionResetError):
                        break
                try:
                    data = sock.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionResetError:  # closed while a byte was on its way
                    break
                answer += data
                if not data:
                    break
            return answer, time.monotonic() - started

    silent, silent_s = until_closed()
    slow, slow_s = until_closed(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 60)
    def response(sock) -> bytes:  # the gated app's answers are chunked
        answer = b""
        while not answer.endswith(b"\r\n0\r\n\r\n") and (data := sock.recv(4096)):
            answer += data
        return answer

    with socket.create_connection((host, int(port)), timeout=10) as sock:  # kept alive after a response
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        first = response(sock)
        time.sleep(3)  # past the head timeout, within the keep-alive
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        second = response(sock)
    echo = websocket_echo(base_url.replace("http", "ws", 1) + "/ws", ["one"])
    time.sleep(3)
    echoed_later = websocket_echo(base_url.replace("http", "ws", 1) + "/ws", ["two"])
    slow_status = slow.split(b"\r\n", 1)[0]
    print(f"\n{versions(python)}: silent connection closed after {silent_s:.1f} s; a byte every 0.5 s: "
          f"{slow_status!r} after {slow_s:.1f} s")
    assert silent == b"" and 1.8 <= silent_s <= 3.5, (silent, silent_s)
    assert slow.startswith(b"HTTP/1.1 408 Request Timeout") and 1.8 <= slow_s <= 3.5, (slow, slow_s)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200"), (first, second)
    assert echo.echoed and echoed_later.echoed, (echo, echoed_later)


def test_clients_sending_endless_headers_leave_the_others_served(serve, tmp_path, python):
    """8 clients that send one header without end, as fast as they can: each is refused at the
    limit and tries again, while a client making a request every 0.05 s (slowed by the 8, which
    share its process) is answered, and the workers do not grow."""
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve("gated:app", {"GATED_APP_OPEN": str(tmp_path / "open")})
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    host, port = base_url.removeprefix("http://").split(":")
    stop, refused = threading.Event(), []

    def endless_header():
        while not stop.is_set():
            try:
                with socket.create_connection((host, int(port)), timeout=2) as sock:
                    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Endless: ")
                    while not stop.is_set():
                        sock.sendall(b"a" * 16384)
            except OSError:
                refused.append(1)

    attackers = [threading.Thread(target=endless_header) for _ in range(8)]
    for thread in attackers:
        thread.start()
    # 6 s of requests and at least 20 of them: on a loaded machine (the fast tests share 2 cores)
    # 20 may take longer; 30 s at most.
    answered = failed = 0
    start = time.monotonic()
    while time.monotonic() < start + 30 and (time.monotonic() < start + 6 or answered + failed < 20):
        try:
            answered += httpx.get(base_url + "/health", timeout=3).status_code == 200
        except httpx.HTTPError:
            failed += 1
        time.sleep(0.05)
    stop.set()
    for thread in attackers:
        thread.join(5)
    workers = subprocess.run(["ps", "-o", "rss=", "--ppid", str(process.pid)], capture_output=True, text=True)
    rss_mb = max(int(line) for line in workers.stdout.split()) / 1024
    print(f"\n{versions(python)}: {answered} of {answered + failed} requests answered while 8 clients sent "
          f"endless headers ({len(refused)} of their connections refused); largest worker {rss_mb:.0f} MB")
    assert answered / (answered + failed) >= 0.99 and answered >= 20
    assert len(refused) > 8
    assert rss_mb < 150


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
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
assert {"data_received", "on_message_begin", "on_headers_complete", "on_response_complete", "timeout_keep_alive",
        "loop", "client"} <= set(dir(HttpToolsProtocol)) | set(HttpToolsProtocol.__init__.__code__.co_names)
assert "pipeline" in HttpToolsProtocol.__init__.__code__.co_names
assert "cfg.on_starting" in inspect.getsource(Arbiter.start) and "sd_notify" in inspect.getsource(Arbiter.start)
assert inspect.getsource(Arbiter.start).index("on_starting") < inspect.getsource(Arbiter.start).index("sd_notify")
spawn = inspect.getsource(Arbiter.spawn_worker)  # worker_exit runs in a finally after sys.exit(0)
assert spawn.index("sys.exit(0)") < spawn.index("finally:") < spawn.index("cfg.worker_exit(self, worker)")
assert "self.log = " in inspect.getsource(Arbiter.setup)
assert "CONFIG_KWARGS" in inspect.getsource(UvicornWorker.__init__)
# JSON access lines: the client the proxy headers set in the scope itself, the time of a request's
# first byte in the scope on_message_begin makes, the app the lifespan takes once startup began.
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
assert 'scope["client"] = ' in inspect.getsource(ProxyHeadersMiddleware.__call__)
assert "self.scope = " in inspect.getsource(HttpToolsProtocol.on_message_begin)
assert "self.config.loaded_app" in inspect.getsource(LifespanOn.main)
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
