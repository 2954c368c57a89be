"""nginx as the role sets it up holds against many WebSockets and slow clients: sized past Debian's
768 connections a worker, sandboxed by a drop-in to nginx.service, cutting off clients that send
slowly, and limiting the connections of one address.

The clients that need many connections run inside the test host: holders of WebSockets from
addresses of their own (127.0.0.2 and on), as many clients behind many addresses would, and
slowhttptest from Debian as the attacker. Normal requests come from the machine, a new
connection every 0.2 s that must be answered within 3 s."""

import importlib.metadata
import json
import os
import re
import shlex
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

import probes

ROLE = Path(__file__).resolve().parents[3] / "roles" / "asgi_app"
TOOLS = Path(__file__).resolve().parents[3] / "tools"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PROBES_VENV = "/var/tmp/probes-venv"
LOCAL = "http://127.0.0.1:8000"
# The targets.
WEBSOCKETS = 10_000
MAX_EXPOSURE = 4.8
MIN_SUCCESS = 0.99
# The attacks take minutes; they run on one Debian release (12), where `make test` runs every
# scenario. Sizing, sandbox and WebSockets are checked on each release.
ATTACKS = os.environ.get("ASGI_APP_DEBIAN", "12") == "12"

# Run on the test host with the probes' virtualenv: hold WebSockets from several addresses,
# check /health while they are open, echo on every one again, then close them.
HOLD = r"""
import json, subprocess, sys, urllib.request
url, processes, each, first_address = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def holder(count, address):
    return subprocess.Popen([sys.executable, "-m", "probes", "hold", url, "--count", str(count),
                             "--local-address", address, "--timeout", "60"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def report(process):
    return json.loads(process.stdout.readline() or "{}")
def workers():
    pids = subprocess.run(["pgrep", "-u", "www-data", "-x", "nginx"], capture_output=True, text=True).stdout.split()
    return {pid: len(__import__("os").listdir(f"/proc/{pid}/fd")) for pid in pids}
def health():
    try:
        return urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=10).status
    except Exception as error:
        return repr(error)
holders = [holder(each, f"127.0.0.{first_address + n}") for n in range(processes)]
opened = [report(p) for p in holders]
result = {"opened": opened, "nginx_worker_fds": workers(), "health_while_held": health()}
for p in holders:
    p.stdin.write("echo\n")
    p.stdin.flush()
result["echoed_again"] = [report(p) for p in holders]
for p in holders:
    p.stdin.close()
for p in holders:
    p.wait(timeout=120)
result["health_after"] = health()
print(json.dumps(result))
"""

# Run on the test host: N slowhttptest processes of 1,000 connections each (it watches its sockets
# with select(), so one process stays under 1,024) for DURATION seconds, each started again when
# nginx has closed all of its connections, as a determined attacker would.
ATTACK = r"""
cd /tmp || exit 1
end=$(( $(date +%s) + $2 ))
for i in $(seq 1 "$1"); do
  (
    while [ "$(date +%s)" -lt "$end" ]; do
      slowhttptest $3 -c 1000 -r 200 -i 5 -l $(( end - $(date +%s) )) \
        -u http://127.0.0.1:8000/health -o "/tmp/slow-$i" >/dev/null 2>&1
    done
  ) &
done
wait
"""


def sh(host, script, *args):
    return host.run("sh -c " + " ".join(shlex.quote(str(a)) for a in (script, "sh", *args)))


@pytest.fixture(scope="module")
def client_tools(host):
    """The probes (with the machine's versions of httpx and websockets) and slowhttptest, on the host."""
    pins = " ".join(f"{name}=={importlib.metadata.version(name)}" for name in ("httpx", "websockets"))
    copied = host.ansible("copy", f"src={TOOLS}/probes dest=/var/tmp/ mode=preserve", check=False)
    assert "failed" not in copied, copied
    installed = host.run(
        f"python3 -m venv {PROBES_VENV} && {PROBES_VENV}/bin/pip install --quiet {pins} && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q slowhttptest >/dev/null")
    assert installed.rc == 0, installed.stderr[-2000:]


def nofile(limits_text):
    """(soft, hard) of "Max open files" in a /proc/PID/limits."""
    soft, hard = re.search(r"Max open files\s+(\S+)\s+(\S+)", limits_text).groups()
    return soft, hard


def nginx_workers(host):
    return host.check_output("pgrep -u www-data -x nginx").split()


def test_nginx_configuration_passes_nginx_t_and_is_sized(host):
    test = host.run("nginx -t")
    assert test.rc == 0, test.stderr
    config = host.check_output("nginx -T 2>/dev/null")
    host_cap = nofile(host.file("/proc/1/limits").content_string)[1]
    expected = DEFAULTS["asgi_app_proxy_open_files"]
    if host_cap != "unlimited":
        expected = min(expected, int(host_cap))
    connections = min(DEFAULTS["asgi_app_proxy_worker_connections"], expected)
    print(f"\nnginx.conf: worker_rlimit_nofile {expected}, worker_connections {connections} "
          f"(the host's service manager allows {host_cap} open files)")
    assert f"worker_rlimit_nofile {expected};" in config
    assert re.search(rf"^\s*worker_connections {connections};", config, re.M)
    assert "server_tokens off;" in config
    assert f"client_header_timeout {DEFAULTS['asgi_app_proxy_client_header_timeout']}s;" in config
    assert re.search(r"limit_conn_zone \$binary_remote_addr zone=\S+:10m;", config)
    assert f" {DEFAULTS['asgi_app_proxy_connections_per_address']};" in config


def test_server_header_names_no_version(app_url):
    response = httpx.get(app_url + "/nope", timeout=10)
    print(f"\nServer: {response.headers.get('server')}; 404 page: {response.text.strip()[:120]!r}")
    assert response.headers.get("server") == "nginx"
    assert not re.search(r"nginx/\d", response.text)


def test_nginx_service_is_sandboxed(host):
    report = host.check_output("systemd-analyze security --no-pager nginx.service")
    score = float(re.search(r"Overall exposure level for nginx\.service: ([0-9.]+)", report).group(1))
    print(f"\nsystemd-analyze security nginx.service: {score} (at most {MAX_EXPOSURE} asked)")
    assert score <= MAX_EXPOSURE, report
    show = host.check_output("systemctl show nginx -p ProtectSystem -p NoNewPrivileges -p DropInPaths")
    assert "ProtectSystem=strict" in show and "NoNewPrivileges=yes" in show
    assert "/etc/systemd/system/nginx.service.d/asgi-app-sandbox.conf" in show


def test_nginx_workers_get_the_open_files_asked(host):
    host_cap = nofile(host.file("/proc/1/limits").content_string)[1]
    expected = DEFAULTS["asgi_app_proxy_open_files"]
    if host_cap != "unlimited":
        expected = min(expected, int(host_cap))
    workers = nginx_workers(host)
    assert workers
    got = {pid: nofile(host.file(f"/proc/{pid}/limits").content_string) for pid in workers}
    print(f"\nnginx workers' open files (soft, hard): {got}; asked {DEFAULTS['asgi_app_proxy_open_files']}, "
          f"the host allows {host_cap}")
    assert all(soft == str(expected) for soft, _ in got.values()), got


def test_nginx_reloads_under_the_sandbox(host, app_url):
    master = host.check_output("systemctl show nginx -p MainPID --value")
    before = set(nginx_workers(host))
    log_lines = int(host.check_output("wc -l < /var/log/nginx/error.log"))
    reload = host.run("systemctl reload nginx")
    assert reload.rc == 0, reload.stderr
    deadline = time.monotonic() + 10
    while set(nginx_workers(host)) & before and time.monotonic() < deadline:
        time.sleep(0.2)
    after = set(nginx_workers(host))
    print(f"\nsystemctl reload nginx: master {master} kept, workers {sorted(before)} -> {sorted(after)}")
    assert host.check_output("systemctl show nginx -p MainPID --value") == master
    assert after and not after & before
    assert host.service("nginx").is_running
    assert probes.http_get(app_url + "/health").status == 200
    # What the sandbox would deny (a log, a temporary file, a socket) nginx logs as crit, alert or emerg.
    logged = host.check_output(f"tail -n +{log_lines + 1} /var/log/nginx/error.log")
    assert not re.search(r"\[(crit|alert|emerg)\]", logged), logged


def test_ten_thousand_websockets_through_nginx(host, client_tools):
    processes = 20
    each = WEBSOCKETS // processes
    # Each holder process from an address of its own: 500 a process stays under the per-address limit.
    assert each < DEFAULTS["asgi_app_proxy_connections_per_address"]
    run = host.run(f"cd /var/tmp && timeout 600 {PROBES_VENV}/bin/python -c {shlex.quote(HOLD)} "
                   f"ws://127.0.0.1:8000/ws {processes} {each} 2")
    assert run.rc == 0, run.stderr[-3000:]
    result = json.loads(run.stdout)
    opened = sum(r.get("opened", 0) for r in result["opened"])
    echoed = sum(r.get("echoed", 0) for r in result["opened"])
    again = sum(r.get("echoed", 0) for r in result["echoed_again"])
    errors = [r.get("errors") for r in result["opened"] + result["echoed_again"] if r.get("errors")]
    print(f"\nWebSockets through nginx: {opened} open, {echoed} echoed, {again} echoed again while all were "
          f"open; /health {result['health_while_held']} while held, {result['health_after']} after; "
          f"open files of each nginx worker while held: {result['nginx_worker_fds']}; errors {errors}")
    assert opened >= WEBSOCKETS and echoed >= WEBSOCKETS and again >= WEBSOCKETS
    assert result["health_while_held"] == 200 and result["health_after"] == 200


def test_one_address_gets_429_past_its_connection_limit(host, client_tools):
    limit = DEFAULTS["asgi_app_proxy_connections_per_address"]
    run = host.run(f"cd /var/tmp && timeout 300 {PROBES_VENV}/bin/python -c {shlex.quote(HOLD)} "
                   f"ws://127.0.0.1:8000/ws 1 {limit + 20} 240")
    assert run.rc == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)["opened"][0]
    print(f"\n{limit + 20} WebSockets from one address: {report['opened']} opened, {report['refused']} refused "
          f"{report['errors']}")
    assert report["opened"] == limit
    assert report["refused"] == 20
    logged = int(host.check_output("grep -c '\" 429 ' /var/log/nginx/access.log || true") or 0)
    assert logged >= 20


class Requests:
    """A new connection to /health every 0.2 s from the machine, each answered within 3 s or failed."""

    def __init__(self, url):
        self.url, self.results, self.stopping = url, [], threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        sent = time.monotonic()
        try:
            ok = probes.http_get(self.url, timeout=3).status == 200
        except Exception:  # noqa: BLE001 (any failure of a client counts as one)
            ok = False
        self.results.append((sent, ok))

    def _run(self):
        tick = time.monotonic()
        while not self.stopping.is_set():
            self.pool.submit(self._one)
            tick += 0.2
            time.sleep(max(0.0, tick - time.monotonic()))

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.pool.shutdown(wait=True)

    def share(self, start, end):
        window = [ok for sent, ok in self.results if start <= sent < end]
        return sum(window), len(window)


def attack_with_requests(host, app_url, mode, processes, duration, after=15):
    """Run the attack while normal requests go on, and go on after it; what each saw."""
    requests = Requests(app_url + "/health").start()
    time.sleep(2)
    peak = []
    started = time.monotonic()
    attack = threading.Thread(target=lambda: peak.append(sh(host, ATTACK, processes, duration, mode)))
    attack.start()
    connections = []
    while attack.is_alive():
        # The attacker's sockets: established (01), to port 8000 (1F40).
        count = host.run("awk '$3 ~ /:1F40$/ && $4 == \"01\"' /proc/net/tcp | wc -l").stdout.strip()
        connections.append(int(count or 0))
        attack.join(timeout=5)
    ended = time.monotonic()
    time.sleep(after)
    requests.stop()
    during, after_ = requests.share(started, ended), requests.share(ended, ended + after)
    return {"seconds": round(ended - started), "attack_connections_peak": max(connections, default=0),
            "during": during, "after": after_, "attack_rc": peak[0].rc if peak else None}


def percent(pair):
    ok, total = pair
    return 100.0 * ok / total if total else 0.0


@pytest.mark.skipif(not ATTACKS, reason="the attacks run on Debian 12 only (see ATTACKS)")
@pytest.mark.parametrize("attack, mode, processes, duration", [
    ("slowloris", "-H", 5, 60),              # endless request heads
    ("slow bodies", "-B -s 8192", 2, 90),    # endless request bodies
])
def test_normal_requests_pass_during_slow_clients(host, app_url, client_tools, attack, mode, processes, duration):
    seen = attack_with_requests(host, app_url, mode, processes=processes, duration=duration)
    print(f"\n{attack}, {processes} x 1,000 connections for {seen['seconds']} s (at most "
          f"{seen['attack_connections_peak']} open at once): normal requests {seen['during'][0]}/{seen['during'][1]} "
          f"({percent(seen['during']):.1f} %) during, {seen['after'][0]}/{seen['after'][1]} "
          f"({percent(seen['after']):.1f} %) after")
    assert seen["during"][1] > 0 and seen["after"][1] > 0
    assert percent(seen["during"]) >= 100 * MIN_SUCCESS
    assert percent(seen["after"]) >= 100 * MIN_SUCCESS
