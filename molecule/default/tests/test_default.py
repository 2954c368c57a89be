"""What a user of the deployed app would check, on the host and over the network."""

import time

import probes
from served import (  # noqa: F401 (collected by pytest as this module's tests)
    test_health_answers_200,
    test_running_workers_are_uvicorn_workers,
    test_sse_events_arrive_separately,
    test_websocket_handshake_and_echo,
)


def test_unit_is_active_and_enabled(host, service):
    unit = host.service(service["unit"].removesuffix(".service"))
    assert unit.is_running
    assert unit.is_enabled


def test_listening_socket_is_held_by_systemd(host, service, journal):
    name = service["unit"].removesuffix(".service")
    socket = host.service(f"{name}.socket")
    assert socket.is_running
    assert socket.is_enabled
    assert "Listen=0.0.0.0:8000 (Stream)" in host.check_output(f"systemctl show {name}.socket -p Listen")
    # gunicorn took the socket systemd passed (LISTEN_FDS): binding the address itself, which
    # systemd holds, would have failed with "Connection in use".
    assert f"Triggers={service['unit']}" in host.check_output(f"systemctl show {name}.socket -p Triggers")
    assert "Connection in use" not in journal()


def test_master_is_gunicorn_running_as_app_user(host, service, process, app_name):
    user, args = process(service["main_pid"])
    assert user == app_name
    assert service["user"] == app_name
    assert args.startswith("gunicorn: master"), args
    exec_start = host.check_output(f"systemctl show {service['unit']} -p ExecStart")
    assert f"path=/opt/{app_name}/current/venv/bin/gunicorn " in exec_start, exec_start


def test_worker_count_matches_rule_for_target_cpus(usable_cores, worker_pids):
    cores = usable_cores["cores"]
    by_cpu = 2 * cores + 1  # the default workload is "mixed"
    by_memory = max(1, int(usable_cores["memory_mb"] * 0.8) // 150)
    expected = min(by_cpu, by_memory)
    workers = worker_pids()
    print(f"\ntarget: {usable_cores}; expected {expected} workers (mixed: 2 x {cores} + 1 = {by_cpu}, "
          f"memory allows {by_memory}); running: {len(workers)}")
    assert len(workers) == expected


def test_each_request_reaches_the_journal_as_one_access_line(journal, app_url):
    """Access lines are written in batches: each arrives, whole, a fraction of a second later."""
    marker = f"access-{time.time_ns()}"
    for number in range(3):
        assert probes.http_get(f"{app_url}/health?probe={marker}-{number}").status == 200
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in journal().splitlines() if marker in line]
        if len(lines) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert sorted(line.split(" - ", 1)[1] for line in lines) == [
        f'"GET /health?probe={marker}-{number} HTTP/1.1" 200' for number in range(3)]


def test_journal_keeps_a_busy_access_log(host, service):
    """journald's default rate limit would drop most of a busy access log; the unit raises it."""
    limits = host.check_output(
        f"systemctl show -p LogRateLimitIntervalUSec -p LogRateLimitBurst {service['unit']}")
    assert limits.splitlines() == ["LogRateLimitIntervalUSec=30s", "LogRateLimitBurst=1000000"]


def test_config_passes_gunicorn_check_config(host, app_name):
    # As the service runs it: the live release's gunicorn, in its working directory.
    result = host.run(f"/opt/{app_name}/current/venv/bin/gunicorn --check-config "
                      f"--config /etc/{app_name}/gunicorn_config.py --chdir /opt/{app_name}/current/app")
    assert result.rc == 0, result.stderr


def test_io_endpoint_serves_concurrently(app_url, worker_pids):
    requests, delay = 200, 0.5
    workers = len(worker_pids())
    result = probes.concurrent_get(app_url + f"/io?delay={delay}", requests, concurrency=requests)
    serial_bound = requests * delay / workers
    print(f"\n{requests} x {delay} s on {workers} workers: {result.elapsed:.2f} s "
          f"(one request at a time per worker would take {serial_bound:.0f} s)")
    assert result.failed == 0, result.errors
    assert result.elapsed < serial_bound / 4


def test_open_files_limit_is_raised_as_far_as_the_host_allows(host, service):
    def nofile(pid):
        line = next(line for line in host.file(f"/proc/{pid}/limits").content_string.splitlines()
                    if line.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        return int(soft), int(hard)

    asked = 65536  # asgi_app_limit_nofile's default
    ceiling = nofile(1)[1]  # what systemd itself may hand out on this host
    got = nofile(service["main_pid"])
    print(f"\nLimitNOFILE={asked}; the host allows {ceiling}; the master runs with {got}")
    assert got[0] == min(asked, ceiling)


def test_unit_is_sandboxed(host, service):
    """systemd's score of the unit's sandbox (0 to 10, lower is tighter), with what still counts."""
    out = host.check_output(f"systemd-analyze security {service['unit']} --no-pager")
    lines = out.splitlines()
    exposure = float(lines[-1].split("level for")[1].split(":")[1].split()[0])
    print("\n" + "\n".join(line.rstrip() for line in lines[1:-1] if line.strip() and not line.startswith("✓")))
    print(lines[-1])
    assert exposure <= 1.2
