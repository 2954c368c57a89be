#!/usr/bin/env python3
"""Gunicorn's worker types side by side, on a host the asgi_app role deployed (make bench).

One run, on one machine, over loopback:
1. a throwaway systemd host on the machine's network (tools/test-host.sh NAME host), the example
   app deployed onto it with playbooks/deploy.yml (inventories/bench): the first converge and a
   no-change re-run are timed, and the re-run must report 0 changed;
2. wrk loads an I/O-bound endpoint (200 ms by default) at concurrency 100, 1000 and 10,000, and
   a CPU-light JSON endpoint at a concurrency that saturates the host, under each server:
   gunicorn sync and gthread (serving the WSGI twin of the app), the role's deployment with
   uvicorn_worker.UvicornWorker and with gunicorn's native asgi worker, and bare uvicorn;
   each measurement is repeated and the median run reported;
3. the role's deployment holds WebSockets, added a step at a time by `python -m probes hold`
   processes (tools/probes/), until one fails to echo or the step limit is reached;
4. the app, made slow to start, goes live under clients by the role's handover and by the
   alternatives to it (tools/benchmark_go_live.py);
5. the results go to docs/benchmarks.md (the page Galaxy shows: the table, the targets) and to
   docs/benchmarks/ (results.json, worker-types.png)
   and the table is printed.

The ceiling of an I/O row is min(concurrency / latency, the JSON requests/s of bare uvicorn in the
same run): what any server of this app could do at that concurrency on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import benchmark_go_live as go_live
from probes import markdown_table

REPO = Path(__file__).resolve().parent.parent
HOST = "asgi-app-bench"
APP = "bench"  # asgi_app_name in inventories/bench
ROLE_PORT = 18300  # asgi_app_bind in inventories/bench; the other servers take the ports after it
RELEASE = f"/opt/{APP}/current"
INVENTORY = REPO / "inventories" / "bench"
OUT = REPO / "docs" / "benchmarks"


@dataclass
class Server:
    """One row of the table: how to start it on the test host, and what it serves."""
    key: str
    label: str
    workers_rule: str
    port: int
    command: str = ""  # a transient unit's command; empty for the role's own deployment
    role_vars: dict | None = None  # the role's deployment with these variables (None: not the role)
    workers: int = 0
    io: bool = True  # False: the JSON endpoint only


@dataclass
class Run:
    """One wrk run, or the median of several."""
    test: str  # "io" or "json"
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    runs: list[float] = field(default_factory=list)  # requests/s of every repetition


def servers(cores: int, role_workers: int, latency: float) -> list[Server]:
    venv = f"{RELEASE}/venv/bin"
    sync_workers, gthread_workers = 2 * cores + 1, cores
    return [
        Server("sync", "gunicorn sync (WSGI twin)", "2 x cores + 1", ROLE_PORT + 1,
               f"{venv}/gunicorn example_app.wsgi:app --worker-class sync --workers {sync_workers} "
               f"--bind 127.0.0.1:{ROLE_PORT + 1} --no-control-socket", workers=sync_workers),
        Server("gthread", "gunicorn gthread, 4 threads (WSGI twin)", "cores", ROLE_PORT + 2,
               f"{venv}/gunicorn example_app.wsgi:app --worker-class gthread --workers {gthread_workers} "
               f"--threads 4 --bind 127.0.0.1:{ROLE_PORT + 2} --no-control-socket", workers=gthread_workers),
        Server("uvicorn_worker", "role: gunicorn + UvicornWorker (default)", "role", ROLE_PORT,
               role_vars={}, workers=role_workers),
        # What each costs on the CPU-light endpoint, where a request's own work is smallest.
        Server("json_log", "role: UvicornWorker, JSON access lines", "role", ROLE_PORT,
               role_vars={"asgi_app_access_log_format": "json"}, workers=role_workers, io=False),
        Server("metrics", "role: UvicornWorker, metrics on", "role", ROLE_PORT,
               role_vars={"asgi_app_metrics": True}, workers=role_workers, io=False),
        Server("asgi", "role: gunicorn native asgi worker", "role", ROLE_PORT,
               role_vars={"asgi_app_worker_class": "asgi"}, workers=role_workers),
        Server("uvicorn", "bare uvicorn --workers N, no logging", "role's N", ROLE_PORT + 5,
               f"{venv}/uvicorn example_app.main:app --workers {role_workers} --host 127.0.0.1 "
               f"--port {ROLE_PORT + 5} --no-access-log --log-level warning", workers=role_workers),
    ]


# --- The machine and the test host ------------------------------------------------------------

def sh(*argv: str, check: bool = True, capture: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, text=True, capture_output=capture, **kwargs)


def on_host(command: str, check: bool = True) -> str:
    return sh("docker", "exec", HOST, "sh", "-c", command, check=check).stdout.strip()


def machine() -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    version = sh("wrk", "--version", check=False)  # wrk prints it on stdout or stderr by version
    return {
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "open_files_soft": soft,
        "open_files_hard": hard,
        "kernel": platform.release(),
        "cpu": model.group(1).strip() if model else platform.machine(),
        "wrk": (version.stdout or version.stderr).split("[")[0].strip(),
    }


def playbook(*args: str) -> tuple[float, dict]:
    """Run ansible-playbook against the bench inventory; (seconds, PLAY RECAP counts)."""
    started = time.monotonic()
    result = sh("ansible-playbook", "-i", str(INVENTORY), *args, check=False, cwd=REPO)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        sys.exit(f"benchmark: ansible-playbook {' '.join(args)} failed:\n{result.stdout[-4000:]}")
    recap = re.search(rf"^{HOST}\s*:\s*(.*)$", result.stdout, re.MULTILINE)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", recap.group(1))} if recap else {}
    return elapsed, counts


def deploy(role_vars: dict | None = None) -> tuple[float, dict]:
    return playbook("playbooks/deploy.yml", *(["-e", json.dumps(role_vars)] if role_vars else []))


def answers(port: int, within: float) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=within) as response:
            return response.status == 200
    except OSError:
        return False


def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(port, 2):
            return
        time.sleep(0.3)
    sys.exit(f"benchmark: nothing answered on port {port} within {timeout:.0f} s")


def start_transient(server: Server) -> str:
    unit = f"bench-{server.key}"
    go_live.Host(on_host, APP, RELEASE).transient(
        unit, server.command, {"LimitNOFILE": "65536", "StandardOutput": "null"}, {})
    wait_ready(server.port)
    return unit


def stop_unit(*units: str) -> None:
    on_host(f"systemctl stop {' '.join(units)}")


def worker_rss_mb(unit: str) -> list[float]:
    """Resident memory of the unit's worker processes (children of its main process)."""
    main_pid = on_host(f"systemctl show --property MainPID --value {unit}")
    lines = on_host(f"ps -o rss=,args= --ppid {main_pid}", check=False).splitlines()
    return [int(line.split()[0]) / 1024 for line in lines if line.strip() and "resource_tracker" not in line]


def recycled(unit: str, since: int) -> int:
    """Workers Uvicorn ended for max_requests since then (each one replaced by the master)."""
    return int(on_host(f"journalctl --no-pager -o cat --since @{since} -u {unit} "
                       "| grep -c 'Maximum request limit' || true"))


RECYCLING_PORTS = {"default": ROLE_PORT + 3, "unrecycled": ROLE_PORT + 4}


def unit_copy(key: str, port: int, extra: str = "") -> str:
    """Start a copy of the role's unit (its sandbox, environment and gunicorn_config.py) that binds
    a port of its own, with `extra` gunicorn arguments; its name."""
    unit = f"{APP}-{key}.service"
    on_host(f"sed -e 's|^ExecStart=.*|& {extra} --bind 127.0.0.1:{port}|' -e '/^Requires={APP}\\.socket/d' "
            f"-e 's|^RuntimeDirectory=.*|RuntimeDirectory={APP}-{key}/gunicorn|' "
            f"/etc/systemd/system/{APP}.service > /etc/systemd/system/{unit} && systemctl daemon-reload "
            f"&& systemctl start {unit}")
    wait_ready(port)
    return unit


def pair_share(default: list[float], unrecycled: list[float]) -> float:
    """The median, over the pairs of runs made one after the other, of default / unrecycled, in %:
    what the machine did meanwhile (another process, the page cache) weighs on both of a pair."""
    return statistics.median(100 * a / b for a, b in zip(default, unrecycled, strict=True))


def recycling_side_by_side(args, repeat: int) -> dict:
    """The role's deployment against the same deployment with max_requests 0, run by run.

    Both are copies of the role's unit that differ only in `--max-requests 0` (each binds a port
    of its own, so neither has the role's socket unit); wrk loads the JSON endpoint of one, then
    of the other, `repeat` times, so that both meet the same machine, and each goes first in
    every other pair (the first of two runs in a row gets a few % more). The median share of a
    pair is what recycling leaves of the throughput at this rate.
    """
    units = {"default": unit_copy("default", RECYCLING_PORTS["default"]),
             "unrecycled": unit_copy("unrecycled", RECYCLING_PORTS["unrecycled"], "--max-requests 0")}
    for port in RECYCLING_PORTS.values():
        wrk(f"http://127.0.0.1:{port}/json", 32, 2, args.timeout)  # warm every worker up
    since = int(time.time())
    reports = {key: [] for key in RECYCLING_PORTS}
    for pair in range(repeat):
        for key, port in list(RECYCLING_PORTS.items())[::-1 if pair % 2 else 1]:
            reports[key].append(wrk(f"http://127.0.0.1:{port}/json", args.json_concurrency, args.duration,
                                    args.timeout))
            time.sleep(1)
    recycled_workers = recycled(units["default"], since)
    for unit in units.values():
        on_host(f"systemctl stop {unit}; rm /etc/systemd/system/{unit}")
    on_host("systemctl daemon-reload")
    runs = {key: asdict(summarise("json", args.json_concurrency, r)) for key, r in reports.items()}
    share = pair_share(runs["default"]["runs"], runs["unrecycled"]["runs"])
    print(f"  recycling: default {runs['default']['runs']} req/s, max_requests 0 {runs['unrecycled']['runs']} "
          f"req/s: {share:.1f} %, {recycled_workers} workers recycled", flush=True)
    return {"pairs": repeat, "recycled": recycled_workers, "share": round(share, 1), **runs}


# --- Load ----------------------------------------------------------------------------------------

def raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wrk(url: str, concurrency: int, duration: float, timeout: float) -> dict:
    threads = min(os.cpu_count() or 1, concurrency)
    result = sh("wrk", f"--threads={threads}", f"--connections={concurrency}", f"--duration={duration}s",
                f"--timeout={timeout}s", "--script", str(REPO / "tools" / "wrk-report.lua"), url,
                check=False, preexec_fn=raise_open_files)
    found = re.search(r"^wrk-report (\{.*\})$", result.stdout, re.MULTILINE)
    if not found:
        sys.exit(f"benchmark: wrk printed no report for {url}:\n{result.stdout}\n{result.stderr}")
    return json.loads(found.group(1))


def summarise(test: str, concurrency: int, reports: list[dict]) -> Run:
    """The median run by requests/s (2xx answers per second) stands for the repetitions."""
    def ok_rps(r: dict) -> float:
        return (r["requests"] - r["status"]) / (r["duration_us"] / 1e6)

    ordered = sorted(reports, key=ok_rps)
    median = ordered[(len(ordered) - 1) // 2]
    kinds = {k: median[k] for k in ("connect", "read", "write", "status", "timeout") if median[k]}
    return Run(test, concurrency, round(ok_rps(median), 1), round(median["p50_us"] / 1000, 1),
               round(median["p99_us"] / 1000, 1), sum(kinds.values()), kinds, median["requests"],
               [round(ok_rps(r), 1) for r in reports])


def measure(server: Server, restart, args) -> tuple[list[Run], int, int]:
    """The runs of one server, how many answers wrk counted in all (warm-up included), and how
    often the server had to be restarted between runs.

    A run that ends leaves its connections behind in the server's backlog; a server that cannot
    keep up (sync, gthread) would spend the next run answering them, and the run would measure
    nothing. So a server that does not answer /health within a second after a run is restarted.
    """
    base = f"http://127.0.0.1:{server.port}"
    answered = wrk(f"{base}/json", 32, 2, args.timeout)["requests"]  # warm every worker up
    runs, restarts = [], 0
    plan = [("io", c, f"{base}/io?delay={args.latency}") for c in args.concurrency] if server.io else []
    plan.append(("json", args.json_concurrency, f"{base}/json"))
    for test, concurrency, url in plan:
        reports = []
        for _ in range(args.repeat):
            reports.append(wrk(url, concurrency, args.duration, args.timeout))
            time.sleep(1)  # let closing connections drain before the next run
            if not answers(server.port, within=1.0):
                restarts += 1
                restart()
        run = summarise(test, concurrency, reports)
        answered += sum(report["requests"] for report in reports)
        print(f"  {server.key:15} {test:4} c={concurrency:<6} {run.rps:9.1f} req/s  p50 {run.p50_ms} ms  "
              f"p99 {run.p99_ms} ms  errors {run.errors}  (runs: {run.runs})", flush=True)
        runs.append(run)
    return runs, answered, restarts


def access_log_kept_up(unit: str, since: int, answered: int) -> dict:
    """Did every answer reach the journal as an access line, and did journald drop any?"""
    time.sleep(1)  # the last batch of lines
    journal = f"journalctl --no-pager -o cat --since @{since}"
    lines = int(on_host(f"{journal} -u {unit} | grep -c 'HTTP/1.1\" [0-9]' || true"))
    suppressed = on_host(f"{journal} | grep -i 'suppressed' | grep {unit} || true")
    return {"answered": answered, "journal_lines": lines, "suppressed": suppressed or None}


# --- WebSockets ------------------------------------------------------------------------------------

def hold_websockets(step: int, limit: int, unit: str) -> dict:
    """Add `step` connections per process until one fails to echo or `limit` are held."""
    url = f"ws://127.0.0.1:{ROLE_PORT}/ws"
    before = sum(worker_rss_mb(unit))
    processes: list[subprocess.Popen] = []
    levels = []
    held, stopped_by = 0, "limit"
    try:
        while held + step <= limit:
            number = len(processes)
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", "probes", "hold", url, "--count", str(step),
                 "--local-address", f"127.0.0.{2 + number}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=raise_open_files,
                env={**os.environ, "PYTHONPATH": str(REPO / "tools")})
            first = json.loads(process.stdout.readline() or "{}")
            processes.append(process)
            # Every connection held so far must still echo, not only the new ones.
            reports = [first]
            for other in processes[:-1]:
                other.stdin.write("echo\n")
                other.stdin.flush()
                reports.append(json.loads(other.stdout.readline() or "{}"))
            opened = sum(r.get("opened", 0) for r in reports)
            echoed = sum(r.get("echoed", 0) for r in reports)
            # A process that died reported nothing: each of its connections counts as failed.
            failed = sum(r["refused"] + r["lost"] if r else step for r in reports)
            rss = sum(worker_rss_mb(unit))
            level = {"connections": opened, "echoed": echoed, "failed": failed,
                     "workers_rss_mb": round(rss, 1), "seconds": round(time.monotonic() - started, 1)}
            levels.append(level)
            print(f"  websockets: {opened} open, {echoed} echoed, {failed} failed, "
                  f"workers {rss:.0f} MB ({level['seconds']} s)", flush=True)
            if failed or echoed != opened:
                stopped_by = "failure"
                break
            held = opened
    finally:
        for process in processes:
            process.stdin.close()
        for process in processes:
            process.wait(timeout=60)
    top = next((lv for lv in reversed(levels) if lv["failed"] == 0), None)
    return {
        "held": held,
        "limit": limit,
        "stopped_by": stopped_by,
        "kib_per_connection": round((top["workers_rss_mb"] - before) * 1024 / top["connections"], 1) if top else None,
        "workers_rss_before_mb": round(before, 1),
        "levels": levels,
    }


# --- Report -------------------------------------------------------------------------------------------

def ceilings(results: dict, latency: float) -> dict[str, float]:
    """Per I/O concurrency: min(concurrency / latency, bare uvicorn's JSON requests/s)."""
    json_capacity = next(r["rps"] for r in results["servers"]["uvicorn"]["runs"] if r["test"] == "json")
    io_levels = sorted({r["concurrency"] for s in results["servers"].values() for r in s["runs"] if r["test"] == "io"})
    return {str(c): round(min(c / latency, json_capacity), 1) for c in io_levels}


def table(results: dict) -> str:
    ceiling = results["ceilings"]
    header = ["server", "workers", "test", "concurrency", "req/s", "% of ceiling", "p50 ms", "p99 ms",
              "errors", "RSS/worker MB"]
    rows = []
    for server in results["servers"].values():
        for run in server["runs"]:
            share = (f"{100 * run['rps'] / ceiling[str(run['concurrency'])]:.0f} %"
                     if run["test"] == "io" else "-")
            test = f"I/O {results['latency'] * 1000:.0f} ms" if run["test"] == "io" else "JSON"
            errors = str(run["errors"]) + (
                " (" + ", ".join(f"{k} {v}" for k, v in run["error_kinds"].items()) + ")" if run["errors"] else "")
            rows.append([server["label"], str(server["workers"]), test, f"{run['concurrency']:,}",
                         f"{run['rps']:,.0f}", share, f"{run['p50_ms']:,.1f}", f"{run['p99_ms']:,.1f}",
                         errors, f"{server['rss_mb']:.0f}"])
    ceiling_row = ", ".join(f"{int(c):,}: {v:,.0f} req/s" for c, v in ceiling.items())
    return "\n".join([markdown_table(header, rows, numeric={3, 4, 5, 6, 7, 9}), "",
                      f"Ceiling of the I/O rows by concurrency: {ceiling_row}."])


def targets(results: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets, each (what, met, measured), for the rows this run measured."""
    runs = {k: {(r["test"], r["concurrency"]): r for r in s["runs"]} for k, s in results["servers"].items()}
    ours, bare = runs.get("uvicorn_worker", {}), runs.get("uvicorn", {})
    ceiling = results.get("ceilings", {})
    checks = []
    for concurrency, floor in ((100, 95), (1000, 95), (10000, 90)):
        run = ours.get(("io", concurrency))
        if run and str(concurrency) in ceiling:
            share = 100 * run["rps"] / ceiling[str(concurrency)]
            checks.append((f"UvicornWorker I/O at {concurrency:,} clients >= {floor} % of the ceiling",
                           share >= floor, f"{share:.0f} %"))
    ours_json = next((r for (test, _), r in ours.items() if test == "json"), None)
    bare_json = next((r for (test, _), r in bare.items() if test == "json"), None)
    if ours_json and bare_json:
        share = 100 * ours_json["rps"] / bare_json["rps"]
        checks.append(("UvicornWorker JSON >= 90 % of bare uvicorn, access log on", share >= 90, f"{share:.0f} %"))
    recycling = results.get("recycling")
    if recycling:
        checks.append(("recycling (max_requests) costs <= 3 %: the default JSON >= 97 % of the same deployment "
                       "with max_requests 0, side by side",
                       recycling["share"] >= 97 and recycling["recycled"] > 0,
                       f"{recycling['share']:.1f} %, {recycling['recycled']} workers recycled meanwhile"))
    ws = results.get("websockets")
    if ws:
        checks.append(("WebSockets held by one deployment >= 10,000, 0 errors",
                       ws["held"] >= 10000, f"{ws['held']:,} held"))
    converge = results["converge"]
    checks.append(("first converge <= 90 s", converge["first_s"] <= 90, f"{converge['first_s']:.0f} s"))
    checks.append(("no-change re-run <= 10 s with 0 changed",
                   converge["rerun_s"] <= 10 and converge["rerun_changed"] == 0,
                   f"{converge['rerun_s']:.1f} s, changed={converge['rerun_changed']}"))
    return checks + go_live.targets(results.get("go_live"))


def against_bare_uvicorn(results: dict) -> str:
    """Each role row as a share of bare uvicorn, test by test: what the deployment itself costs."""
    servers_ = results["servers"]
    if "uvicorn" not in servers_:
        return "Bare uvicorn was not measured in this run."
    bare = {(r["test"], r["concurrency"]): r["rps"] for r in servers_["uvicorn"]["runs"]}
    lines = []
    for key, server in servers_.items():
        if key == "uvicorn" or server.get("role_vars") is None:
            continue
        shares = [f"{'I/O' if r['test'] == 'io' else 'JSON'} {r['concurrency']:,}: "
                  f"{100 * r['rps'] / bare[(r['test'], r['concurrency'])]:.0f} %"
                  for r in server["runs"] if bare.get((r["test"], r["concurrency"]))]
        lines.append(f"- {server['label']}: " + ", ".join(shares))
    return "\n".join(lines)


def observability_section(results: dict) -> list[str]:
    """JSON access lines and metrics, each against the default deployment's JSON row."""
    servers_ = results["servers"]
    default = next((r["rps"] for r in servers_.get("uvicorn_worker", {}).get("runs", []) if r["test"] == "json"), None)
    lines = []
    for key, what in (("json_log", "JSON access lines (asgi_app_access_log_format: json)"),
                      ("metrics", "metrics (asgi_app_metrics: true)")):
        run = next((r for r in servers_.get(key, {}).get("runs", []) if r["test"] == "json"), None)
        if run and default:
            share = 100 * run["rps"] / default
            lines.append(f"- {what}: {run['rps']:,.0f} req/s against the default's {default:,.0f}, "
                         f"{share:.1f} % of it (a cost of {100 - share:.1f} %); p99 {run['p99_ms']:,.1f} ms")
    return lines or ["Not measured in this run."]


def restarts_sentence(results: dict) -> str:
    restarted = [f"{s['label']} {'once' if s['restarts'] == 1 else str(s['restarts']) + ' times'}"
                 for s in results["servers"].values() if s.get("restarts")]
    if not restarted:
        return "Every server had answered all of a run's requests a second after it ended."
    return ("A server that was still working off a run's requests a second after it ended was "
            "restarted, so that the next run did not begin behind that queue: " + ", ".join(restarted) + ".")


def access_log_sentence(log: dict | None) -> str:
    if not log:
        return "Not measured in this run."
    kept = "every answer has its line" if log["journal_lines"] >= log["answered"] else (
        f"{log['answered'] - log['journal_lines']:,} answers have no line")
    dropped = ("journald said: " + "; ".join(log["suppressed"].splitlines())
               if log["suppressed"] else "journald suppressed nothing")
    return (f"During the UvicornWorker row wrk counted {log['answered']:,} answers and the journal holds "
            f"{log['journal_lines']:,} access lines from the service ({kept}; the journal also has the lines "
            f"of requests still in flight when a run ended); {dropped}.")


def recycling_section(results: dict) -> list[str]:
    recycling = results.get("recycling")
    if not recycling:
        return ["Not measured in this run."]
    default, unrecycled = recycling["default"], recycling["unrecycled"]
    return [
        "Two copies of the role's unit, one as deployed (max_requests 10,000 + up to 1,000) and one with "
        f"`--max-requests 0`, each on a port of its own, loaded in turn on the JSON endpoint at concurrency "
        f"{default['concurrency']}, "
        f"{recycling['pairs']} runs each (requests/s of every run in order):",
        "",
        f"- default: {default['rps']:,.0f} req/s (median; runs {', '.join(f'{r:,.0f}' for r in default['runs'])}), "
        f"p99 {default['p99_ms']:,.1f} ms",
        f"- max_requests 0: {unrecycled['rps']:,.0f} req/s (median; runs "
        f"{', '.join(f'{r:,.0f}' for r in unrecycled['runs'])}), p99 {unrecycled['p99_ms']:,.1f} ms",
        "",
        f"Pair by pair (run i of each, one after the other), the default reached {recycling['share']:.1f} % of it "
        f"(median) while Uvicorn ended {recycling['recycled']} workers "
        "at max_requests and gunicorn forked their successors from the preloaded master, which serve at once. "
        "At this rate a worker is recycled every few seconds; at a real app's rate, every few hours.",
    ]


def go_live_section(section: dict | None) -> list[str]:
    if not section:
        return ["Not measured in this run."]
    return [
        f"The example app sleeps {section['import_delay_s']} s at import (EXAMPLE_APP_IMPORT_DELAY), as an app "
        "with heavy imports, a model or a connection pool does. Each mechanism replaces the "
        f"{section['workers']} workers once under {section['clients']['concurrency']} HTTP clients (a new "
        f"connection per request), {section['clients']['websockets']} WebSockets and "
        f"{section['clients']['sse']} SSE streams; steady p99 is the same clients' in the "
        f"{go_live.STEADY_SECONDS} s before, slowest and failed are the requests' during the event and "
        f"{go_live.SETTLE_SECONDS} s after it (tools/benchmark_go_live.py).",
        "",
        go_live.table(section),
        "",
        go_live.handover_sentence(section),
    ]


def render_markdown(results: dict, chart_path: str = "benchmarks/worker-types.png") -> str:
    m = results["machine"]
    ws = results.get("websockets") or {}
    lines = [
        "# Benchmark: gunicorn worker types on a host the role deployed",
        "",
        f"Made by `make bench` on {results['date']}: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"kernel {m['kernel']}, open files per process {m['open_files_soft']:,} (hard {m['open_files_hard']:,}), "
        f"{m['wrk']}. Load generator and servers share the machine's cores, over loopback.",
        "",
        f"Each figure is the median of {results['repeat']} wrk runs of {results['duration']} s "
        f"(requests/s counts 2xx answers; wrk gives up on a request after {results['timeout']} s, "
        "which counts as an error). The I/O endpoint waits "
        f"{results['latency'] * 1000:.0f} ms (asyncio.sleep, or time.sleep in the WSGI twin).",
        "",
        table(results),
        "",
        "p50 and p99 are those of the requests answered during a run: where a run answered fewer "
        "requests than it had clients (sync and gthread), most clients were still waiting when it ended. "
        "RSS/worker is the median resident "
        "memory of a server's workers after its last run; recycled workers are younger than the others.",
        "",

        restarts_sentence(results),
        "",
        f"![requests per second by server]({chart_path})",
        "",
        "## The role's deployments against bare uvicorn",
        "",
        "Requests/s of each row as a share of bare uvicorn's in the same test (the ceiling aside):",
        "",
        against_bare_uvicorn(results),
        "",
        "## WebSockets",
        "",
        (f"One deployment (UvicornWorker, {results['servers']['uvicorn_worker']['workers']} workers) held "
         f"{ws['held']:,} WebSockets, every one still echoing (stopped by: {ws['stopped_by']}); "
         f"about {ws['kib_per_connection']} KiB of worker memory per connection."
         if ws else "Not measured in this run."),
        "",
        "## Access log",
        "",
        access_log_sentence(results.get("access_log")),
        "",
        "## JSON access lines and metrics",
        "",
        "The JSON endpoint (the rows above) with one JSON object per request in the journal instead of "
        "Uvicorn's text line, and with every request counted for Prometheus (asgi_app_metrics), against the "
        "default deployment's row:",
        "",
        *observability_section(results),
        "",
        "## Worker recycling",
        "",
        *recycling_section(results),
        "",
        "## Going live with a slow-starting app",
        "",
        *go_live_section(results.get("go_live")),
        "",
        "## The role's own cost",
        "",
        f"First converge {results['converge']['first_s']:.0f} s; no-change re-run "
        f"{results['converge']['rerun_s']:.1f} s with changed={results['converge']['rerun_changed']}.",
        "",
        "## Targets",
        "",
        *(f"- {'met' if ok else 'NOT met'}: {name} ({value})" for name, ok, value in targets(results)),
        "",
    ]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers_ = list(results["servers"].values())
    tests = [(r["test"], r["concurrency"]) for r in servers_[0]["runs"]]
    names = [f"I/O, {c:,} clients" if t == "io" else f"JSON, {c:,} clients" for t, c in tests]
    rps = [{(r["test"], r["concurrency"]): r["rps"] for r in server["runs"]} for server in servers_]
    width = 0.8 / len(servers_)
    figure, axes = plt.subplots(figsize=(11, 6.5), dpi=110)
    for index, server in enumerate(servers_):
        positions, values = [], []
        for group, test in enumerate(tests):
            present = [i for i in range(len(servers_)) if test in rps[i]]  # bars of this group, centred
            if index in present:
                positions.append(group + (present.index(index) - (len(present) - 1) / 2) * width)
                values.append(max(rps[index][test], 0.5))
        axes.bar(positions, values, width, label=server["label"], color=f"C{index}")
    for group, (test, concurrency) in enumerate(tests):
        if test == "io":
            value = results["ceilings"][str(concurrency)]
            axes.hlines(value, group - 0.45, group + 0.45, colors="black", linestyles="dashed",
                        label="ceiling: min(clients / latency, JSON capacity)" if group == 0 else None)
    axes.set_yscale("log")
    axes.set_xticks(range(len(tests)), names)
    axes.set_ylabel("requests per second (log scale)")
    m = results["machine"]
    axes.set_title(f"{results['latency'] * 1000:.0f} ms I/O endpoint and JSON endpoint, "
                   f"{m['cores']} cores, median of {results['repeat']} runs")
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    axes.grid(axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write(results: dict, out: Path) -> None:
    """results.json and the chart in `out`, the page beside it (docs/benchmarks.md): Galaxy shows
    the pages at the top of a collection's docs/."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    chart(results, out / "worker-types.png")
    page(out).write_text(render_markdown(results, f"{out.name}/worker-types.png"))


def page(out: Path) -> Path:
    return out.parent / f"{out.name}.md"


# --- The run ------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the I/O endpoint waits")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[100, 1000, 10000], help="I/O concurrencies, comma-separated")
    parser.add_argument("--json-concurrency", type=int, default=256)
    parser.add_argument("--duration", type=int, default=5, help="seconds of each wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout, seconds")
    parser.add_argument("--ws-step", type=int, default=5000, help="WebSockets added per step")
    parser.add_argument("--ws-limit", type=int, default=40000, help="stop adding WebSockets here")
    parser.add_argument("--only", help="comma-separated server keys, go_live for the last part (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--keep", action="store_true", help="leave the test host running")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: write the report of a results.json again")
    return parser.parse_args(argv)


def main() -> int:
    args = parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        write(results, args.out)
        print(table(results))
        return 0
    started = time.monotonic()
    facts = machine()
    print(f"benchmark: {facts['cores']} cores, {facts['memory_gib']} GiB, open files "
          f"{facts['open_files_soft']}/{facts['open_files_hard']}, {facts['wrk']}", flush=True)

    sh(str(REPO / "tools" / "test-host.sh"), HOST, "host", capture=False)
    playbook("tools/prepare-test-host.yml")
    first_s, first = deploy()
    rerun_s, rerun = deploy()
    print(f"benchmark: first converge {first_s:.1f} s (changed={first.get('changed')}), "
          f"no-change re-run {rerun_s:.1f} s (changed={rerun.get('changed')})", flush=True)

    cores = int(on_host("nproc"))
    role_workers = int(re.search(r"^workers = (\d+)", on_host(f"cat /etc/{APP}/gunicorn_config.py"),
                                 re.MULTILINE).group(1))
    chosen = set(args.only.split(",")) if args.only else None
    results: dict = {
        "date": time.strftime("%Y-%m-%d"), "machine": facts, "latency": args.latency,
        "duration": args.duration, "repeat": args.repeat, "timeout": args.timeout,
        "converge": {"first_s": round(first_s, 1), "first_changed": first.get("changed"),
                     "rerun_s": round(rerun_s, 1), "rerun_changed": rerun.get("changed")},
        "servers": {},
    }
    role_units = (f"{APP}.service", f"{APP}.socket")
    for server in servers(cores, role_workers, args.latency):
        if chosen and server.key not in chosen:
            continue
        print(f"benchmark: {server.label} ({server.workers} workers)", flush=True)
        if server.role_vars is not None:
            if server.role_vars:  # the first converge deployed the defaults
                deploy(server.role_vars)
            on_host(f"systemctl start {' '.join(role_units)}")
            wait_ready(server.port)
            unit = role_units[0]

            def restart(unit=unit, port=server.port):
                on_host(f"systemctl restart {unit}")
                wait_ready(port)
        else:
            stop_unit(*role_units)
            unit = start_transient(server)

            def restart(server=server):
                start_transient(server)
        since = int(time.time())
        runs, answered, restarts = measure(server, restart, args)
        rss = worker_rss_mb(unit)
        results["servers"][server.key] = {**asdict(server), "runs": [asdict(r) for r in runs],
                                          "restarts": restarts,
                                          "rss_mb": round(statistics.median(rss), 1) if rss else 0.0}
        if server.key == "uvicorn_worker":
            results["access_log"] = access_log_kept_up(unit, since, answered)
            print(f"  access log: {results['access_log']}", flush=True)
        if server.key == "uvicorn_worker":
            results["recycling"] = recycling_side_by_side(args, max(args.repeat, 5))
        if server.key == "uvicorn_worker" and args.ws_limit:
            results["websockets"] = hold_websockets(args.ws_step, args.ws_limit, unit)
        if server.role_vars is not None:
            stop_unit(*role_units)
        else:
            stop_unit(unit)

    def report() -> None:
        if "uvicorn" in results["servers"]:
            results["ceilings"] = ceilings(results, args.latency)
            results["targets"] = [{"target": n, "met": ok, "value": v} for n, ok, v in targets(results)]
            write(results, args.out)

    report()  # the servers' results are kept should the last part fail
    if not chosen or "go_live" in chosen:
        print("benchmark: going live with a slow-starting app", flush=True)
        results["go_live"] = go_live.measure(on_host, deploy, wait_ready, APP, RELEASE, ROLE_PORT, role_workers)
        print("\n" + go_live.table(results["go_live"]) + "\n", flush=True)
        report()
    if "uvicorn" in results["servers"]:
        print("\n" + table(results) + "\n")
        for name, ok, value in targets(results):
            print(f"{'met    ' if ok else 'NOT met'}  {name}: {value}")
    if not args.keep:
        sh("docker", "rm", "-f", HOST, check=False)
    print(f"\nbenchmark: done in {(time.monotonic() - started) / 60:.1f} min; results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
