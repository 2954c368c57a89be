"""Metrics (asgi_app_metrics) from the role's modules in a real gunicorn with the role's
gunicorn_config.py (the fixtures of tests/test_worker_module.py, the pinned versions, which have
prometheus_client): every request counted once across workers that max_requests replaces, a
worker killed, and a restart of the whole service; a scrape that never sees a count go back
while workers' files are folded, nor fails on a file not yet written; the app's own
prometheus_client metrics summed over its workers, on its own /metrics and on the role's; and
the server of the metrics."""

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import test_worker_module
from probes import websocket_echo
from support import free_port, wait_for
from test_worker_module import WORKER_MODULE_DIR

serve = test_worker_module.serve
# prometheus_client is in the pinned versions' environment (this checkout's .venv) only.
pytestmark = pytest.mark.parametrize("python", [Path(sys.executable)])

import asgi_app_metrics  # noqa: E402 - tests/conftest.py puts the role's modules on the path


def samples(text):
    """{(name, ((label, value), ...)): value} of a Prometheus text exposition."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(directory):
    return samples(asgi_app_metrics.exposition(str(directory)).decode())


def requests_by_label(values):
    return {(labels[0][1], labels[1][1]): value for (name, labels), value in values.items()
            if name == "asgi_app_http_requests_total"}


def start(serve, tmp_path, directory, **variables):
    directory.mkdir(exist_ok=True)
    base_url, process, notifications, log = serve(
        "counted:app", {"PROMETHEUS_MULTIPROC_DIR": str(directory)}, asgi_app_metrics=True, **variables)
    notifications.read(3)
    assert notifications.first("READY=1"), log.read_text()
    # Read on while gunicorn runs, as systemd does (each new worker's READY=1).
    threading.Thread(target=lambda: process.poll() is None and notifications.read(120), daemon=True).start()
    return base_url, process, log


def dead_pid():
    """The PID of a process that has ended, as a worker killed before its files were sized."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def send_requests(base_url, clients=4, each=150):
    """`clients` keep-alive clients, `each` requests apiece: GET /health, POST /work, GET /missing
    in turn. Returns what was answered, by (method, status)."""
    answered, failed = Counter(), []

    def client():
        with httpx.Client(base_url=base_url, timeout=10) as session:
            for number in range(each):
                try:
                    if number % 3 == 0:
                        answer = session.get("/health")
                    elif number % 3 == 1:
                        answer = session.post("/work", content=b"x" * 10)
                    else:
                        answer = session.get("/missing")
                    answered[(answer.request.method, str(answer.status_code))] += 1
                except httpx.HTTPError as error:
                    failed.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed[:3]
    return answered


def test_every_request_is_counted_once_across_recycled_workers(serve, tmp_path, python):
    """max_requests 40: workers are replaced as they pass it. 600 requests from 4
    clients: the counts by method and status are exactly the requests answered, the histogram
    counts each once, none is in flight after, each worker that exited is counted, the app's own
    counter is summed over every worker on its own /metrics and on the role's, and the directory
    holds the live processes' files and the archives, not one file per worker that ever ran."""
    directory = tmp_path / "metrics"
    base_url, process, log = start(serve, tmp_path, directory, asgi_app_max_requests=40,
                                   asgi_app_max_requests_jitter=1)
    answered = send_requests(base_url)
    time.sleep(0.5)  # the last workers to be replaced have exited
    values = scrape(directory)
    exited = log.read_text().count("Worker exiting")
    own = samples(httpx.get(base_url + "/metrics").text)
    files = sorted(path.name for path in directory.glob("*.db"))
    print(f"\n{dict(answered)}\ncounted {requests_by_label(values)}; {exited} workers exited, "
          f"exits counted {values[('asgi_app_worker_exits_total', ())]}; files now: {files}")
    assert requests_by_label(values) == {("GET", "200"): 200, ("POST", "200"): 200, ("GET", "404"): 200}
    assert values[("asgi_app_http_request_duration_seconds_count", ())] == 600
    assert values[("asgi_app_http_request_duration_seconds_bucket", (("le", "+Inf"),))] == 600
    assert values[("asgi_app_http_requests_in_flight", ())] == 0
    # (UvicornWorker checks its request count once a second: a few replaced during the run)
    assert exited >= 3 and values[("asgi_app_worker_exits_total", ())] == exited
    # The app's counter: 200 POST /work, whichever worker took them, on either /metrics (the
    # app's own counts the /metrics request itself, which is not a POST).
    assert own[("counted_work_total", ())] == 200 == values[("counted_work_total", ())]
    live = {path.name.rsplit("_", 1)[1][:-3] for path in directory.glob("*.db")} - {"archive"}
    assert len(live) <= 3, files  # two workers and the master
    assert {"counter_archive.db", "histogram_archive.db"} <= set(files)


def test_a_scrape_never_sees_a_count_go_back_while_workers_are_folded(serve, tmp_path, python):
    """Scrapes in a loop while 600 requests go through workers replaced every 20: each scrape's
    total is at least the one before (a worker's counts are never seen twice, then once, nor
    missing while they move to the archive), and the last is every request."""
    directory = tmp_path / "metrics"
    base_url, process, log = start(serve, tmp_path, directory, asgi_app_max_requests=20,
                                   asgi_app_max_requests_jitter=1)
    totals, errors, done = [], [], threading.Event()

    def scraper():
        while not done.is_set():
            try:
                totals.append(sum(requests_by_label(scrape(directory)).values()))
            except Exception as error:  # noqa: BLE001 - a failed scrape is what this test looks for
                errors.append(repr(error))

    thread = threading.Thread(target=scraper)
    thread.start()
    answered = send_requests(base_url)
    time.sleep(0.5)
    done.set()
    thread.join()
    final = sum(requests_by_label(scrape(directory)).values())
    backwards = [(before, after) for before, after in itertools.pairwise(totals) if after < before]
    print(f"\n{len(totals)} scrapes during {sum(answered.values())} requests, "
          f"{log.read_text().count('Worker exiting')} workers exited; went back: {backwards[:5]}; "
          f"failed: {len(errors)} {errors[:1]}")
    assert not errors
    assert len(totals) > 20 and not backwards and final == 600


def test_counts_are_kept_when_a_worker_is_killed_and_when_the_service_restarts(serve, tmp_path, python):
    """A worker killed with SIGKILL keeps what it counted (its files are folded when the master
    reaps it); a new gunicorn on the same directory, as after a deploy, starts from the totals
    (it folds what the earlier one left) and adds to them."""
    directory = tmp_path / "metrics"
    base_url, process, log = start(serve, tmp_path, directory)
    first = send_requests(base_url, clients=2, each=60)
    pid = int(httpx.get(base_url + "/health").text.split("pid=")[1])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: log.read_text().count("Booting worker") >= 3, 10, "a worker in place of the killed one")
    second = send_requests(base_url, clients=2, each=60)
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    (tmp_path / "runtime").rename(tmp_path / "runtime-1")
    (tmp_path / "notify").unlink()
    log.rename(tmp_path / "gunicorn-1.log")
    base_url, process, log = start(serve, tmp_path, directory)
    third = send_requests(base_url, clients=2, each=60)
    values = scrape(directory)
    expected = first + second + third + Counter({("GET", "200"): 1})  # the /health that found a pid
    print(f"\nanswered {dict(expected)}; counted {requests_by_label(values)}; files "
          f"{sorted(path.name for path in directory.glob('*.db'))}")
    assert requests_by_label(values) == {key: float(value) for key, value in expected.items()}
    assert values[("counted_work_total", ())] == 120
    assert values[("asgi_app_worker_exits_total", ())] >= 3  # the one killed, and two at the stop


def test_open_websockets_are_counted(serve, tmp_path, python):
    directory = tmp_path / "metrics"
    base_url, process, log = start(serve, tmp_path, directory)
    url = base_url.replace("http", "ws", 1) + "/ws"
    seen = {}

    async def hold_one():
        import websockets

        async with websockets.connect(url) as socket:
            await socket.send("hello")
            await socket.recv()
            seen["open"] = scrape(directory)

    import asyncio

    asyncio.run(hold_one())
    assert websocket_echo(url, ["again"]).echoed
    time.sleep(0.2)
    after = scrape(directory)
    assert seen["open"][("asgi_app_websockets_open", ())] == 1
    assert after[("asgi_app_websockets_open", ())] == 0 and after[("asgi_app_websockets_total", ())] == 2


def test_the_server_answers_the_metrics_and_nothing_else(tmp_path, python):
    """python -m asgi_app_metrics, as NAME-metrics.service runs it."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "asgi_app_metrics", "--listen", f"127.0.0.1:{port}"],
                              env={**os.environ, "PYTHONPATH": str(WORKER_MODULE_DIR),
                                   "PROMETHEUS_MULTIPROC_DIR": str(directory)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url), 10, "the metrics server")
        subprocess.run([sys.executable, "-c", "from prometheus_client import Counter; "
                        "Counter('outside', 'One more process.').inc(3)"],
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}, check=True)
        answer = httpx.get(url + "/metrics")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        assert samples(answer.text)[("outside_total", ())] == 3
        assert httpx.get(url + "/").status_code == 404
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=10)
    assert "GET /metrics" not in output  # scrapes are not logged


def test_a_file_not_yet_written_fails_no_scrape_and_no_fold(tmp_path, python):
    """prometheus_client creates a process's file, then sizes it (prometheus/client_python#1199).
    A scrape in between, by the exporter or by an app's own MultiProcessCollector, reads the
    other files; a process killed in between leaves its file empty, and the next master's
    fold_dead removes it rather than failing to start."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    directory = tmp_path / "metrics"
    directory.mkdir()
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    exited = subprocess.run([sys.executable, "-c", "from prometheus_client import Counter; "
                             "Counter('exited', 'A process that ended.').inc(3)"], env=environment, check=True)
    empty = {"in the making": directory / f"counter_{os.getpid()}.db",
             "left by a killed process": directory / f"histogram_{dead_pid()}.db"}
    for path in empty.values():
        path.touch()
    print(f"\n{exited.args[-1]}; files: {sorted(path.name for path in directory.iterdir())}")

    assert scrape(directory)[("exited_total", ())] == 3
    asgi_app_metrics.guard_collectors()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    assert samples(generate_latest(registry).decode())[("exited_total", ())] == 3

    asgi_app_metrics.fold_dead(str(directory))
    assert empty["in the making"].exists() and not empty["left by a killed process"].exists()
    assert {path.name for path in directory.glob("*.db")} == {"counter_archive.db", empty["in the making"].name}
    assert scrape(directory)[("exited_total", ())] == 3


def test_a_service_starts_on_a_directory_with_a_file_left_empty(serve, tmp_path, python):
    """The file of a worker killed before prometheus_client sized it outlives the service: the
    next master folds it away when it starts, and counts as before."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    left = directory / f"counter_{dead_pid()}.db"
    left.touch()
    base_url, process, log = start(serve, tmp_path, directory)
    answered = send_requests(base_url, clients=2, each=30)
    values = scrape(directory)
    print(f"\n{dict(answered)}; counted {requests_by_label(values)}")
    assert process.poll() is None
    assert not left.exists()
    assert sum(requests_by_label(values).values()) == sum(answered.values()) == 60


def _answers(url):
    try:
        return httpx.get(url + "/metrics", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_made_up_methods_share_one_label_and_one_cached_child(python):
    """In-process: 50 methods no standard names are counted as OTHER, and the worker's cache of
    label children holds one entry for them, not fifty."""
    metrics = asgi_app_metrics.ServiceMetrics()
    for number in range(50):
        metrics.count(f"MADEUP{number}", 405)
    metrics.count("GET", 200)
    assert sorted(metrics._by_label) == [("GET", 200), ("OTHER", 405)]
    counted = {(sample.labels["method"], sample.labels["status"]): sample.value
               for family in metrics.requests.collect() for sample in family.samples
               if sample.name == "asgi_app_http_requests_total"}
    assert counted == {("GET", "200"): 1.0, ("OTHER", "405"): 50.0}
