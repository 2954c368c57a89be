#!/usr/bin/env python3
"""Render the role's templates as the role would, without a host.

Used by the fast tests, and to write the reference files in reference/ for people who do not
use Ansible: `python tools/render_role.py --write` renders them for the reference host below
(4 CPUs, 8 GiB, the example app, with a process and a timer); tests/test_contract.py fails when
they drift from the role.
"""

import importlib.util
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ROLE = REPO / "roles" / "asgi_app"

REFERENCE_HOST = {"online_cpus": 4, "affinity_cpus": 4, "cpu_quota": None, "memory_mb": 8192}
REFERENCE_VARS = {"asgi_app_name": "example", "asgi_app_module": "example_app.main:app",
                  "asgi_app_src": "examples/app"}
# file name in reference/: (the role's template, the variables it is rendered with besides).
REFERENCE_FILES = {"gunicorn_config.py": ("gunicorn_config.py.j2", {}),
                   "example.service": ("asgi_app.service.j2", {}),
                   "example-standby.service": ("asgi_app.service.j2", {"__asgi_app_standby": True}),
                   "example-handover.service": ("asgi_app.handover.service.j2", {}),
                   "example.socket": ("asgi_app.socket.j2", {}),
                   "example.nginx.conf": ("asgi_app.nginx.conf.j2", {}),
                   # /etc/systemd/system/nginx.service.d/asgi-app-sandbox.conf, on a host that
                   # allows the open files asked for.
                   "nginx-sandbox.conf": ("asgi_app.nginx.service.conf.j2", {"__asgi_app_proxy_nofile": 65536})}
# A process and a timer as asgi_app_processes and asgi_app_timers would give them, for the
# reference files of their units (an arq worker, and a nightly command).
REFERENCE_PROCESSES = [{"name": "worker", "command": "arq example_app.worker.WorkerSettings", "stop_timeout": 300}]
REFERENCE_TIMERS = [{"name": "cleanup", "command": "python -m example_app.cleanup", "on_calendar": "*-*-* 03:00",
                     "randomized_delay": 600}]
# The server of the metrics (asgi_app_metrics) for a Prometheus on another host.
REFERENCE_METRICS = {"asgi_app_metrics": True, "asgi_app_metrics_listen": "0.0.0.0:9464",
                     "asgi_app_metrics_allow_from": ["10.0.0.7"]}


def _filters(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "plugins" / "filter" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trusted(value):
    from ansible.template import trust_as_template

    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def render(template, resources, ansible_managed="Ansible managed", **overrides):
    """The template rendered with the role's defaults, vars, the overrides and derived values."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    sizing, inputs = _filters("asgi_app"), _filters("asgi_app_inputs")
    variables = {}
    for source in ("defaults/main.yml", "vars/main.yml"):
        variables.update(yaml.safe_load((ROLE / source).read_text()))
    variables.update(ansible_managed=ansible_managed, **overrides)
    name = variables["asgi_app_name"]
    checked = {key: value for key, value in variables.items() if key.startswith("asgi_app_")}
    variables["__asgi_app_inputs"] = inputs.check_inputs(
        {**checked, "src_is_directory": True, "socket_dir": f"/run/{name}"})
    variables["__asgi_app_plan"] = sizing.worker_plan(
        resources, workload=variables["asgi_app_workload"], workers=variables["asgi_app_workers"],
        worker_memory_mb=variables["asgi_app_worker_memory_mb"],
        memory_budget_mb=variables["asgi_app_memory_budget_mb"],
        allow_extra_workers=variables["asgi_app_allow_extra_workers"])
    variables["__asgi_app_timeouts"] = sizing.timeout_chain(
        variables["asgi_app_graceful_timeout"], variables["asgi_app_uvicorn_graceful_timeout"],
        variables["asgi_app_timeout_stop_sec"])
    templar = Templar(loader=DataLoader(), variables=_trusted(variables))
    return templar.template(trust_as_template((ROLE / "templates" / template).read_text()))


def unit_files(name, processes, timers, metrics=None):
    """The plan's unit files (plugins/filter/asgi_app_processes.py) of the processes and timers, and
    of the server of the metrics with `metrics` (asgi_app_metrics* variables), as preflight checks
    them (plugins/filter/asgi_app_inputs.py)."""
    problems, inputs = [], _filters("asgi_app_inputs")
    checked = inputs.check_units(
        {"asgi_app_name": name, "asgi_app_processes": processes, "asgi_app_timers": timers}, problems)
    server = inputs.check_metrics(metrics or {}, {"kind": "uvicorn"}, None, problems)
    assert not problems, problems
    return _filters("asgi_app_processes").processes_plan([], name, *checked, server)["files"]


def reference_files():
    """{file name in reference/: content} for the reference host."""
    note = ("Reference file rendered by tools/render_role.py from roles/asgi_app/templates\n"
            "for a host with 4 CPUs and 8 GiB serving examples/app; the role renders it for your host.")
    files = {name: render(template, REFERENCE_HOST, ansible_managed=note, **REFERENCE_VARS, **extra)
             for name, (template, extra) in REFERENCE_FILES.items()}
    units = {"asgi_app_processes": REFERENCE_PROCESSES, "asgi_app_timers": REFERENCE_TIMERS}
    for unit in unit_files(REFERENCE_VARS["asgi_app_name"], REFERENCE_PROCESSES, REFERENCE_TIMERS):
        files[unit["unit"]] = render(unit["template"], REFERENCE_HOST, ansible_managed=note, **REFERENCE_VARS,
                                     **units, __asgi_app_unit_item=unit)
    for unit in unit_files(REFERENCE_VARS["asgi_app_name"], [], [], REFERENCE_METRICS):
        files[unit["unit"]] = render(unit["template"], REFERENCE_HOST, ansible_managed=note, **REFERENCE_VARS,
                                     **REFERENCE_METRICS, __asgi_app_unit_item=unit)
    return files


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tools/render_role.py --write")
    (REPO / "reference").mkdir(exist_ok=True)
    for name, content in reference_files().items():
        (REPO / "reference" / name).write_text(content)
        print(f"reference/{name}")
