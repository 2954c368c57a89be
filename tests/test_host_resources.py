"""host_resources.py on copies of /proc and /sys as hosts of several kinds show them."""

import json
import subprocess
import sys

import pytest

MEMINFO = "MemTotal:       16384000 kB\nMemFree:        1000 kB\n"
LIMITS = ("Limit                     Soft Limit           Hard Limit           Units\n"
          "Max open files            1024                 524288               files\n")


def make_tree(root, files):
    for path, content in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return root


def base(online="0-7", allowed="0-7", cgroup="0::/init.scope\n"):
    return {
        "/sys/devices/system/cpu/online": online + "\n",
        "/proc/1/status": f"Name:\tsystemd\nCpus_allowed_list:\t{allowed}\n",
        "/proc/1/cgroup": cgroup,
        "/proc/meminfo": MEMINFO,
        "/proc/1/limits": LIMITS,
    }


def test_bare_metal_cgroup_v2(tmp_path, host_resources):
    root = make_tree(tmp_path, {**base(), "/sys/fs/cgroup/cpu.max": "max 100000\n",
                                "/sys/fs/cgroup/system.slice/cpu.max": "max 100000\n"})
    assert host_resources.collect(str(root)) == {
        "online_cpus": 8, "affinity_cpus": 8, "cpu_quota": None, "memory_mb": 16000,
        "nofile_hard": 524288}


def test_affinity_of_the_service_manager(tmp_path, host_resources):
    root = make_tree(tmp_path, base(online="0-15", allowed="0-1,8-9"))
    result = host_resources.collect(str(root))
    assert (result["online_cpus"], result["affinity_cpus"]) == (16, 4)


def test_cgroup_v2_container_quota_and_memory(tmp_path, host_resources):
    files = base(cgroup="0::/docker/abc/init.scope\n")
    files.update({
        "/sys/fs/cgroup/docker/abc/cpu.max": "150000 100000\n",
        "/sys/fs/cgroup/docker/abc/memory.max": str(2 * 1024**3) + "\n",
        "/sys/fs/cgroup/docker/abc/system.slice/cpu.max": "max 100000\n",
        "/sys/fs/cgroup/docker/cpu.max": "400000 100000\n",
    })
    result = host_resources.collect(str(make_tree(tmp_path, files)))
    assert result["cpu_quota"] == 1.5
    assert result["memory_mb"] == 2048


def test_quota_on_the_services_slice_counts(tmp_path, host_resources):
    files = base(cgroup="0::/init.scope\n")
    files["/sys/fs/cgroup/system.slice/cpu.max"] = "200000 100000\n"
    assert host_resources.collect(str(make_tree(tmp_path, files)))["cpu_quota"] == 2.0


def test_cgroup_v1_hybrid_host(tmp_path, host_resources):
    files = base(cgroup="4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc/init.scope\n")
    files.update({
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_quota_us": "-1\n",
        "/sys/fs/cgroup/cpu,cpuacct/docker/cpu.cfs_period_us": "100000\n",
        "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": str(1024**3) + "\n",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    })
    result = host_resources.collect(str(make_tree(tmp_path, files)))
    assert result["cpu_quota"] == 3.0
    assert result["memory_mb"] == 1024


def test_unlimited_v1_memory_is_no_limit(tmp_path, host_resources):
    files = base(cgroup="4:memory:/\n0::/\n")
    files["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712\n"
    assert host_resources.collect(str(make_tree(tmp_path, files)))["memory_mb"] == 16000


@pytest.mark.parametrize("text, count", [("0", 1), ("0-3", 4), ("0-3,8,10-11", 7), ("", 0)])
def test_cpu_lists(host_resources, text, count):
    assert host_resources.count_cpu_list(text) == count


def test_runs_as_a_script_and_prints_json(tmp_path, host_resources):
    root = make_tree(tmp_path, base(online="0-3", allowed="0-3"))
    out = subprocess.run([sys.executable, host_resources.__file__, "--root", str(root)],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["online_cpus"] == 4


def test_feeds_the_worker_plan(tmp_path, host_resources, sizing):
    files = base(online="0-31", allowed="0-31", cgroup="0::/machine/vm1/init.scope\n")
    files["/sys/fs/cgroup/machine/vm1/cpu.max"] = "400000 100000\n"
    plan = sizing.worker_plan(host_resources.collect(str(make_tree(tmp_path, files))), "mixed")
    assert plan["workers"] == 9
    assert "limited by cgroup CPU quota" in plan["cpus"]
