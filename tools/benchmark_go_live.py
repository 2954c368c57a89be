"""Going live with a slow-starting app, mechanism by mechanism: the last part of `make bench`.

The example app sleeps IMPORT_DELAY seconds at import (EXAMPLE_APP_IMPORT_DELAY), as an app with
heavy imports, a model or a connection pool does. Under HTTP, WebSocket and SSE clients
(the probes' load, as in the zero-downtime scenario), each way of replacing every worker
runs once, after a steady window under the same clients:

- the role's handover (`systemctl start NAME-handover`, what a deploy, a rollback and an
  operator's restart run), with the memory of the service and its standby sampled throughout;
- `systemctl restart NAME`: what the role does when no standby fits in memory;
- `systemctl reload NAME`: gunicorn's HUP, which starts new workers and stops the old at once;
- gunicorn's USR2 re-exec, then TERM to the old master once the new one's workers are up, in a
  unit of its own: as gunicorn documents it, and with the new master announcing itself to systemd
  (`MAINPID=`), without which systemd takes the old master's exit for the service's;
- Uvicorn's own process manager (`uvicorn --workers N`) on SIGHUP, which replaces its workers one
  at a time, each once its successor answers.

Each row reports the steady p99, the slowest request and the failed ones during the event, what
the WebSockets saw, how long the event took and whether the service was still up afterwards.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

from probes import Watch, markdown_table

IMPORT_DELAY = 4  # seconds; the slow start
STALL_SECONDS = 0.5  # a request slower than the steady p99 by more than this is a stall
STEADY_SECONDS = 4
SETTLE_SECONDS = 2  # clients keep going this long after an event has ended
CLIENTS = {"concurrency": 20, "websockets": 4, "sse": 2}
WORKER_MEMORY_MB = 150  # the role's asgi_app_worker_memory_mb, which the bench inventory keeps

# gunicorn for the USR2 rows: the role's worker class (with its graceful end) and worker count, a
# port of its own, preloaded as the role preloads. The hook is what makes USR2 work under systemd.
USR2_CONFIG = '''\
import os

import asgi_app_worker
from gunicorn import systemd

wsgi_app = "example_app.main:app"
worker_class = asgi_app_worker.uvicorn_worker_class("uvicorn_worker.UvicornWorker", timeout_graceful_shutdown=25)
worker_tmp_dir = os.environ["RUNTIME_DIRECTORY"]
workers = {workers}
bind = ["127.0.0.1:{port}"]
preload_app = True


def when_ready(server):
    # A master started by USR2 (server.master_pid is its parent's) tells systemd it is the main
    # process now; the old one's exit is then not the service's.
    if server.master_pid and os.environ.get("ANNOUNCE_MAINPID"):
        systemd.sd_notify(f"MAINPID={{os.getpid()}}", server.log)
'''
USR2_CONFIG_PATH = "/etc/bench-usr2.py"

# The state and memory (as systemd counts it) of the service and its standby, every 0.1 s until a
# stop file exists: a line "seconds state memory state memory". Sampled, because systemd forgets an
# inactive unit's timestamps once nothing refers to it.
SAMPLE_UNITS = ('while [ ! -e {stop} ]; do echo $(date +%s.%N) '
                '$(systemctl show -p ActiveState -p MemoryCurrent {service} | sed s/^/service./) '
                '$(systemctl show -p ActiveState -p MemoryCurrent {standby} | sed s/^/standby./); '
                'sleep 0.1; done > {log}')
# Where the example app's version is set: before an event the release's copy gets a new one, and
# version served after it tells whether the mechanism loaded the code on disk.
VERSION_FILE = "app/example_app/__init__.py"


class Host:
    """What the measurements need of the benchmark's test host."""

    def __init__(self, run: Callable[..., str], app: str, release: str):
        self.run, self.app, self.release = run, app, release

    def main_pid(self, unit: str) -> int:
        return int(self.run(f"systemctl show -p MainPID --value {unit}") or 0)

    def children(self, pid: int) -> set[int]:
        out = self.run(f"pgrep -P {pid} || true")
        return {int(p) for p in out.split()}

    def active(self, unit: str) -> bool:
        return self.run(f"systemctl is-active {unit} || true") == "active"

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> bool:
        """Whether `condition` came true within `timeout`; a mechanism that never finishes is a
        result too, so the row says so rather than the benchmark stopping."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                print(f"  go live: no {what} within {timeout:.0f} s", flush=True)
                return False
            time.sleep(0.2)
        return True

    def transient(self, unit: str, command: str, properties: dict[str, str], env: dict[str, str]) -> None:
        """Start `command` as the app's user in the release, as a unit systemd can stop and find
        (no hardening, no socket unit), replacing an earlier one of that name."""
        self.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; true")
        props = " ".join(f"--property {k}={v}" for k, v in properties.items())
        setenv = " ".join(f"--setenv {k}={v}" for k, v in env.items())
        self.run(f"systemd-run --unit {unit} {props} {setenv} --uid {self.app} --gid {self.app} "
                 f"--working-directory {self.release}/app {command}")


def workers_replaced(host: Host, unit: str, before: set[int], count: int) -> Callable[[], bool]:
    """True once none of `before` is a worker of the unit's main process and `count` others are."""
    def done() -> bool:
        now = host.children(host.main_pid(unit))
        return not (now & before) and len(now) >= count
    return done


def timed_event(host: Host, base_url: str, key: str, event: Callable[[], dict | None]) -> dict:
    """The steady window, then the event under the same clients; one row of the table.

    Before the event the release's code on disk gets a version of its own (`key`), which only
    workers that import the app again serve.
    """
    with Watch(base_url, **CLIENTS) as steady:
        time.sleep(STEADY_SECONDS)
    version = f"{key}-{int(time.time())}"
    host.run(f"sed -i 's/^__version__ = .*/__version__ = \"{version}\"/' {host.release}/{VERSION_FILE}")
    with Watch(base_url, **CLIENTS) as during:
        started = time.monotonic()
        extra = event() or {}
        seconds = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
    load = during.result
    return {
        "steady_p99_s": steady.result.latency_p99,
        "slowest_s": load.latency_max,
        "p99_s": load.latency_p99,
        "requests": load.requests,
        "failed": load.failed,
        "errors": load.errors,
        "ws_closes": load.ws_closes,
        "ws_resets": load.ws_resets,
        "event_s": round(seconds, 1),
        "new_code": load.last_version == version,
        **extra,
    }


# --- The role's own three ------------------------------------------------------------------------

def role_rows(host: Host, port: int, workers: int) -> list[dict]:
    app = host.app
    base = f"http://127.0.0.1:{port}"
    rows = []

    def handover() -> dict:
        stop, log = "/run/bench-units.stop", "/run/bench-units.log"
        host.run(f"rm -f {stop} {log}")
        sampler = SAMPLE_UNITS.format(stop=stop, log=log, service=f"{app}.service", standby=f"{app}-standby.service")
        host.run(f"nohup sh -c '{sampler}' >/dev/null 2>&1 &")
        time.sleep(0.5)  # the service alone, first
        host.run(f"systemctl start {app}-handover.service")
        time.sleep(0.5)
        host.run(f"touch {stop}; sleep 0.3")
        return {"up_after": host.active(f"{app}.service"), "handover": handover_facts(host.run(f"cat {log}"))}

    def restart() -> dict:
        host.run(f"systemctl restart {app}.service")
        return {"up_after": host.active(f"{app}.service")}

    def reload() -> dict:
        before = host.children(host.main_pid(f"{app}.service"))
        host.run(f"systemctl reload {app}.service")
        finished = host.wait(workers_replaced(host, f"{app}.service", before, workers), 120,
                             "new workers after the reload")
        return {"up_after": host.active(f"{app}.service"), "finished": finished}

    for key, label, event in (
            ("handover", f"role: systemctl start {app}-handover (chosen)", handover),
            ("restart", f"role: systemctl restart {app} (no room for a standby)", restart),
            ("hup", f"gunicorn HUP: systemctl reload {app}", reload)):
        print(f"  go live: {label}", flush=True)
        rows.append({"key": key, "label": label, **timed_event(host, base, key, event)})
    return rows


def handover_facts(samples: str) -> dict:
    """How long each step of a handover took, and the memory of both units, from SAMPLE_UNITS' lines."""
    points = []
    for line in samples.splitlines():
        stamp, *fields = line.split()
        values = dict(field.split("=", 1) for field in fields if "=" in field)
        memory = {unit: int(values.get(f"{unit}.MemoryCurrent", "")) if values.get(
            f"{unit}.MemoryCurrent", "").isdigit() else 0 for unit in ("service", "standby")}
        points.append((float(stamp), values.get("service.ActiveState"), values.get("standby.ActiveState"), memory))

    def first(after, test):
        return next((t for t, service, standby, _ in points if t >= after and test(service, standby)), None)

    begin = points[0][0]
    standby_up = first(begin, lambda service, standby: standby != "inactive")
    standby_ready = first(standby_up, lambda service, standby: standby == "active")
    service_down = first(standby_ready, lambda service, standby: service != "active")
    service_ready = first(service_down, lambda service, standby: service == "active")
    standby_stopping = first(service_ready, lambda service, standby: standby != "active")
    standby_gone = first(standby_stopping, lambda service, standby: standby == "inactive")
    steady = points[0][3]["service"]
    peak = max(points, key=lambda point: sum(point[3].values()))[3]
    mib = 1024 * 1024
    return {
        "standby_start_s": round(standby_ready - standby_up, 1),
        "service_restart_s": round(service_ready - service_down, 1),
        "standby_stop_s": round(standby_gone - standby_stopping, 1),
        "overlap_s": round(standby_gone - standby_up, 1),
        "steady_mb": round(steady / mib),
        "peak_mb": round(sum(peak.values()) / mib),
        "peak_service_mb": round(peak["service"] / mib),
        "peak_standby_mb": round(peak["standby"] / mib),
        "samples": len(points),
    }


# --- The alternatives, each in a unit of its own -----------------------------------------------------

def usr2_rows(host: Host, port: int, workers: int) -> list[dict]:
    venv = f"{host.release}/venv/bin"
    unit = "bench-usr2"
    config = USR2_CONFIG.format(workers=workers, port=port)
    host.run(f"cat > {USR2_CONFIG_PATH} <<'EOF'\n{config}EOF\nchmod 644 {USR2_CONFIG_PATH}")
    rows = []
    for key, label, announce in (
            ("usr2", "gunicorn USR2, then TERM to the old master (as documented)", False),
            ("usr2_mainpid", "gunicorn USR2 + MAINPID= from the new master, then TERM", True)):
        env = {"EXAMPLE_APP_IMPORT_DELAY": str(IMPORT_DELAY), **({"ANNOUNCE_MAINPID": "1"} if announce else {})}
        host.transient(unit, f"{venv}/gunicorn -c {USR2_CONFIG_PATH} --no-control-socket",
                       {"Type": "notify", "NotifyAccess": "all", "KillMode": "mixed", "TimeoutStopSec": "40",
                        "RuntimeDirectory": unit}, env)

        def usr2() -> dict:
            old = host.main_pid(unit)
            host.run(f"kill -USR2 {old}")

            def new_master_up() -> bool:
                # The new master is the old one's child with workers of its own.
                return host.run(f"for p in $(pgrep -P {old}); do [ $(pgrep -P $p | wc -l) -ge {workers} ] "
                                "&& echo $p; done; true") != ""
            if not host.wait(new_master_up, 120, "workers of a new master"):
                return {"up_after": host.active(unit), "finished": False}
            host.run(f"kill -TERM {old}")
            finished = host.wait(lambda: host.run(f"kill -0 {old} 2>/dev/null && echo alive || true") != "alive",
                                 60, "exit of the old master")
            time.sleep(1)  # what systemd makes of it
            return {"up_after": host.active(unit), "finished": finished,
                    "main_pid_followed": host.main_pid(unit) not in (0, old)}

        print(f"  go live: {label}", flush=True)
        rows.append({"key": key, "label": label, **timed_event(host, f"http://127.0.0.1:{port}", key, usr2)})
        host.run(f"systemctl stop {unit} 2>/dev/null; systemctl reset-failed {unit} 2>/dev/null; true")
    return rows


def uvicorn_rows(host: Host, port: int, workers: int) -> list[dict]:
    unit = "bench-uvicorn-hup"
    # A new worker must answer Uvicorn's health check within --timeout-worker-healthcheck (5 s by
    # default), or the restart is abandoned: the app takes IMPORT_DELAY s to import.
    host.transient(unit, f"{host.release}/venv/bin/uvicorn example_app.main:app --workers {workers} "
                   f"--host 127.0.0.1 --port {port} --timeout-graceful-shutdown 25 --no-access-log "
                   f"--timeout-worker-healthcheck {IMPORT_DELAY * 15}",
                   {"TimeoutStopSec": "40"}, {"EXAMPLE_APP_IMPORT_DELAY": str(IMPORT_DELAY)})

    def hup() -> dict:
        before = host.children(host.main_pid(unit))
        host.run(f"systemctl kill --kill-whom=main --signal=HUP {unit}")
        # Its workers are spawned: a resource tracker sits beside them, and stays.
        tracker = {p for p in before if "resource_tracker" in host.run(f"cat /proc/{p}/cmdline | tr '\\0' ' '")}
        finished = host.wait(workers_replaced(host, unit, before - tracker, workers + len(tracker)), 180,
                             "new workers from Uvicorn")
        return {"up_after": host.active(unit), "finished": finished}

    label = "uvicorn --workers N, SIGHUP"
    print(f"  go live: {label}", flush=True)
    row = {"key": "uvicorn_hup", "label": label, **timed_event(host, f"http://127.0.0.1:{port}", "uvicorn_hup", hup)}
    host.run(f"systemctl stop {unit}")
    return [row]


def measure(run: Callable[..., str], deploy: Callable[[dict], object], wait_ready: Callable[[int], None],
            app: str, release: str, role_port: int, workers: int) -> dict:
    """Every row, the role's deployment first (deployed again with the import delay)."""
    host = Host(run, app, release)
    deploy({"asgi_app_environment": {"EXAMPLE_APP_IMPORT_DELAY": str(IMPORT_DELAY)}})
    run(f"systemctl start {app}.socket {app}.service")
    wait_ready(role_port)
    standby = int(re.search(r"--workers (\d+)", run(f"systemctl cat {app}-standby.service")).group(1))
    rows = role_rows(host, role_port, workers)
    run(f"systemctl stop {app}.service {app}.socket")
    rows += usr2_rows(host, role_port + 6, workers)
    rows += uvicorn_rows(host, role_port + 7, workers)
    return {"import_delay_s": IMPORT_DELAY, "workers": workers, "standby_workers": standby,
            "worker_memory_mb": WORKER_MEMORY_MB, "clients": CLIENTS, "rows": rows}


# --- Report ------------------------------------------------------------------------------------------

def stalled(row: dict) -> bool:
    return row["slowest_s"] > row["steady_p99_s"] + STALL_SECONDS


def table(go_live: dict) -> str:
    header = ["mechanism", "steady p99 s", "slowest s", "failed", "WebSockets", "event s", "new code",
              "up after"]
    rows = []
    for row in go_live["rows"]:
        ws = ", ".join([f"{code} x{n}" for code, n in row["ws_closes"].items()]
                       + ([f"reset x{row['ws_resets']}"] if row["ws_resets"] else [])) or "-"
        failed = str(row["failed"]) + (
            " (" + ", ".join(f"{k} {v}" for k, v in row["errors"].items()) + ")" if row["failed"] else "")
        up = "yes" if row["up_after"] else "NO: the service is gone"
        rows.append([row["label"], f"{row['steady_p99_s']:.3f}", f"{row['slowest_s']:.2f}", failed, ws,
                     f"{row['event_s']:.1f}" + ("" if row.get("finished", True) else " (unfinished)"),
                     "yes" if row["new_code"] else "no", up])
    return markdown_table(header, rows, numeric={1, 2, 5})


def handover_sentence(go_live: dict) -> str:
    facts = next((r["handover"] for r in go_live["rows"] if r["key"] == "handover"), None)
    if not facts:
        return "The handover was not measured in this run."
    return (f"The handover's overlap, from the standby's start to its stop: {facts['overlap_s']:.1f} s "
            f"(the standby starts and answers in {facts['standby_start_s']:.1f} s, the service restarts behind "
            f"it in {facts['service_restart_s']:.1f} s, the standby drains in {facts['standby_stop_s']:.1f} s). "
            f"Memory as systemd counts it (MemoryCurrent, sampled {facts['samples']} times): the service alone "
            f"{facts['steady_mb']} MB before, both at most {facts['peak_mb']} MB (service "
            f"{facts['peak_service_mb']} MB + standby {facts['peak_standby_mb']} MB at that moment), "
            f"{facts['peak_mb'] / max(facts['steady_mb'], 1):.1f} x the steady figure. The role's memory check "
            f"counted {go_live['workers']} + {go_live['standby_workers']} workers x {go_live['worker_memory_mb']} MB "
            f"= {(go_live['workers'] + go_live['standby_workers']) * go_live['worker_memory_mb']} MB for it.")


def targets(go_live: dict | None) -> list[tuple[str, bool, str]]:
    row = next((r for r in (go_live or {}).get("rows", []) if r["key"] == "handover"), None)
    if not row:
        return []
    return [(f"the role's handover with a {go_live['import_delay_s']} s import: 0 failed, slowest request "
             f"<= steady p99 + {STALL_SECONDS} s",
             row["failed"] == 0 and not stalled(row) and row["up_after"],
             f"{row['failed']} failed, slowest {row['slowest_s']:.2f} s, steady p99 {row['steady_p99_s']:.3f} s")]


if __name__ == "__main__":  # the table of a results.json again
    print(table(json.loads(Path(sys.argv[1]).read_text())["go_live"]))
