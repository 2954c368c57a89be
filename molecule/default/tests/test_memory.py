"""The service's memory is capped at its memory budget (MemoryMax, MemoryHigh), and a process of
the service that passes the cap is killed by the kernel while the service and its other workers
serve on: the workers ask to be killed before the master, and systemd does not stop the service
for it (OOMPolicy=continue)."""

import shlex
import threading
import time

import pytest

import probes

MB = 1 << 20


def unit_memory(host, unit):
    props = host.check_output(f"systemctl show {unit} -p MemoryMax -p MemoryHigh -p OOMPolicy -p ControlGroup")
    return dict(line.split("=", 1) for line in props.splitlines())


def test_the_service_is_capped_at_its_memory_budget(host, service, worker_pids):
    memory = unit_memory(host, service["unit"])
    host_mb = int(host.check_output("awk '/MemTotal/ {print $2}' /proc/meminfo")) // 1024
    workers = len(worker_pids())
    limit_mb, high_mb = int(memory["MemoryMax"]) // MB, int(memory["MemoryHigh"]) // MB
    print(f"\n{service['unit']}: MemoryMax {limit_mb} MB, MemoryHigh {high_mb} MB, {workers} workers, "
          f"host {host_mb} MB")
    # The default budget: 80 % of what the host has, which holds the workers at 150 MB each.
    assert workers * 150 <= limit_mb <= host_mb * 0.8
    assert high_mb == limit_mb * 9 // 10
    assert memory["OOMPolicy"] == "continue"


def test_workers_are_killed_before_the_master(host, service, worker_pids):
    master = int(host.check_output(f"cat /proc/{service['main_pid']}/oom_score_adj"))
    for pid in worker_pids():
        assert int(host.check_output(f"cat /proc/{pid}/oom_score_adj")) >= master + 500


class Memory:
    """The service's memory cgroup, on the unified hierarchy (cgroup v2) or the legacy one (v1,
    where systemd writes MemoryMax= as memory.limit_in_bytes and has no MemoryHigh)."""

    def __init__(self, host, unit):
        self.host = host
        # systemd's ControlGroup is the path from the machine's root; a container sees its own part.
        found = host.check_output(
            f"find /sys/fs/cgroup -type d -path '*/system.slice/{unit}' "
            r"\( -path '/sys/fs/cgroup/memory/*' -o -path '/sys/fs/cgroup/system.slice/*' \) -print -quit")
        assert found, host.check_output("mount -t cgroup,cgroup2")
        self.path, self.unified = found, not found.startswith("/sys/fs/cgroup/memory/")

    def used_mb(self):
        name = "memory.current" if self.unified else "memory.usage_in_bytes"
        return int(self.host.check_output(f"cat {self.path}/{name}")) // MB

    def kills(self):
        """How many processes the kernel killed in it for passing its limit."""
        events = self.host.check_output(f"cat {self.path}/{'memory.events' if self.unified else 'memory.oom_control'}")
        return int(dict(line.split() for line in events.splitlines()).get("oom_kill", 0))


@pytest.fixture
def tight_memory(host, service):
    """The service's MemoryMax lowered, for this test only, to what it uses now plus 150 MB."""
    unit = service["unit"]
    memory = Memory(host, unit)
    limit_mb = memory.used_mb() + 150
    host.check_output(f"systemctl set-property --runtime {unit} MemoryMax={limit_mb}M MemoryHigh=infinity")
    yield memory, limit_mb
    host.check_output(f"rm -rf /run/systemd/system.control/{unit}.d && systemctl daemon-reload")
    assert int(unit_memory(host, unit)["MemoryMax"]) // MB > limit_mb


def test_a_process_past_the_limit_is_killed_and_the_others_serve_on(host, service, worker_pids, app_url,
                                                                    tight_memory):
    memory, limit_mb = tight_memory
    workers, kills = sorted(worker_pids()), memory.kills()
    answers, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            try:
                answers.append(probes.http_get(f"{app_url}/health", timeout=3).status)
            except Exception as error:  # noqa: BLE001 - a failed request is what is counted
                answers.append(repr(error))
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        # A process of the service that grows without end, as a worker an abusive client feeds
        # would: it joins the service's cgroup and asks to go first as the workers do.
        grow = ("echo $$ > {cgroup}/cgroup.procs && echo 500 > /proc/self/oom_score_adj && exec python3 -c "
                "'import time\nheld = []\nwhile True:\n    held.append(b\"x\" * (8 << 20))\n    time.sleep(0.05)'")
        since, started = int(time.time()), time.monotonic()
        result = host.run(f"timeout 60 sh -c {shlex.quote(grow.format(cgroup=memory.path))}")
        took = time.monotonic() - started
        time.sleep(1)
    finally:
        stop.set()
        prober.join()
    failed = [answer for answer in answers if answer != 200]
    print(f"\ngrowing process ended with {result.rc} after {took:.1f} s at MemoryMax {limit_mb} MB "
          f"(cgroup {'v2' if memory.unified else 'v1'}); {len(answers)} requests meanwhile, {len(failed)} failed")
    assert result.rc == 137, (result.rc, result.stderr)  # SIGKILL
    assert memory.kills() == kills + 1  # by the kernel, for passing the limit
    if memory.unified:  # systemd learns of it from memory.events, on cgroup v2 only
        said = host.check_output(f"journalctl --no-pager -o cat -u {service['unit']} --since @{since}")
        assert "killed by the OOM killer" in said, said
    assert host.service(service["unit"].removesuffix(".service")).is_running
    assert int(host.check_output(f"systemctl show -p MainPID --value {service['unit']}")) == service["main_pid"]
    assert sorted(worker_pids()) == workers
    assert len(answers) > 10 and not failed, failed
