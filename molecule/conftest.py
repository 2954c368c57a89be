"""Fixtures shared by every scenario's testinfra tests.

A scenario's molecule.yml names the app and, when it is reachable from the machine, its URL,
through the verifier's environment (ASGI_APP_NAME, ASGI_APP_URL). When a test fails, the
service's journal is attached to the report, so a red run explains itself.
"""

import json
import math
import os
import shlex

import pytest

# Run on the target with its python3: the CPUs and memory the running service may use, read
# from its own process and its own cgroup (not from the role's facts, not from the config).
SERVICE_RESOURCES = r"""
import json, os, re, sys
pid = int(sys.argv[1])
quotas = []
limits = [int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) * 1024]
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
                # The service's own limit (MemoryMax=) is the role's doing, not what the host gives.
                mem_max = read(f"{base}{directory}/memory.max") if directory != path else None
                if mem_max and mem_max != "max":
                    limits.append(int(mem_max))
        if "cpu" in controllers.split(","):
            base = f"/sys/fs/cgroup/{controllers}{directory}"
            quota, period = read(f"{base}/cpu.cfs_quota_us"), read(f"{base}/cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                quotas.append(int(quota) / int(period))
        if "memory" in controllers.split(","):
            limit = read(f"/sys/fs/cgroup/{controllers}{directory}/memory.limit_in_bytes")
            if limit and int(limit) < 1 << 60 and directory != path:
                limits.append(int(limit))
print(json.dumps({"online": os.cpu_count(), "affinity": len(os.sched_getaffinity(pid)),
                  "quota": min(quotas) if quotas else None, "memory_mb": min(limits) // 2**20}))
"""

# Run on the target: GET a path through a unix socket; prints the status, then the body.
UNIX_SOCKET_GET = r"""
import http.client, socket, sys
class Connection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])
connection = Connection("localhost", timeout=10)
connection.request("GET", sys.argv[2])
response = connection.getresponse()
print(response.status)
print(response.read().decode())
"""


@pytest.fixture(scope="module")
def app_name():
    return os.environ["ASGI_APP_NAME"]


@pytest.fixture(scope="module")
def app_url():
    return os.environ["ASGI_APP_URL"].rstrip("/")


@pytest.fixture(scope="module")
def service(host, app_name):
    """The running unit as systemd sees it: main PID, invocation, user, stop timeout."""
    unit = f"{app_name}.service"
    props = host.check_output(
        f"systemctl show {unit} -p MainPID -p InvocationID -p User -p TimeoutStopUSec")
    values = dict(line.split("=", 1) for line in props.splitlines())
    return {"unit": unit, "main_pid": int(values["MainPID"]), "invocation": values["InvocationID"],
            "user": values["User"], "timeout_stop": values["TimeoutStopUSec"]}


@pytest.fixture(scope="module")
def journal(host, service):
    """Reads the lines the service logged since it last started."""

    def read():
        return host.check_output(
            "journalctl --no-pager -o cat "
            f"_SYSTEMD_INVOCATION_ID={shlex.quote(service['invocation'])}")

    return read


@pytest.fixture
def process(host):
    """(user, args) of a process, read with ps."""

    def read(pid):
        user, args = host.check_output(f"ps -o user=,args= -p {pid}").split(None, 1)
        return user, args

    return read


@pytest.fixture
def worker_pids(host, service):
    """Reads the PIDs of the master's children, the workers."""

    def read():
        return [int(pid) for pid in
                host.check_output(f"ps --ppid {service['main_pid']} -o pid=").split()]

    return read


@pytest.fixture(scope="module")
def usable_cores(host, service):
    """CPUs the service may use, computed here from the target: min(online, affinity, quota)."""
    resources = json.loads(host.check_output(
        f"python3 -c {shlex.quote(SERVICE_RESOURCES)} {service['main_pid']}"))
    quota = resources["quota"]
    resources["cores"] = min(resources["online"], resources["affinity"],
                             math.ceil(quota) if quota else resources["online"])
    return resources


@pytest.fixture
def get_on_target(host):
    """GET a path through the app's unix socket, from inside the target: (status, body)."""

    def get(socket_path, path):
        out = host.check_output(
            f"python3 -c {shlex.quote(UNIX_SOCKET_GET)} {shlex.quote(socket_path)} {shlex.quote(path)}")
        status, _, body = out.partition("\n")
        return int(status), body

    return get


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    host = item.funcargs.get("host")
    name = os.environ.get("ASGI_APP_NAME")
    if host is None or not name:
        return
    lines = host.run(f"journalctl --unit {name}.service --lines 40 --no-pager").stdout
    report.sections.append((f"journal of {name}.service (last 40 lines)", lines))
