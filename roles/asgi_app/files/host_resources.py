"""Print, as JSON, the resources a new systemd service on this host may really use.

Read-only. The service manager: the name of PID 1 ("systemd" on a systemd host). CPUs: online
CPUs, the CPU affinity of the service manager (PID 1, which services inherit) and the tightest
cgroup CPU quota above the services' slice (cgroup v2 cpu.max or v1 cpu.cfs_quota_us). Memory:
MemTotal and the tightest cgroup memory limit. Also the open-files hard limit services start
with, and whether the interpreter running it already has what pip's virtualenvs need from the
OS: ``ensurepip``, which Debian ships only in python3.X-venv (uv needs nothing). The machine's
architecture (uname -m) and, with ``--uv``, the version of the uv binary there ("" when it is
missing or does not run), so the role fetches uv only for a host that lacks it. The apps the
role runs on this host already, found by the units it writes, so that a new one neither takes
their port nor counts on their memory. With ``--app-root``, what a deploy has left there: the
release directories (mtime, and whether their build finished: ``.complete``) and the release
``current`` points to, so a re-run needs no other read of them; and, for a removal, what that
directory and each ``--app-dir`` hold and the ``--user`` and ``--group`` as /etc/passwd and
/etc/group have them. With ``--app-name``, the units the role wrote for the app's processes and
timers (each carries ``X-AsgiApp=NAME``, which systemd ignores) and which of them are enabled, so
a deploy stops and removes those no longer listed. Runs with the target's python3
(asgi_app_python) and its standard library only; ``--root`` points it at a copy of /proc, /sys,
/etc and the app's directories for tests.
"""

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess

UNLIMITED_V1 = 1 << 60  # cgroup v1 reports "no memory limit" as a number near 2**63
UNIT_DIR = "/etc/systemd/system"
# The service unit the role writes: gunicorn from the live release's virtualenv, with its config.
ROLE_EXEC_START = re.compile(r"^ExecStart=\S+/current/venv/bin/gunicorn --config (\S+)$", re.MULTILINE)
# The mark of the units the role writes for an app's processes and timers (systemd ignores X- keys).
PART_OF_APP = "X-AsgiApp"


def read(root, path, encoding="ascii"):
    try:
        with open(os.path.join(root, path.lstrip("/")), encoding=encoding) as handle:
            return handle.read().strip()
    except (OSError, UnicodeError):
        return None


def count_cpu_list(text):
    """'0-3,8,10-11' -> 7"""
    total = 0
    for part in filter(None, (text or "").split(",")):
        low, _dash, high = part.partition("-")
        total += int(high or low) - int(low) + 1
    return total


def pid1_cgroups(root):
    """{controller: path} of PID 1; cgroup v2 is under the key ''. init.scope is left out."""
    paths = {}
    for line in (read(root, "/proc/1/cgroup") or "").splitlines():
        _hierarchy_id, controllers, path = line.split(":", 2)
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
    return importlib.util.find_spec("ensurepip") is not None


def uv_version(path):
    """The version the uv binary at PATH reports ("uv 0.13.8 (...)" -> "0.13.8"), or ""."""
    try:
        done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    words = done.stdout.split()
    return words[1] if done.returncode == 0 and len(words) > 1 and words[0] == "uv" else ""


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


def unit_setting(text, key):
    """The last KEY= of a unit file, as systemd reads a setting given twice ('' when absent)."""
    values = re.findall(rf"^{key}=(.*)$", text, re.MULTILINE)
    return values[-1].strip() if values else ""


def entries(root, path):
    """The names in directory PATH, sorted; None when it is not there."""
    try:
        return sorted(os.listdir(os.path.join(root, path.lstrip("/"))))
    except OSError:
        return None


def role_apps(root):
    """The apps the role runs on this host: each NAME.service that starts gunicorn from a
    release's virtualenv with --config, beside a NAME.socket. With the user and group it runs
    as, the address its socket listens on and the workers its config sets (None: unreadable)."""
    apps = []
    for entry in entries(root, UNIT_DIR) or []:
        name, _dot, kind = entry.rpartition(".")
        if kind != "service" or not name:
            continue
        service = read(root, f"{UNIT_DIR}/{entry}", "utf-8") or ""
        socket = read(root, f"{UNIT_DIR}/{name}.socket", "utf-8")
        start = ROLE_EXEC_START.search(service)
        if not start or socket is None:
            continue
        workers = re.search(r"^workers = (\d+)$", read(root, start.group(1), "utf-8") or "", re.MULTILINE)
        apps.append({"name": name, "user": unit_setting(service, "User"),
                     "group": unit_setting(service, "Group"), "listen": unit_setting(socket, "ListenStream"),
                     "workers": int(workers.group(1)) if workers else None})
    return apps


def app_units(root, name):
    """The units of the app's processes and timers (templates/asgi_app.command.service.j2 and
    asgi_app.timer.j2 mark them X-AsgiApp=NAME), each with what of it is enabled: the instances of
    a template unit (NAME-worker@1.service, ...), a timer itself, in any *.wants directory."""
    listed = entries(root, UNIT_DIR) or []
    wanted = set()
    for entry in listed:
        if entry.endswith(".wants"):
            wanted.update(entries(root, f"{UNIT_DIR}/{entry}") or [])
    units = []
    for entry in listed:
        if not entry.endswith((".service", ".timer")):
            continue
        if unit_setting(read(root, f"{UNIT_DIR}/{entry}", "utf-8") or "", PART_OF_APP) != name:
            continue
        if entry.endswith("@.service"):
            prefix = entry[:-len(".service")]
            enabled = sorted(unit for unit in wanted
                             if unit.startswith(prefix) and unit.endswith(".service") and unit != entry)
        else:
            enabled = [entry] if entry in wanted else []
        units.append({"unit": entry, "enabled": enabled})
    return units


def accounts(root, user, group):
    """USER in /etc/passwd and GROUP in /etc/group (None when missing), with the users whose
    primary group GROUP is."""
    def rows(path, fields):
        lines = (read(root, path, "utf-8") or "").splitlines()
        return [row for row in (line.split(":") for line in lines)
                if len(row) >= fields and row[2].isdigit() and (fields < 4 or row[3].isdigit())]

    passwd, groups = rows("/etc/passwd", 6), rows("/etc/group", 3)
    found = {}
    if user:
        row = next((row for row in passwd if row[0] == user), None)
        found["user"] = row and {"name": user, "uid": int(row[2]), "gid": int(row[3]), "home": row[5]}
    if group:
        row = next((row for row in groups if row[0] == group), None)
        found["group"] = row and {"name": group, "gid": int(row[2]),
                                  "primary_of": [entry[0] for entry in passwd if entry[3] == row[2]]}
    return found


def collect(root="/", app_root=None, app_dirs=(), user=None, group=None, app_name=None, uv=None):
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
        "machine": platform.machine(),
        **({"uv": uv_version(uv)} if uv else {}),
        "apps": role_apps(root),
        **({"app": {**app_state(root, app_root),
                    "entries": {path: entries(root, path) for path in (app_root, *app_dirs)},
                    **accounts(root, user, group),
                    **({"units": app_units(root, app_name)} if app_name else {})}} if app_root else {}),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/", help="where /proc and /sys are (tests)")
    parser.add_argument("--app-root", help="the app's directory (asgi_app_root): its releases")
    parser.add_argument("--app-dir", action="append", default=[],
                        help="another of the app's directories, to list with --app-root")
    parser.add_argument("--user", help="the app's user, to read from /etc/passwd with --app-root")
    parser.add_argument("--group", help="the app's group, to read from /etc/group with --app-root")
    parser.add_argument("--app-name", help="the app's name, to list its processes' and timers' units with --app-root")
    parser.add_argument("--uv", help="the path of the uv binary the role installs, to report its version")
    args = parser.parse_args()
    print(json.dumps(collect(args.root, args.app_root, args.app_dir, args.user, args.group, args.app_name, args.uv),
                     sort_keys=True))
