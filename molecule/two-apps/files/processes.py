#!/usr/bin/env python3
"""Print, as JSON, the processes of each app named on the command line, null for one not running:
its service's main PID (the gunicorn master), every process in the service's cgroup, those of
them whose parent is the master (its workers), and the users they all run as."""

import json
import os
import pwd
import subprocess
import sys


def show(unit, prop):
    return subprocess.run(["systemctl", "show", "-p", prop, "--value", unit],
                          capture_output=True, text=True, check=True).stdout.strip()


def parent(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def processes(name):
    unit = f"{name}.service"
    main = int(show(unit, "MainPID") or 0)
    if not main:
        return None
    cgroup = show(unit, "ControlGroup")
    # cgroup v2 at /sys/fs/cgroup, or a hybrid host's unified hierarchy beside the v1 ones.
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(f"{base}{cgroup}/cgroup.procs"):
            with open(f"{base}{cgroup}/cgroup.procs") as procs:
                pids = sorted(int(pid) for pid in procs.read().split())
            break
    else:
        raise SystemExit(f"no cgroup.procs for {unit} ({cgroup})")
    return {"main_pid": main, "cgroup": cgroup, "pids": pids,
            "workers": [pid for pid in pids if parent(pid) == main],
            "users": sorted({pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name for pid in pids})}


print(json.dumps({name: processes(name) for name in sys.argv[1:]}))
