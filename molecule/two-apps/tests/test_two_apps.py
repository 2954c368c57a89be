"""Two apps on one host: each its own master, workers, user, port and settings; a change of one
goes live on that one only; removing one takes all of it off the host, twice without a change the
second time, while the other keeps its processes and its clients notice nothing.

side_effect.yml recorded the apps before and during the changes (two-apps.json); the rest is
read from the host and probed over the network now, with shop removed.
"""

import json
import os
import re
import shlex
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import probes

SCENARIO = Path(__file__).resolve().parent.parent
PROCESSES = (SCENARIO / "files" / "processes.py").read_text()
# What converge.yml set for each app.
APPS = {"shop": {"port": 8000, "workers": 2}, "chat": {"port": 8001, "workers": 3}}


@pytest.fixture(scope="module")
def record():
    return json.loads((Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "two-apps.json").read_text())


@pytest.fixture(scope="module")
def removed_url():
    return os.environ["ASGI_APP_REMOVED_URL"].rstrip("/")


def processes(host, *names):
    return json.loads(host.check_output(f"python3 -c {shlex.quote(PROCESSES)} {' '.join(names)}"))


def recap(output):
    """The counts of the PLAY RECAP line of an ansible-playbook run."""
    line = next(line for line in reversed(output.splitlines()) if " changed=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


# --- Both apps, before the removal ----------------------------------------------------------

@pytest.mark.parametrize("name", APPS)
def test_each_app_answered_http_websocket_and_sse_on_its_own_port(record, name):
    report, own = record["probes"][name], record["before"][name]
    print(f"\n{name}: health {report['health']['body']}, SSE arrivals {report['sse']['arrivals']} s")
    assert report["health"]["status"] == 200
    # The port of this app reached this app: one of its own workers answered.
    assert report["health"]["body"]["pid"] in own["workers"]
    assert report["websocket"]["echoed"], report["websocket"]
    assert report["sse"]["status"] == 200 and len(report["sse"]["arrivals"]) == 5
    assert report["sse"]["smallest_gap"] > 0.05  # one by one, 0.1 s apart, not in a batch
    assert report["concurrency"]["failed"] == 0


@pytest.mark.parametrize("name", APPS)
def test_each_app_runs_its_own_master_with_its_own_workers_and_user(record, name):
    own, other = record["before"][name], record["before"][next(app for app in APPS if app != name)]
    print(f"\n{name}: master {own['main_pid']}, workers {own['workers']}, cgroup {own['cgroup']}")
    assert len(own["workers"]) == APPS[name]["workers"]
    # Everything in the service's cgroup is the master or one of its workers, as the app's user.
    assert sorted([own["main_pid"], *own["workers"]]) == own["pids"]
    assert own["users"] == [name]
    assert set(own["pids"]).isdisjoint(other["pids"])


def test_each_app_has_its_own_settings(host):
    chat = host.file("/etc/chat/gunicorn_config.py").content_string
    assert "workers = 3" in chat
    assert "set explicitly by asgi_app_workers (the io rule" in chat
    assert "Listen=0.0.0.0:8001 (Stream)" in host.check_output("systemctl show chat.socket -p Listen")


def test_a_config_change_of_one_app_hands_that_app_over_only(record):
    before, after = record["before"], record["after_config"]
    print(f"\nshop: {before['shop']['main_pid']} {before['shop']['workers']} -> "
          f"{after['shop']['main_pid']} {after['shop']['workers']}; chat: {before['chat']['workers']} -> "
          f"{after['chat']['workers']}")
    # shop went live again through its standby: a new master, new workers.
    assert after["shop"]["main_pid"] != before["shop"]["main_pid"]
    assert set(after["shop"]["workers"]).isdisjoint(before["shop"]["workers"])
    assert len(after["shop"]["workers"]) == APPS["shop"]["workers"]
    # chat was not touched.
    assert after["chat"] == before["chat"]


# --- The removal ----------------------------------------------------------------------------

def test_removing_twice_changed_nothing_the_second_time(record):
    first, second = (recap(output) for output in record["removals"])
    print(f"\nfirst removal: {first}\nsecond removal: {second}")
    assert first["failed"] == 0 and first["changed"] > 0
    assert second["failed"] == 0 and second["changed"] == 0
    # Everything was the role's: nothing was kept back.
    assert "Removing shop kept" not in record["removals"][0]


@pytest.mark.parametrize("unit", ["shop.service", "shop.socket"])
def test_removed_units_are_gone(host, unit):
    assert host.check_output(f"systemctl show {unit} -p LoadState --value") == "not-found"
    assert host.run(f"systemctl list-unit-files {unit} --no-legend").stdout.strip() == ""
    assert host.check_output(f"find /etc/systemd/system -name {unit}") == ""


@pytest.mark.parametrize("path", ["/opt/shop", "/etc/shop", "/run/shop", "/var/lib/shop",
                                  "/etc/nginx/sites-enabled/shop.conf", "/etc/nginx/sites-available/shop.conf"])
def test_removed_files_are_gone(host, path):
    assert not host.file(path).exists


def test_removed_user_and_group_are_gone(host):
    assert host.run("getent passwd shop").rc == 2
    assert host.run("getent group shop").rc == 2
    # No file on the host still belongs to the user's number or the group's.
    assert host.check_output("find / -xdev -nouser -o -xdev -nogroup | head -n 5") == ""


def test_removed_port_refuses_connections(host, removed_url):
    refused = host.run("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000), 5)'")
    assert refused.rc != 0 and "ConnectionRefusedError" in refused.stderr, refused.stderr
    with pytest.raises(httpx.HTTPError):
        probes.http_get(removed_url + "/health", timeout=5)


def test_nginx_lost_the_site_by_a_reload(record, host):
    before, after = record["untouched_before"][-1], record["untouched_after"][-1]
    print(f"\nnginx {before} -> {after}; shop through nginx before the removal: {record['through_nginx']}")
    assert record["through_nginx"] == 200
    # Reloaded, never restarted: the same master, and it no longer serves shop's port.
    assert after == before and after != "MainPID=0"
    assert host.service("nginx").is_running
    refused = host.run("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 5)'")
    assert "ConnectionRefusedError" in refused.stderr, refused.stderr


# --- The app that stays ----------------------------------------------------------------------

def test_other_app_kept_its_master_workers_and_files(record, host, service):
    before, after, now = record["after_config"]["chat"], record["after_removal"]["chat"], processes(host, "chat")
    print(f"\nchat before the removal {before['main_pid']} {before['workers']}, after "
          f"{after['main_pid']} {after['workers']}, now {now['chat']['main_pid']}")
    assert after == before
    assert now["chat"]["main_pid"] == before["main_pid"] == service["main_pid"]
    assert record["untouched_after"] == record["untouched_before"]


def test_other_app_clients_saw_nothing_during_the_removal(record):
    seen = record["clients"]
    print(f"\n{probes.format_table([{**seen, 'event': 'remove shop'}])}")
    assert seen["requests"] >= 2000 and seen["failed"] == 0, seen["errors"]
    # Each WebSocket and SSE client kept the one connection it opened, and it kept working.
    assert seen["ws_connections"] == seen["ws_clients"] and seen["ws_echoes"] > 0
    assert (seen["ws_closes"], seen["ws_resets"], seen["ws_errors"], seen["ws_connect_failures"]) == ({}, 0, 0, 0)
    assert seen["sse_streams"] == seen["sse_clients"] and seen["sse_events"] > 0
    assert seen["sse_ends"] == {"clean": 0, "broken": 0} and seen["sse_connect_failures"] == 0


def test_other_app_still_answers_http_websocket_and_sse(host, app_url, worker_pids):
    assert host.service("chat").is_running and host.service("chat.socket").is_enabled
    health = probes.http_get(app_url + "/health")
    assert health.status == 200 and health.body["pid"] in worker_pids()
    echo = probes.websocket_echo(app_url.replace("http", "ws", 1) + "/ws", ["still here"])
    assert echo.echoed, echo.error
    sse = probes.sse_events(app_url + "/sse?count=3&interval=0.2", count=3)
    assert [event["id"] for event in sse.events] == ["0", "1", "2"]
    assert sse.smallest_gap > 0.1


def test_other_app_logs_each_request_as_one_json_object(journal, app_url, worker_pids):
    """chat writes JSON access lines (asgi_app_access_log_format: json): under a few thousand
    requests across all of its workers, every one answered has its line, and every line parses."""
    marker = f"json-{time.time_ns()}"
    sent = probes.concurrent_get_across(f"{app_url}/health?probe={marker}", set(worker_pids()), requests=2400,
                                        concurrency=24)
    deadline = time.monotonic() + 10
    while True:  # written in batches, each a fraction of a second after its requests
        lines = [line for line in journal().splitlines() if marker in line]
        if len(lines) >= sent.ok or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    entries = [json.loads(line) for line in lines]
    durations = sorted(entry["duration"] for entry in entries)
    print(f"\n{sent.ok} answered ({sent.failed} failed) by {len(sent.pids)} workers in {sent.elapsed:.1f} s; "
          f"{len(lines)} JSON lines; duration p50 {durations[len(durations) // 2]:.6f} s, "
          f"max {durations[-1]:.6f} s\nfirst: {lines[0]}")
    assert sent.ok == sent.requests >= 2400 and len(sent.pids) == 3
    assert len(entries) == sent.ok
    assert {(entry["method"], entry["path"], entry["query"], entry["status"]) for entry in entries} == {
        ("GET", "/health", f"probe={marker}", 200)}
    assert all(isinstance(entry["duration"], float) and 0 <= entry["duration"] < 60 for entry in entries)
    assert len({entry["request_id"] for entry in entries}) == len(entries)


# chat's metrics (asgi_app_metrics), read on the host as a Prometheus there would: the text format
# of chat-metrics.service, parsed with prometheus_client's parser.
SCRAPE = ("import urllib.request; "
          "print(urllib.request.urlopen('http://127.0.0.1:9464/metrics', timeout=5).read().decode())")


def scrape(host):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(host.check_output(f"python3 -c {shlex.quote(SCRAPE)}"))
            for sample in family.samples}


def answered(values):
    return sum(value for (name, _labels), value in values.items() if name == "asgi_app_http_requests_total")


def test_other_app_metrics_count_every_request_across_its_workers_and_one_recycled(host, app_url, worker_pids):
    """N requests across chat's three workers, one of its workers replaced in between (SIGTERM: it
    finishes what it holds, gunicorn starts another): the requests counter rises by exactly N, the
    latency histogram counts each, the exit is counted, nothing is left in flight."""
    before = scrape(host)
    first = probes.concurrent_get(f"{app_url}/health", requests=1500, concurrency=15)
    workers = worker_pids()
    host.run_expect([0], f"kill -TERM {workers[0]}")
    deadline = time.monotonic() + 30
    while (len(worker_pids()) != 3 or workers[0] in worker_pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    replacement = set(worker_pids()) - set(workers)
    second = probes.concurrent_get_across(f"{app_url}/health", replacement, requests=1500, concurrency=15)
    sent = first.ok + second.ok
    deadline = time.monotonic() + 5
    while answered(after := scrape(host)) - answered(before) < sent and time.monotonic() < deadline:
        time.sleep(0.2)  # a count is written as its response ends, a moment after the client has it
    counted = answered(after) - answered(before)
    exits = after[("asgi_app_worker_exits_total", ())] - before.get(("asgi_app_worker_exits_total", ()), 0)
    histogram = (after[("asgi_app_http_request_duration_seconds_count", ())]
                 - before[("asgi_app_http_request_duration_seconds_count", ())])
    print(f"\nasgi_app_http_requests_total before {answered(before):.0f}, after {answered(after):.0f}: "
          f"+{counted:.0f} for {sent} requests answered ({first.failed + second.failed} failed) by "
          f"{len(first.pids | second.pids)} workers; worker exits +{exits:.0f}; histogram count +{histogram:.0f}")
    assert first.failed == second.failed == 0 and sent == first.requests + second.requests >= 3000
    assert len(replacement) == 1 and replacement <= second.pids  # the one in place of the replaced answered
    assert counted == sent and histogram == sent
    assert exits == 1
    assert after[("asgi_app_http_requests_in_flight", ())] == 0


def test_other_app_metrics_are_refused_from_outside_the_host(host):
    """The metrics port, published on the machine: its packets come from outside the host (Docker's
    bridge), which chat-metrics.service drops (IPAddressDeny=any; the host itself only)."""
    unit = host.check_output("systemctl show -p IPAddressDeny -p IPAddressAllow chat-metrics.service")
    with pytest.raises(httpx.HTTPError) as refused:
        httpx.get(os.environ["ASGI_APP_METRICS_URL"] + "/metrics", timeout=5)
    print(f"\n{unit}\nfrom the machine: {type(refused.value).__name__}; from the host: "
          f"{len(scrape(host))} samples")
    deny = next(line for line in unit.splitlines() if line.startswith("IPAddressDeny="))
    assert {"0.0.0.0/0", "::/0"} <= set(deny.removeprefix("IPAddressDeny=").split()), unit
    assert scrape(host)
