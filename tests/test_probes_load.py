"""The load probe (probes.run_load) against a real gunicorn on 127.0.0.1 (conftest.py's gunicorn
fixture), with the role's own gunicorn_config.py (its Uvicorn worker subclass) serving the example app.

No container and no systemd: what the probe counts, and that a graceful reload (SIGHUP) drops
no request, closes WebSockets with 1012 and lets SSE streams end cleanly.
"""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from probes import Watch, concurrent_get_across, format_table, run_load
from support import REPO, JsonHandler, children, local_http_server, probes_cli, wait_for


def test_load_without_an_event(gunicorn, tmp_path):
    """Through the command line, as an orchestrator runs it: one JSON object on stdout."""
    base_url, _ = gunicorn
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    command, env = probes_cli("load", base_url, "--stop-file", str(stop), "--ready-file", str(ready),
                              "--min-requests", "200", "--concurrency", "20", "--websockets", "2", "--sse", "1")
    load = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready.exists() or load.poll() is not None, 15, "the ready file")
        stop.touch()
        stdout, stderr = load.communicate(timeout=20)
    finally:
        if load.poll() is None:
            load.kill()
    assert load.returncode == 0, stderr
    report = json.loads(stdout)

    assert report["requests"] >= 200
    assert report["failed"] == 0, report["errors"]
    assert report["errors"] == {}
    assert report["versions"] == {"1.0.0": report["requests"]}
    assert report["last_version"] == "1.0.0"
    assert 1 <= report["pids"] <= 2  # the kernel need not spread 20 connections over both workers
    assert 0 < report["latency_p50"] <= report["latency_p99"] <= report["latency_max"]
    assert report["ws_clients"] == 2 and report["ws_connections"] >= 2
    assert report["ws_closes"] == {} and report["ws_resets"] == 0
    assert report["ws_errors"] == 0 and report["ws_connect_failures"] == 0
    assert report["sse_clients"] == 1 and report["sse_streams"] == 1 and report["sse_events"] > 0
    assert report["sse_ends"] == {"clean": 0, "broken": 0}
    assert json.loads(ready.read_text())["ready_after"] == report["ready_after"]


def test_load_during_a_graceful_reload(gunicorn):
    """SIGHUP: gunicorn starts two new workers and sends the old ones SIGTERM."""
    base_url, master = gunicorn
    wait_for(lambda: len(children(master.pid)) == 2, 10, "two workers")
    old_workers = children(master.pid)
    with Watch(base_url, min_requests=200, concurrency=20, websockets=2, sse=1) as watch:
        master.send_signal(signal.SIGHUP)

        def new_worker_answers() -> bool:
            try:
                return httpx.get(base_url + "/health", timeout=5).json()["pid"] not in old_workers
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_for(new_worker_answers, 15, "a new worker")
        time.sleep(1.0)  # the WebSocket clients notice the close at their next message and reconnect
    assert watch.result is not None, "run_load did not stop"
    report = watch.result.to_dict()

    # Uvicorn closes each WebSocket with 1012 (service restart) as the old worker stops; the
    # clients reconnect to the new workers.
    assert report["ws_closes"] == {"1012": 2}, report
    assert report["ws_resets"] == 0
    assert report["ws_connections"] >= 4
    assert report["ws_errors"] == 0
    # Both generations of workers answered, all with the one version deployed.
    assert report["pids"] >= 2
    assert report["versions"] == {"1.0.0": report["requests"] - report["failed"]}
    assert report["last_version"] == "1.0.0"
    assert report["requests"] >= 200
    # The worker stops accepting before it closes idle connections, so none is dropped.
    assert report["failed"] == 0, report["errors"]
    # The app's SSE stream saw the worker's shutdown event, sent its last event and ended.
    assert report["sse_ends"]["broken"] == 0
    assert report["sse_ends"]["clean"] >= 1
    assert report["sse_shutdown_events"] == report["sse_ends"]["clean"]
    assert report["sse_streams"] > report["sse_ends"]["clean"]


RECORDS = [
    {"event": "reload (SIGHUP)", "requests": 2412, "failed": 0, "ws_closes": {"1012": 4}, "ws_resets": 0,
     "sse_ends": {"clean": 2, "broken": 0}, "stop_seconds": 0.31, "sigkill": 0,
     "latency_max": 0.5, "latency_p99": 0.12,
     "first_version": "1.0.0", "last_version": "1.0.1"},
    {"event": "restart", "requests": 2007, "failed": 13, "ws_closes": {"1012": 3}, "ws_resets": 1,
     "sse_ends": {"clean": 1, "broken": 1}, "stop_seconds": None, "sigkill": 2,
     "latency_max": 12.25, "latency_p99": 3.5,
     "first_version": "1.0.0", "last_version": "1.0.0"},
]


def test_concurrent_gets_go_on_until_each_named_worker_answered(gunicorn):
    """However the first batch's connections were spread, every worker named has answered by the end,
    and nothing is counted twice; a PID that never answers ends the probe at its time limit."""
    base_url, master = gunicorn
    wait_for(lambda: len(children(master.pid)) == 2, 10, "two workers")
    workers = set(children(master.pid))
    sent = concurrent_get_across(base_url + "/health", workers, requests=200, concurrency=10)
    print(f"\n{sent.ok} answered by {sorted(sent.pids)} (workers {sorted(workers)}) in {sent.elapsed:.2f} s")
    assert sent.pids == workers
    assert sent.ok == sent.requests >= 200 and sent.failed == 0 and sent.errors == {}

    started = time.monotonic()
    unknown = concurrent_get_across(base_url + "/health", {1}, requests=20, concurrency=10, within=1)
    assert 1 <= time.monotonic() - started < 10
    assert unknown.pids <= workers and unknown.ok == unknown.requests > 20


def test_format_table():
    lines = format_table(RECORDS).splitlines()
    assert len(lines) == 4
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == [
        "event", "requests", "failed", "p99 (s)", "slowest (s)", "WS closes", "SSE ends", "stop (s)", "version"]
    assert set(lines[1]) <= set("|-:")
    assert len({len(line) for line in lines}) == 1  # aligned
    first = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert first == ["reload (SIGHUP)", "2412", "0", "0.12", "0.50", "1012 x4", "clean x2", "0.31", "1.0.0 -> 1.0.1"]
    second = [cell.strip() for cell in lines[3].strip("|").split("|")]
    assert second == ["restart", "2007", "13", "3.50", "12.25", "1012 x3, reset x1", "clean x1, broken x1",
                      "-, SIGKILL x2", "1.0.0"]
    idle = format_table([{"event": "idle", "requests": 5, "failed": 0}]).splitlines()[2]
    assert [cell.strip() for cell in idle.strip("|").split("|")] == [
        "idle", "5", "0", "0.00", "0.00", "-", "-", "-", "-"]


def test_table_command(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(RECORDS[0]))
    (tmp_path / "two.json").write_text(json.dumps(RECORDS))
    command, env = probes_cli("table", str(tmp_path / "one.json"), str(tmp_path / "two.json"))
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    assert output == format_table([RECORDS[0], *RECORDS]) + "\n"


def test_every_request_opens_a_new_connection(tmp_path):
    """A keep-alive server: the probe must not reuse a connection it could."""
    connections = []

    class Handler(JsonHandler):
        def setup(self):
            super().setup()
            connections.append(self.client_address)

        def do_GET(self):
            # The server closes each connection first (see run_load).
            assert self.headers["Connection"] == "close"
            self.send_json(200, json.dumps({"status": "ok", "version": "0.1", "pid": 1}).encode())

    with local_http_server(Handler) as url:
        (tmp_path / "stop").touch()
        report = run_load(url, stop_file=str(tmp_path / "stop"), min_requests=50, concurrency=4,
                          websockets=0, sse=0)
    assert report.failed == 0
    assert report.versions == {"0.1": report.requests}
    assert len(connections) == report.requests


def access_lines(log: Path, marker: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if marker in line]


def test_access_lines_are_batched_yet_none_is_lost(gunicorn, tmp_path):
    """The role's access log writes Uvicorn's lines in batches: soon after each request, and
    all of them when the worker stops."""
    base_url, master = gunicorn
    log = tmp_path / "gunicorn.log"
    with httpx.Client() as client:
        for number in range(200):
            assert client.get(f"{base_url}/json?n={number}").status_code == 200
        # No buffer fills with 200 short lines: the batch interval alone brings them out.
        wait_for(lambda: len(access_lines(log, "GET /json?n=")) == 200, 2, "200 access lines")
        for number in range(20):
            assert client.get(f"{base_url}/json?last={number}").status_code == 200
    master.send_signal(signal.SIGTERM)  # before the next batch is due
    master.wait(15)

    lines = access_lines(log, "GET /json?n=")
    assert {line.split("GET ")[1] for line in lines} == {f"/json?n={n} HTTP/1.1\" 200" for n in range(200)}
    assert all(line.startswith("127.0.0.1:") and " - \"GET /json?n=" in line for line in lines)
    assert len(access_lines(log, "GET /json?last=")) == 20


def test_hold_websockets(gunicorn):
    """`python -m probes hold`: opens, keeps and echoes on many WebSockets from one source address."""
    base_url, _ = gunicorn
    url = base_url.replace("http", "ws", 1) + "/ws"
    command, env = probes_cli("hold", url, "--count", "60", "--local-address", "127.0.0.2")
    hold = subprocess.run(command, input="echo\necho\n", env=env, capture_output=True, text=True, timeout=60)
    assert hold.returncode == 0, hold.stderr
    reports = [json.loads(line) for line in hold.stdout.splitlines()]
    assert len(reports) == 3  # once all are open, then once per "echo"
    for report in reports:
        assert report == {"opened": 60, "refused": 0, "echoed": 60, "lost": 0, "errors": {}}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make unit installs it)")
def test_recycled_workers_drop_no_kept_alive_request(start_gunicorn):
    """max_requests replaces workers while wrk keeps connections alive: the worker that stops
    answers its last requests with "Connection: close" and wrk reconnects; no read error."""
    base_url, master = start_gunicorn("--max-requests", "400", "--max-requests-jitter", "50")
    first = children(master.pid)
    result = subprocess.run(["wrk", "-t2", "-c32", "-d4s", "--script", str(REPO / "tools" / "wrk-report.lua"),
                             f"{base_url}/json"], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.split("wrk-report ", 1)[1])
    assert report["requests"] > 3000  # so each worker was replaced several times
    assert not children(master.pid) & first
    errors = {kind: report[kind] for kind in ("connect", "read", "write", "status", "timeout")}
    assert errors == {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}, report
