"""JSON access lines (asgi_app_access_log_format: json) from the role's worker module in a real
gunicorn with the role's gunicorn_config.py, against the pinned versions and the oldest the role
accepts (the fixtures of tests/test_worker_module.py): one line per request, none lost when a
worker is replaced or stops, and request ids that a client cannot use to forge lines."""

import asyncio
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import test_worker_module
from probes import websocket_echo
from test_worker_module import versions

# The fixtures of tests/test_worker_module.py: the versions (pinned, oldest) and a gunicorn with them.
python, serve = test_worker_module.python, test_worker_module.serve

GENERATED_ID = re.compile(r"[0-9a-f]{32}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def access_lines(log: Path) -> list[dict]:
    """The access lines in gunicorn's output: every line but gunicorn's and Uvicorn's own
    ("[time] [pid] [LEVEL] ..."), each of which must be one JSON object."""
    lines = []
    for line in log.read_text().splitlines():
        if not line.startswith("["):
            try:
                lines.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"not a JSON access line: {line!r}") from None
    return lines


def start(serve, tmp_path, env=None, **variables):
    (tmp_path / "open").touch()
    base_url, process, notifications, log = serve(
        "gated:app", {"GATED_APP_OPEN": str(tmp_path / "open"), **(env or {})},
        asgi_app_access_log_format="json", **variables)
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    # Read on while gunicorn runs, as systemd does: each new worker sends READY=1, and would wait
    # on a socket whose queue is full, or fail on one that is closed.
    threading.Thread(target=lambda: process.poll() is None and notifications.read(60), daemon=True).start()
    return base_url, process, log


def raw_get(base_url: str, path: str, headers: bytes = b"", pause_after: bytes = b"", pause: float = 0):
    """GET `path` with raw `headers` (a client that sends anything); pause `pause` s after the
    first bytes `pause_after`. Returns (the response's X-Request-ID values, its JSON body)."""
    host, port = base_url.removeprefix("http://").split(":")
    request = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers + b"\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if pause_after:
            sock.sendall(pause_after)
            time.sleep(pause)
            request = request.removeprefix(pause_after)
        sock.sendall(request)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    ids = [line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
           if line.lower().startswith(b"x-request-id:")]
    return ids, json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])


def test_one_json_line_per_request_from_concurrent_clients_none_lost_at_stop(serve, tmp_path, python):
    """2,200 requests from 4 clients (keep-alive): as many access lines, each one JSON object with
    the request's status and duration; none for the in-process health check a new release makes
    (ASGI_APP_CHECK_HEALTH); the last ones are written when gunicorn stops right after them."""
    base_url, process, log = start(serve, tmp_path, {"ASGI_APP_CHECK_HEALTH": "1"})
    answered, failed = Counter(), []

    def client(number):
        with httpx.Client(base_url=base_url, timeout=5) as session:
            for request in range(550):
                try:
                    if request % 3 == 0:
                        answer = session.get("/seen", params={"client": number, "n": request})
                    elif request % 3 == 1:
                        answer = session.post("/echo", content=b"x" * request)
                    else:
                        answer = session.get("/health", headers={"X-Request-ID": f"client-{number}-{request}"})
                    answered[answer.status_code] += 1
                except httpx.HTTPError as error:
                    failed.append(repr(error))

    clients = [threading.Thread(target=client, args=(number,)) for number in range(4)]
    started = time.monotonic()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    seconds = time.monotonic() - started
    process.send_signal(signal.SIGTERM)  # at once: the last lines are still in their batch
    process.wait(20)
    lines = access_lines(log)
    print(f"\n{versions(python)}: {sum(answered.values())} requests answered in {seconds:.1f} s "
          f"({dict(answered)}), {len(failed)} failed; {len(lines)} access lines; e.g. {json.dumps(lines[-1])}")
    assert not failed and answered == {200: 2200}, (answered, failed[:3])
    assert len(lines) == 2200
    assert Counter(line["path"] for line in lines) == {"/seen": 736, "/echo": 732, "/health": 732}
    for line in lines:
        assert line["status"] == 200 and isinstance(line["duration"], float) and 0 <= line["duration"] < 5, line
        assert TIME.fullmatch(line["time"]) and line["client"] == "127.0.0.1", line
        assert line["method"] == ("POST" if line["path"] == "/echo" else "GET"), line
        assert line["http_version"] == "1.1" and line["scheme"] == "http", line
        assert line["user_agent"].startswith("python-httpx/"), line
    assert {line["request_id"] for line in lines if line["path"] == "/health"} == {
        f"client-{number}-{request}" for number in range(4) for request in range(2, 550, 3)}
    assert all(GENERATED_ID.fullmatch(line["request_id"]) for line in lines if line["path"] != "/health")
    assert len({line["request_id"] for line in lines}) == 2200
    assert sorted(line["bytes"] for line in lines if line["path"] == "/echo") == sorted(
        len(str(request)) for _ in range(4) for request in range(1, 550, 3))
    assert Counter(line["query"] for line in lines if line["path"] == "/seen")["client=0&n=0"] == 1


def test_request_ids_are_kept_when_sane_and_made_otherwise(serve, tmp_path, python):
    """X-Request-ID: echoed when it is a sane token, made when absent, and replaced when forged
    (quotes, spaces, a line break's encoding, 10 kB, two of them); the app sees the same id,
    once, in its request's headers. The client is the one the proxy headers name, and the
    duration counts from the request's first byte."""
    base_url, process, log = start(serve, tmp_path)
    answer = httpx.get(base_url + "/seen", headers={"X-Request-ID": "3f2a1c9e-77b1-4c1e-9d1a-0f5b8e6f4a21"})
    assert answer.headers.get_list("x-request-id") == ["3f2a1c9e-77b1-4c1e-9d1a-0f5b8e6f4a21"]
    assert answer.json()["request_ids"] == ["3f2a1c9e-77b1-4c1e-9d1a-0f5b8e6f4a21"]
    made = httpx.get(base_url + "/seen", headers={"X-Forwarded-For": "203.0.113.9"})
    assert GENERATED_ID.fullmatch(made.headers["x-request-id"]), made.headers
    assert made.json() == {"request_ids": [made.headers["x-request-id"]], "client": "203.0.113.9"}
    forged = {
        "quotes and spaces": b'X-Request-ID: a" "status":200, "x\\\r\n',
        "an encoded line break": b"X-Request-ID: abc%0d%0a{\"status\":200}\r\n",
        "10 kB": b"X-Request-ID: " + b"a" * 10_000 + b"\r\n",
        "two of them": b"X-Request-ID: one\r\nX-Request-ID: two\r\n",
        "empty": b"X-Request-ID: \r\n",
    }
    replaced = {}
    for case, header in forged.items():
        ids, seen = raw_get(base_url, "/seen", header)
        assert len(ids) == 1 and GENERATED_ID.fullmatch(ids[0]), (case, ids)
        assert seen["request_ids"] == ids, (case, seen)
        replaced[case] = ids[0]
    # A request whose head comes in two parts, 0.3 s apart; one that the app answers in 0.2 s.
    slow_client, _ = raw_get(base_url, "/seen", pause_after=b"GET /se", pause=0.3)
    slow_app = httpx.get(base_url + "/slow").headers["x-request-id"]
    time.sleep(0.5)  # a batch is written at most 0.1 s after its first line
    lines = {line["request_id"]: line for line in access_lines(log)}
    print(f"\n{versions(python)}: {len(lines)} lines; forged ids replaced: {replaced}")
    assert len(lines) == 9
    assert lines[made.headers["x-request-id"]]["client"] == "203.0.113.9"
    assert set(replaced.values()) <= set(lines)
    # (uvloop's timers keep milliseconds: a sleep of 0.2 s may end a few microseconds early)
    assert lines[slow_client[0]]["duration"] >= 0.3 and 0.199 <= lines[slow_app]["duration"] < 0.3, lines


def test_a_websocket_has_one_line_when_it_ends(serve, tmp_path, python):
    """101 and the connection's life for one that was accepted, 403 for one closed before."""
    base_url, process, log = start(serve, tmp_path)
    url = base_url.replace("http", "ws", 1)
    echo = websocket_echo(url + "/ws?room=1", ["one", "two"])
    denied = websocket_echo(url + "/ws-denied", ["one"])
    assert echo.echoed and "403" in (denied.error or ""), (echo, denied)
    time.sleep(0.5)
    lines = access_lines(log)
    print(f"\n{versions(python)}: {lines}")
    assert [(line["path"], line["query"], line["status"], line["scheme"]) for line in lines] == [
        ("/ws", "room=1", 101, "ws"), ("/ws-denied", "", 403, "ws")]
    assert all(GENERATED_ID.fullmatch(line["request_id"]) and line["duration"] > 0 for line in lines)


def test_a_worker_replaced_after_max_requests_loses_no_line(serve, tmp_path, python):
    """max_requests 20: workers are replaced every few requests, each writing out its last lines
    as it exits; every request answered has its line, while gunicorn still runs."""
    base_url, process, log = start(serve, tmp_path, asgi_app_max_requests=20, asgi_app_max_requests_jitter=1)
    answered, failed, pids = set(), 0, set()
    for number in range(200):
        try:
            answer = httpx.get(base_url + "/health", headers={"X-Request-ID": f"r{number}"}, timeout=5)
        except httpx.HTTPError:
            failed += 1
            continue
        answered.add(f"r{number}")
        pids.add(answer.text.split("pid=")[1].split()[0])
    time.sleep(0.5)
    lines = [line["request_id"] for line in access_lines(log)]
    exited = log.read_text().count("Worker exiting")
    print(f"\n{versions(python)}: {len(answered)} answered by {len(pids)} workers ({exited} exited), "
          f"{failed} failed; {len(lines)} lines")
    assert len(pids) > 6 and exited >= 6
    assert sorted(lines) == sorted(answered)


# The same lines without httptools (Uvicorn's h11 protocol, no first-byte time): the pinned versions.
@pytest.mark.parametrize("python", [Path(sys.executable)])
def test_json_lines_with_the_h11_worker(serve, tmp_path, python):
    base_url, process, log = start(serve, tmp_path, asgi_app_worker_class="uvicorn_worker.UvicornH11Worker")
    ids = [httpx.get(base_url + "/slow", headers={"X-Request-ID": f"h11-{n}"}).headers["x-request-id"]
           for n in range(3)]
    time.sleep(0.5)
    lines = access_lines(log)
    assert ids == ["h11-0", "h11-1", "h11-2"] and [line["request_id"] for line in lines] == ids, lines
    assert all(line["status"] == 200 and line["duration"] >= 0.199 for line in lines), lines


def test_lines_still_in_their_batch_are_written_when_the_worker_exits(tmp_path, capsys):
    """In-process: a JSON line whose batch's 0.1 s timer never fires (the event loop ended first)
    is written by gunicorn's worker_exit hook. (In the gunicorns above the timer fires before the
    loop ends: Uvicorn's shutdown takes longer.)"""
    import asgi_app_worker

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def ignore(message):
        pass

    lines = asgi_app_worker.JsonAccessLines(app, asgi_app_worker.batch_access_log().write)
    scope = {"type": "http", "method": "DELETE", "path": "/items/1", "query_string": b"", "headers": [],
             "client": ("192.0.2.1", 5000), "scheme": "https", "http_version": "2"}
    asyncio.run(lines(scope, None, ignore))
    assert capsys.readouterr().out == ""
    gunicorn = SimpleNamespace(cfg=SimpleNamespace(worker_tmp_dir=str(tmp_path)))
    asgi_app_worker.worker_exit(gunicorn, SimpleNamespace(pid=1))
    line = json.loads(capsys.readouterr().out)
    assert (line["method"], line["path"], line["status"], line["client"], line["scheme"]) == (
        "DELETE", "/items/1", 204, "192.0.2.1", "https")
