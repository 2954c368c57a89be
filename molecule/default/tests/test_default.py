"""What a user of the deployed app would check, on the host and over the network."""

import json
import math
import shlex

import probes

# Read on the target: the CPUs and memory the running service may use, from its own process
# and its own cgroup (not from the role's facts, not from the rendered config).
SERVICE_RESOURCES = r"""
import json, os, re, sys
pid = int(sys.argv[1])
online = os.cpu_count()
affinity = len(os.sched_getaffinity(pid))
quotas, limits = [], []
meminfo = open("/proc/meminfo").read()
limits.append(int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1)) * 1024)
def ancestors(path):
    while True:
        yield path
        if path in ("", "/"):
            return
        path = os.path.dirname(path)
def read(path):
    try:
        return open(path).read().strip()
    except OSError:
        return None
for line in open(f"/proc/{pid}/cgroup"):
    _, controllers, path = line.strip().split(":", 2)
    for directory in ancestors(path):
        if controllers == "":
            for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                cpu_max = read(f"{base}{directory}/cpu.max")
                if cpu_max and not cpu_max.startswith("max"):
                    quota, period = cpu_max.split()
                    quotas.append(int(quota) / int(period))
                mem_max = read(f"{base}{directory}/memory.max")
                if mem_max and mem_max != "max":
                    limits.append(int(mem_max))
        if "cpu" in controllers.split(","):
            base = f"/sys/fs/cgroup/{controllers}{directory}"
            quota, period = read(f"{base}/cpu.cfs_quota_us"), read(f"{base}/cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                quotas.append(int(quota) / int(period))
        if "memory" in controllers.split(","):
            limit = read(f"/sys/fs/cgroup/{controllers}{directory}/memory.limit_in_bytes")
            if limit and int(limit) < 1 << 60:
                limits.append(int(limit))
print(json.dumps({"online": online, "affinity": affinity,
                  "quota": min(quotas) if quotas else None,
                  "memory_mb": min(limits) // 2**20}))
"""


def process(host, pid):
    """(user, args) of a process, read with ps."""
    user, args = host.check_output(f"ps -o user=,args= -p {pid}").split(None, 1)
    return user, args


def worker_pids(host, service):
    return [int(pid) for pid in host.check_output(
        f"ps --ppid {service['main_pid']} -o pid=").split()]


def test_unit_is_active_and_enabled(host, service):
    unit = host.service(service["unit"].removesuffix(".service"))
    assert unit.is_running
    assert unit.is_enabled


def test_master_is_gunicorn_running_as_app_user(host, service, app_name):
    user, args = process(host, service["main_pid"])
    assert user == app_name
    assert service["user"] == app_name
    assert args.startswith("gunicorn: master"), args
    exec_start = host.check_output(f"systemctl show {service['unit']} -p ExecStart")
    assert f"path=/opt/{app_name}/venv/bin/gunicorn " in exec_start, exec_start


def test_worker_count_matches_rule_for_target_cpus(host, service):
    resources = json.loads(host.check_output(
        f"python3 -c {shlex.quote(SERVICE_RESOURCES)} {service['main_pid']}"))
    cores = min(resources["online"], resources["affinity"],
                math.ceil(resources["quota"]) if resources["quota"] else resources["online"])
    by_cpu = 2 * cores + 1  # the default workload is "mixed"
    by_memory = max(1, int(resources["memory_mb"] * 0.8) // 150)
    expected = min(by_cpu, by_memory)
    workers = worker_pids(host, service)
    print(f"target: {resources}; expected {expected} workers (mixed: 2 x {cores} + 1 = {by_cpu}, "
          f"memory allows {by_memory}); running: {len(workers)}")
    assert len(workers) == expected


def test_running_workers_are_uvicorn_workers(host, service, journal):
    log = journal()
    assert "Using worker: UvicornWorker" in log
    # Each live worker process logged Uvicorn's own start-up line with its PID.
    for pid in worker_pids(host, service):
        assert f"Started server process [{pid}]" in log, f"worker {pid} is not running Uvicorn"
        assert process(host, pid)[0] == service["user"]
    # The class running is a subclass of uvicorn_worker.UvicornWorker (the config's own).
    assert "class UvicornWorker(_UvicornWorkerBase)" in host.file(
        f"/etc/{service['user']}/gunicorn_config.py").content_string


def test_config_passes_gunicorn_check_config(host, app_name):
    result = host.run(f"/opt/{app_name}/venv/bin/gunicorn --check-config "
                      f"--config /etc/{app_name}/gunicorn_config.py")
    assert result.rc == 0, result.stderr


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
    print(f"SSE arrivals: {[round(e['arrived'], 3) for e in result.events]}")
    assert result.status == 200
    assert result.content_type.startswith("text/event-stream")
    assert [event["id"] for event in result.events] == ["0", "1", "2", "3", "4"]
    # Buffered events would arrive together; these come one interval apart.
    assert result.smallest_gap > interval / 2
    assert result.spread > 4 * interval * 0.8


def test_io_endpoint_serves_concurrently(host, service, app_url):
    requests, delay = 200, 0.5
    workers = len(worker_pids(host, service))
    result = probes.concurrent_get(app_url + f"/io?delay={delay}", requests, concurrency=requests)
    serial_bound = requests * delay / workers
    print(f"{requests} x {delay} s on {workers} workers: {result.elapsed:.2f} s "
          f"(one request at a time per worker would take {serial_bound:.0f} s)")
    assert result.failed == 0, result.errors
    assert result.elapsed < serial_bound / 4
