"""What every deployment of the example app answers, whichever way the role got there.

Scenarios import these tests (`from served import ...`): the default deploy from the repository
and the galaxy scenario's deploy through the installed collection are judged alike.
"""

import probes


def test_running_workers_are_uvicorn_workers(host, service, journal, process, worker_pids):
    log = journal()
    assert "Using worker: UvicornWorker" in log
    # Each live worker process logged Uvicorn's own start-up line with its PID.
    workers = worker_pids()
    assert workers
    for pid in workers:
        assert f"Started server process [{pid}]" in log, f"worker {pid} is not running Uvicorn"
        assert process(pid)[0] == service["user"]
    # The class that runs is the role's worker (asgi_app_worker, in the release's virtualenv)
    # on uvicorn_worker.UvicornWorker.
    config = host.file(f"/etc/{service['user']}/gunicorn_config.py").content_string
    assert 'worker_class = asgi_app_worker.uvicorn_worker_class(\n    "uvicorn_worker.UvicornWorker",' in config
    assert "Using worker: UvicornWorker(uvicorn_worker.UvicornWorker)" in log


def test_health_answers_200(app_url):
    result = probes.http_get(app_url + "/health")
    assert result.status == 200
    assert result.body["status"] == "ok"


def test_websocket_handshake_and_echo(app_url):
    messages = ["hello", "über", "x" * 4096]
    result = probes.websocket_echo(app_url.replace("http", "ws", 1) + "/ws", messages)
    assert result.handshake, result.error
    assert result.received == [f"echo: {m}" for m in messages]
    assert result.close_code == 1000


def test_sse_events_arrive_separately(app_url):
    interval = 0.2
    result = probes.sse_events(app_url + f"/sse?count=5&interval={interval}", count=5)
    print(f"\nSSE arrivals: {[round(e['arrived'], 3) for e in result.events]} s")
    assert result.status == 200
    assert result.content_type.startswith("text/event-stream")
    assert [event["id"] for event in result.events] == ["0", "1", "2", "3", "4"]
    # Buffered events would arrive together; these come one interval apart.
    assert result.smallest_gap > interval / 2
    assert result.spread > 4 * interval * 0.8
