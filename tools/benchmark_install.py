#!/usr/bin/env python3
"""How long building a release takes, by installer, on one host and on a fleet (make bench-install).

For each case (pip with the example's pins in a requirements.txt, uv with its uv.lock, uv with
asgi_app_wheelhouse) and each fleet size, on fresh throwaway systemd hosts (tools/test-host.sh)
and with an empty controller cache (XDG_CACHE_HOME in a scratch directory, which moves pip's
cache and the role's, ~/.cache/asgi.gunicorn):
1. cold: the first converge of the example app (playbooks/deploy.yml, the demo's variables);
2. no change: the same run again, which must report changed=0 on every host;
3. new release: the example app with one file changed, so a new release is built with the
   caches the first converge filled (the hosts' installer caches, the controller's).
Each run's wall time is measured, and its build: the tasks of roles/asgi_app/tasks/virtualenv.yml,
from ansible.posix.profile_tasks, summed over the hosts (putting the installer itself on the host,
uv's fetch and unpacking or Debian's python3-venv for pip, counts in the converge, not the build).
The table and the targets (uv at most half of pip) are printed in Markdown, and written with --write.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from probes import markdown_table

REPO = Path(__file__).resolve().parent.parent
DEMO_VARS = REPO / "inventories" / "demo" / "group_vars" / "asgi_apps.yml"
BUILD_TASKS = REPO / "roles" / "asgi_app" / "tasks" / "virtualenv.yml"
CASES = {"pip": {"asgi_app_installer": "pip"},
         "uv": {"asgi_app_installer": "uv"},
         "uv, wheelhouse": {"asgi_app_installer": "uv", "asgi_app_wheelhouse": True}}
FIRST_PORT = 18201
REPORT = REPO / "docs" / "benchmarks" / "installs.md"
REPORT_HEADER = """# Benchmark: building releases, by installer

Written by `make bench-install BENCH_ARGS=--write` (tools/benchmark_install.py, whose docstring says
what each column measures): the example app, fresh hosts and an empty controller cache for the
first converge; the hosts of a fleet go one at a time (playbooks/deploy.yml's default batch).
"""


def build_task_names() -> list[str]:
    """The names of virtualenv.yml's tasks, up to any Jinja in them (profile_tasks prints them rendered)."""
    names, todo = [], yaml.safe_load(BUILD_TASKS.read_text())
    while todo:
        task = todo.pop()
        names.append(task["name"].split("{{")[0].strip())
        todo.extend(task.get("block", []))
    return names


def seconds_building(output: str) -> float:
    names = build_task_names()
    total = 0.0
    for line in output.splitlines():
        timed = re.match(r"^asgi\.gunicorn\.asgi_app : (.+?) -+ ([0-9.]+)s$", line)
        if timed and any(timed.group(1).startswith(name) for name in names):
            total += float(timed.group(2))
    return total


def playbook(inventory: Path, env: dict, *args: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        sys.exit(f"benchmark-install: ansible-playbook {' '.join(args)} failed:\n{done.stdout[-4000:]}")
    return elapsed, done.stdout


def unchanged(output: str, hosts: list[str]) -> bool:
    return all(re.search(rf"^{host}\s*:.*\bchanged=0\b", output, re.MULTILINE) for host in hosts)


def measure(case: str, count: int, scratch: Path) -> dict:
    """The case's three runs on `count` fresh hosts, removed afterwards, also when a run failed."""
    hosts = [f"asgi-install-{n}" for n in range(1, count + 1)]
    try:
        for n, host in enumerate(hosts):
            subprocess.run([str(REPO / "tools" / "test-host.sh"), host, str(FIRST_PORT + n)], check=True,
                           capture_output=True)
        return timed_runs(case, hosts, scratch)
    finally:
        subprocess.run(["docker", "rm", "-f", *hosts], check=False, capture_output=True)


def timed_runs(case: str, hosts: list[str], scratch: Path) -> dict:
    count = len(hosts)
    inventory = scratch / f"{count}-{case.replace(', ', '-')}.yml"
    inventory.write_text(yaml.safe_dump({"asgi_apps": {"hosts": {host: {
        "ansible_connection": "community.docker.docker", "ansible_become": False} for host in hosts}}}))
    cache = scratch / f"cache-{inventory.stem}"
    source = scratch / f"app-{inventory.stem}"
    shutil.copytree(REPO / "examples" / "app", source)
    if CASES[case]["asgi_app_installer"] == "pip":
        # pip reads no uv.lock: the same pins as a requirements.txt (without hashes, which pip would
        # then want for the server packages too), as the example was before it had a lock.
        pins = subprocess.run(["uv", "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project",
                               "--no-header", "--project", str(source)],
                              check=True, capture_output=True, text=True).stdout
        (source / "requirements.txt").write_text(pins)
        (source / "uv.lock").unlink()
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
           "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all"}
    role_vars = {**yaml.safe_load(DEMO_VARS.read_text()), **CASES[case], "asgi_app_src": str(source)}
    extra = ["-e", json.dumps(role_vars)]
    playbook(inventory, env, "tools/prepare-test-host.yml")
    row = {"case": case, "hosts": count}
    row["cold"], output = playbook(inventory, env, "playbooks/deploy.yml", *extra)
    row["cold build"] = seconds_building(output)
    row["no change"], output = playbook(inventory, env, "playbooks/deploy.yml", *extra)
    if not unchanged(output, hosts):
        sys.exit(f"benchmark-install: the re-run of {case} on {count} host(s) changed something:\n{output[-4000:]}")
    module = source / "example_app" / "main.py"
    module.write_text(module.read_text() + "\n# a new release\n")
    row["new release"], output = playbook(inventory, env, "playbooks/deploy.yml", *extra)
    row["new build"] = seconds_building(output)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2], help="fleet sizes (default: 1 2)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--write", action="store_true", help=f"also write the table to {REPORT.relative_to(REPO)}")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="asgi-bench-install-") as scratch:
        for count in args.hosts:
            for case in args.cases:
                if case.endswith("wheelhouse") and count == 1:
                    continue  # a wheelhouse serves the hosts after the first: one host has none
                rows.append(measure(case, count, Path(scratch)))
                print(f"benchmark-install: {rows[-1]}", file=sys.stderr)
    report = render(rows)
    print(report)
    if args.write:
        REPORT.write_text(f"{REPORT_HEADER}\n{report}\n")
        print(f"benchmark-install: wrote {REPORT.relative_to(REPO)}", file=sys.stderr)


def render(rows: list[dict]) -> str:
    """The table, then the targets, or why none could be judged."""
    lines = targets(rows) or ["none judged: each compares a pip row and a uv row on the same number of hosts"]
    return table(rows) + "\n\n## Targets\n\n" + "\n".join(f"- {line}" for line in lines)


def targets(rows: list[dict]) -> list[str]:
    """Issue 18's targets, judged on each fleet size that has both a pip and a uv row: uv at most
    half of pip, for the first converge and for the release's build in it."""
    lines = []
    for count in sorted({row["hosts"] for row in rows}):
        by_case = {row["case"]: row for row in rows if row["hosts"] == count}
        if "pip" not in by_case or "uv" not in by_case:
            continue
        for column, what in (("cold", "first converge"), ("cold build", "release build in the first converge")):
            uv, pip = by_case["uv"][column], by_case["pip"][column]
            verdict = "met" if uv <= pip / 2 else "NOT met"
            lines.append(f"{verdict}: uv's {what} on {count} host(s) <= half of pip's ({uv:.1f} s against {pip:.1f} s)")
    return lines


def table(rows: list[dict]) -> str:
    header = ["hosts", "installer", "first converge (s)", "its builds (s)", "no-change run (s)",
              "new release (s)", "its builds (s)"]
    cells = [[str(row["hosts"]), row["case"],
              *(f"{row[column]:.1f}" for column in ("cold", "cold build", "no change", "new release", "new build"))]
             for row in rows]
    return markdown_table(header, cells, numeric={0, 2, 3, 4, 5, 6})


if __name__ == "__main__":
    main()
