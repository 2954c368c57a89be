#!/usr/bin/env python3
"""Print, as JSON, the resources a new systemd service on this host may really use.

Read-only. The service manager: the name of PID 1 ("systemd" on a systemd host). CPUs: online
CPUs, the CPU affinity of the service manager (PID 1, which services inherit) and the tightest
cgroup CPU quota above the services' slice (cgroup v2 cpu.max or v1 cpu.cfs_quota_us). Memory:
MemTotal and the tightest cgroup memory limit. Also the open-files hard limit services start
with, and whether the interpreter running it already has what the role's virtualenvs need from
the OS: ``ensurepip`` (Debian ships it only in python3.X-venv) and ``packaging`` (Ansible's pip
module compares versions with it). With ``--app-root``, what a deploy has left there: the
release directories (mtime, and whether their build finished: ``.complete``) and the release
``current`` points to, so a re-run needs no other read of them. Runs with the target's python3
(asgi_app_python) and its standard library only; ``--root`` points it at a copy of /proc, /sys
and the app's directory for tests.
"""

import argparse
import importlib.util
import json
import os
import re

UNLIMITED_V1 = 1 << 60  # cgroup v1 reports "no memory limit" as a number near 2**63


def read(root, path):
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return None


def count_cpu_list(text):
    """'0-3,8,10-11' -> 7"""
    total = 0
    for part in filter(None, (text or "").split(",")):
        low, _, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def pid1_cgroups(root):
    """{controller: path} of PID 1; cgroup v2 is under the key ''. init.scope is left out."""
    paths = {}
    for line in (read(root, "/proc/1/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if path.endswith("/init.scope"):
            path = path[: -len("/init.scope")]
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller.replace("name=", "")] = path or "/"
    return paths


def candidate_dirs(path):
    """The services' slice below the manager's cgroup, then each ancestor up to the root."""
    dirs = [os.path.join(path, "system.slice")]
    while True:
        dirs.append(path)
        if path in ("", "/"):
            return dirs
        path = os.path.dirname(path)


def cpu_quota(root, cgroups):
    quotas = []
    if "" in cgroups:
        for directory in candidate_dirs(cgroups[""]):
            value = read(root, f"/sys/fs/cgroup/{directory}/cpu.max")
            if value and not value.startswith("max"):
                quota, period = value.split()
                quotas.append(int(quota) / int(period))
    for controller in ("cpu", "cpuacct"):
        if controller not in cgroups:
            continue
        for mount in ("cpu,cpuacct", "cpu"):
            for directory in candidate_dirs(cgroups[controller]):
                quota = read(root, f"/sys/fs/cgroup/{mount}/{directory}/cpu.cfs_quota_us")
                period = read(root, f"/sys/fs/cgroup/{mount}/{directory}/cpu.cfs_period_us")
                if quota and period and int(quota) > 0:
                    quotas.append(int(quota) / int(period))
    return min(quotas) if quotas else None


def memory_mb(root, cgroups):
    meminfo = read(root, "/proc/meminfo") or ""
    match = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE)
    limits = [int(match.group(1)) * 1024] if match else []
    if "" in cgroups:
        for directory in candidate_dirs(cgroups[""]):
            value = read(root, f"/sys/fs/cgroup/{directory}/memory.max")
            if value and value != "max":
                limits.append(int(value))
    if "memory" in cgroups:
        for directory in candidate_dirs(cgroups["memory"]):
            value = read(root, f"/sys/fs/cgroup/memory/{directory}/memory.limit_in_bytes")
            if value and int(value) < UNLIMITED_V1:
                limits.append(int(value))
    return min(limits) // (1024 * 1024) if limits else None


def nofile_hard(root):
    for line in (read(root, "/proc/1/limits") or "").splitlines():
        if line.startswith("Max open files"):
            value = line.split()[4]
            return None if value == "unlimited" else int(value)
    return None


def service_manager(root):
    """The name of PID 1. systemd names itself "systemd"; should PID 1 still be called "init",
    systemd's runtime directory says whether systemd booted the host (sd_booted)."""
    name = read(root, "/proc/1/comm")
    if name in (None, "", "init") and os.path.isdir(os.path.join(root, "run/systemd/system")):
        return "systemd"
    return name or "unknown"


def python_venv():
    """True when this interpreter has what the OS packages of install.yml add to it."""
    return all(importlib.util.find_spec(name) is not None for name in ("ensurepip", "packaging"))


def app_state(root, app_root):
    """The releases under APP_ROOT/releases as prune.yml's find lists them (directories, not
    hidden, links not followed) and the release APP_ROOT/current points to ('' if none)."""
    base = os.path.join(root, app_root.lstrip("/"))
    releases = []
    try:
        entries = sorted(os.scandir(os.path.join(base, "releases")), key=lambda entry: entry.name)
    except OSError:
        entries = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        releases.append({
            "path": f"{app_root}/releases/{entry.name}",
            "mtime": entry.stat(follow_symlinks=False).st_mtime,
            "complete": os.path.lexists(os.path.join(entry.path, ".complete")),
        })
    current = ""
    link = os.path.join(base, "current")
    if os.path.islink(link):
        # The role writes it as an absolute path; a relative one counts from app_root.
        current = os.path.normpath(os.path.join(app_root, os.readlink(link)))
    return {"releases": releases, "current": current}


def collect(root="/", app_root=None):
    cgroups = pid1_cgroups(root)
    online = count_cpu_list(read(root, "/sys/devices/system/cpu/online")) or os.cpu_count()
    affinity = None
    status = read(root, "/proc/1/status") or ""
    match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.MULTILINE)
    if match:
        affinity = count_cpu_list(match.group(1))
    return {
        "service_manager": service_manager(root),
        "online_cpus": online,
        "affinity_cpus": affinity or online,
        "cpu_quota": cpu_quota(root, cgroups),
        "memory_mb": memory_mb(root, cgroups),
        "nofile_hard": nofile_hard(root),
        "python_venv": python_venv(),
        **({"app": app_state(root, app_root)} if app_root else {}),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/", help="where /proc and /sys are (tests)")
    parser.add_argument("--app-root", help="the app's directory (asgi_app_root): its releases")
    args = parser.parse_args()
    print(json.dumps(collect(args.root, args.app_root), sort_keys=True))
