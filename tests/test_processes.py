"""The app's processes and timers: the plan of their units (plugins/filter/asgi_app_processes.py),
how a deploy puts them live, what host_resources.py finds of an earlier deploy's, and their units
as the role renders them, sharing the web service's identity and sandbox."""

import shutil
import subprocess

import pytest
import yaml

from support import REPO, ROLE, TWO_CPUS, load_module
from test_host_resources import base, make_tree

WORKER = {"name": "worker", "command": "arq shop.worker.WorkerSettings", "instances": 2, "stop_timeout": 300}
MAILER = {"name": "mailer", "command": "python -m shop.mailer", "instances": 1, "stop_timeout": 90}
CLEANUP = {"name": "cleanup", "command": "python -m shop.cleanup", "on_calendar": "daily", "randomized_delay": 0,
           "stop_timeout": 90}
REPORT = {"name": "report", "command": "python -m shop.report", "on_calendar": "Mon 06:00", "randomized_delay": 600,
          "stop_timeout": 90}
UNITS = "/etc/systemd/system"


@pytest.fixture(scope="module")
def units():
    return load_module("asgi_app_processes", REPO / "plugins" / "filter" / "asgi_app_processes.py")


@pytest.fixture(scope="module")
def render_role():
    return load_module("render_role", REPO / "tools" / "render_role.py")


def test_a_first_deploy_writes_and_runs_everything(units):
    plan = units.processes_plan([], "shop", [WORKER], [CLEANUP])
    assert [(item["unit"], item["kind"], item["template"]) for item in plan["files"]] == [
        ("shop-worker@.service", "process", "asgi_app.command.service.j2"),
        ("shop-cleanup.service", "timer-service", "asgi_app.command.service.j2"),
        ("shop-cleanup.timer", "timer", "asgi_app.timer.j2")]
    assert plan["files"][2]["partners"] == [f"{UNITS}/shop-cleanup.service"]
    assert plan["files"][0]["partners"] == []
    assert plan["run"] == ["shop-worker@1.service", "shop-worker@2.service", "shop-cleanup.timer"]
    assert (plan["stop"], plan["stop_services"], plan["remove"], plan["previous"]) == ([], [], [], [])
    assert plan["new"] == plan["run"]
    assert plan["new_files"] == [item["path"] for item in plan["files"]]
    assert plan["journal"] == ["shop-cleanup.service", "shop-worker@*.service"]


def test_what_is_no_longer_listed_stops_and_goes(units):
    """Three workers become two, the mailer and the weekly report are taken off the lists."""
    found = [{"unit": "shop-worker@.service",
              "enabled": ["shop-worker@1.service", "shop-worker@2.service", "shop-worker@3.service"]},
             {"unit": "shop-mailer@.service", "enabled": ["shop-mailer@1.service"]},
             {"unit": "shop-cleanup.service", "enabled": []},
             {"unit": "shop-cleanup.timer", "enabled": ["shop-cleanup.timer"]},
             {"unit": "shop-report.service", "enabled": []},
             {"unit": "shop-report.timer", "enabled": ["shop-report.timer"]}]
    plan = units.processes_plan(found, "shop", [WORKER], [CLEANUP])
    assert plan["stop"] == ["shop-worker@3.service", "shop-mailer@1.service", "shop-report.timer"]
    assert plan["stop_services"] == ["shop-report.service"]
    assert plan["remove"] == [f"{UNITS}/shop-mailer@.service", f"{UNITS}/shop-report.service",
                              f"{UNITS}/shop-report.timer"]
    assert plan["previous"] == [unit for entry in found for unit in entry["enabled"]]
    assert (plan["new"], plan["new_files"]) == ([], [])


def test_a_rollback_stops_and_removes_what_the_deploy_added(units):
    found = [{"unit": "shop-worker@.service", "enabled": ["shop-worker@1.service"]}]
    plan = units.processes_plan(found, "shop", [WORKER, MAILER], [])
    assert plan["new"] == ["shop-worker@2.service", "shop-mailer@1.service"]
    assert plan["new_files"] == [f"{UNITS}/shop-mailer@.service"]
    assert plan["previous"] == ["shop-worker@1.service"]


def test_removing_the_app_stops_and_removes_every_unit(units):
    found = [{"unit": "shop-worker@.service", "enabled": ["shop-worker@1.service"]},
             {"unit": "shop-cleanup.timer", "enabled": ["shop-cleanup.timer"]},
             {"unit": "shop-cleanup.service", "enabled": []}]
    plan = units.processes_plan(found, "shop", [], [])
    assert plan["stop"] == ["shop-worker@1.service", "shop-cleanup.timer"]
    assert plan["stop_services"] == ["shop-cleanup.service"]
    assert plan["remove"] == [f"{UNITS}/shop-worker@.service", f"{UNITS}/shop-cleanup.timer",
                              f"{UNITS}/shop-cleanup.service"]
    assert plan["journal"] == ["shop-cleanup.service", "shop-worker@*.service"]


RUN = ["shop-worker@1.service", "shop-worker@2.service", "shop-cleanup.timer"]


@pytest.mark.parametrize("changed, changed_units, restarted, reload", [
    ([], [], [], False),  # nothing changed: each is started if it is not running
    (["release"], [], ["shop-worker@1.service", "shop-worker@2.service"], False),
    (["environment"], [], ["shop-worker@1.service", "shop-worker@2.service"], False),
    (["config"], [], [], False),  # gunicorn_config.py is the web service's alone
    (["unit"], [], [], False),  # so are its units
    ([], ["shop-worker@.service"], ["shop-worker@1.service", "shop-worker@2.service"], True),
    ([], ["shop-cleanup.service"], [], True),  # the next run reads it; nothing runs now
    ([], ["shop-cleanup.timer"], ["shop-cleanup.timer"], True),
    (["release"], ["shop-cleanup.timer"], RUN, True),
])
def test_what_changed_decides_what_restarts(units, changed, changed_units, restarted, reload):
    decision = units.processes_go_live(RUN, changed, changed_units)
    assert [unit["unit"] for unit in decision["units"]] == RUN
    assert [unit["unit"] for unit in decision["units"] if unit["state"] == "restarted"] == restarted
    assert {unit["state"] for unit in decision["units"]} <= {"restarted", "started"}
    assert decision["daemon_reload"] is reload


def test_units_whose_file_a_tagged_run_did_not_write_are_left_out(units):
    decision = units.processes_go_live(RUN, ["environment"], [], ["shop-worker@.service"])
    assert decision["units"] == [{"unit": "shop-cleanup.timer", "state": "started"}]


def read(unit, state, pid):
    return {"item": unit, "status": {"ActiveState": state, "MainPID": str(pid)}}


def test_a_process_that_did_not_keep_its_main_process_failed(units):
    first = [read("shop-worker@1.service", "active", 101), read("shop-worker@2.service", "active", 102),
             read("shop-worker@3.service", "activating", 0), read("shop-mailer@1.service", "active", 104),
             read("shop-mailer@2.service", "active", 105)]
    later = [read("shop-worker@1.service", "active", 101),  # kept running
             read("shop-worker@2.service", "active", 202),  # exited, started again by systemd
             read("shop-worker@3.service", "active", 203),  # crashed before the first read
             read("shop-mailer@1.service", "activating", 0),  # waiting to be started again
             read("shop-mailer@2.service", "failed", 0)]
    assert units.processes_failed(first, later) == [
        "shop-worker@2.service", "shop-worker@3.service", "shop-mailer@1.service", "shop-mailer@2.service"]
    assert units.processes_failed(first[:1], later[:1]) == []


def test_calendar_expressions_systemd_refuses_are_problems(units):
    results = [{"item": CLEANUP, "rc": 0, "stderr": ""},
               {"item": {**REPORT, "on_calendar": "every monday"}, "rc": 1,
                "stderr": "Failed to parse calendar specification 'every monday': Invalid argument\n"},
               {"skipped": True, "item": REPORT}]
    problems = units.calendar_problems(results)
    assert problems == [
        "asgi_app_timers has on_calendar 'every monday' for 'report', which systemd on this host does not read "
        "(Failed to parse calendar specification 'every monday': Invalid argument). Give an OnCalendar= expression "
        "(systemd.time(7)) such as 'daily', 'Mon..Fri 03:00' or '*:0/15'; systemd-analyze calendar 'EXPRESSION' "
        "shows when it elapses."]


def test_host_resources_finds_the_units_of_the_apps_processes_and_timers(tmp_path, host_resources):
    marked = "[Unit]\nDescription=x\nX-AsgiApp={}\n[Service]\nExecStart=/usr/bin/env true\n"
    root = make_tree(tmp_path, {
        **base(),
        f"{UNITS}/shop-worker@.service": marked.format("shop"),
        f"{UNITS}/shop-cleanup.service": marked.format("shop"),
        f"{UNITS}/shop-cleanup.timer": "[Unit]\nX-AsgiApp=shop\n[Timer]\nOnCalendar=daily\n",
        # Another app's, whose name starts the same, and units the role did not write.
        f"{UNITS}/shop-api-worker@.service": marked.format("shop-api"),
        f"{UNITS}/shop-backup.service": "[Service]\nExecStart=/usr/local/bin/backup\n",
        f"{UNITS}/shop.service": "[Service]\nExecStart=/opt/shop/current/venv/bin/gunicorn --config /x\n",
        f"{UNITS}/multi-user.target.wants/shop-worker@1.service": "",
        f"{UNITS}/multi-user.target.wants/shop-worker@2.service": "",
        f"{UNITS}/multi-user.target.wants/shop-api-worker@1.service": "",
        f"{UNITS}/timers.target.wants/shop-cleanup.timer": "",
    })
    app = host_resources.collect(str(root), "/opt/shop", [], "shop", "shop", "shop")["app"]
    assert app["units"] == [
        {"unit": "shop-cleanup.service", "enabled": []},
        {"unit": "shop-cleanup.timer", "enabled": ["shop-cleanup.timer"]},
        {"unit": "shop-worker@.service", "enabled": ["shop-worker@1.service", "shop-worker@2.service"]}]
    # Without --app-name, as before.
    assert "units" not in host_resources.collect(str(root), "/opt/shop", [], "shop", "shop")["app"]


def unit_texts(render_role, processes, timers, **variables):
    """{unit file name: its text} of the processes' and timers' units as the role renders them."""
    settings = {"asgi_app_name": "shop", "asgi_app_module": "shop.main:app", "asgi_app_src": "examples/app",
                "asgi_app_processes": processes, "asgi_app_timers": timers, **variables}
    return {unit["unit"]: render_role.render(unit["template"], TWO_CPUS, __asgi_app_unit_item=unit, **settings)
            for unit in render_role.unit_files("shop", processes, timers)}


def test_processes_and_timers_run_as_the_web_service_does(render_role):
    """Identity, environment, limits and sandbox come from one place (vars/main.yml), for the web
    service and for every process and timer."""
    variables = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    web = render_role.render("asgi_app.service.j2", TWO_CPUS, asgi_app_name="shop", asgi_app_module="shop.main:app",
                             asgi_app_src="examples/app")
    texts = unit_texts(render_role, [WORKER], [CLEANUP])
    shared = [line for line in web.splitlines()
              if line.split("=")[0] in {"User", "Group", "WorkingDirectory", "EnvironmentFile", "LimitNOFILE"}
              or line.startswith('Environment="PYTHON')]
    assert len(shared) == 6, shared
    sandbox = [line for line in web.splitlines() if line.split("=")[0] in
               {directive.split("=")[0] for directive in variables["__asgi_app_sandbox"]}]
    assert len(sandbox) == len(variables["__asgi_app_sandbox"])
    for name in ("shop-worker@.service", "shop-cleanup.service"):
        lines = texts[name].splitlines()
        assert all(line in lines for line in shared + sandbox), name
        assert ('Environment="PATH=/opt/shop/current/venv/bin:/usr/local/bin:/usr/bin:/bin" '
                '"VIRTUAL_ENV=/opt/shop/current/venv"') in texts[name]
        assert "X-AsgiApp=shop" in lines and "KillMode=mixed" in lines


def test_a_process_unit_stops_within_its_own_timeout_and_restarts_on_failure(render_role):
    worker = unit_texts(render_role, [WORKER], [])["shop-worker@.service"]
    lines = worker.splitlines()
    for line in ("Type=exec", "ExecStart=/usr/bin/env arq shop.worker.WorkerSettings", "KillSignal=SIGTERM",
                 "TimeoutStopSec=300", "Restart=always", "WantedBy=multi-user.target"):
        assert line in lines, line
    assert '"ASGI_APP_INSTANCE=%i"' in worker


def test_a_timer_runs_its_oneshot_service_at_its_times(render_role):
    texts = unit_texts(render_role, [], [REPORT])
    timer, service = texts["shop-report.timer"].splitlines(), texts["shop-report.service"].splitlines()
    for line in ("OnCalendar=Mon 06:00", "Persistent=true", "RandomizedDelaySec=600", "Unit=shop-report.service",
                 "WantedBy=timers.target"):
        assert line in timer, line
    assert "Type=oneshot" in service and "Restart=always" not in service
    assert not any(line.startswith("WantedBy=") for line in service)
    assert "RandomizedDelaySec" not in unit_texts(render_role, [], [CLEANUP])["shop-cleanup.timer"]


def test_a_percent_sign_in_a_command_reaches_it(render_role):
    """systemd expands %-specifiers in ExecStart=: the role writes %% for each %."""
    texts = unit_texts(render_role, [], [{**CLEANUP, "command": "date +%Y-%m-%d"}])
    assert "ExecStart=/usr/bin/env date +%%Y-%%m-%%d" in texts["shop-cleanup.service"].splitlines()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_units(render_role, tmp_path):
    """As service.yml validates them: each unit under its own name, a timer beside its service."""
    for name, text in unit_texts(render_role, [WORKER], [CLEANUP, REPORT]).items():
        (tmp_path / name).write_text(text)
    for name in ("shop-worker@.service", "shop-cleanup.service", "shop-cleanup.timer", "shop-report.timer"):
        result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0 and not result.stderr.strip(), f"{name}: {result.stderr}"


METRICS = {"name": "metrics", "command": "python -m asgi_app_metrics --listen 0.0.0.0:9464", "stop_timeout": 10,
           "allow_from": ["10.0.0.7"]}


def test_the_server_of_the_metrics_is_one_more_process_and_goes_when_turned_off(units):
    plan = units.processes_plan([], "shop", [WORKER], [], METRICS)
    assert [(item["unit"], item["kind"]) for item in plan["files"]] == [
        ("shop-metrics.service", "metrics"), ("shop-worker@.service", "process")]
    assert plan["run"] == ["shop-metrics.service", "shop-worker@1.service", "shop-worker@2.service"]
    found = [{"unit": "shop-metrics.service", "enabled": ["shop-metrics.service"]}]
    off = units.processes_plan(found, "shop", [], [])
    assert (off["stop"], off["remove"]) == (["shop-metrics.service"], [f"{UNITS}/shop-metrics.service"])
    live = units.processes_go_live(plan["run"], ["release"], [])["units"]
    assert live[0] == {"unit": "shop-metrics.service", "state": "restarted"}


def test_the_metrics_unit_may_be_reached_from_the_host_and_the_allowed_addresses_only(render_role, tmp_path):
    variables = {"asgi_app_metrics": True, "asgi_app_metrics_listen": "0.0.0.0:9464",
                 "asgi_app_metrics_allow_from": ["10.0.0.7"]}
    [unit] = render_role.unit_files("shop", [], [], variables)
    assert unit["entry"] == METRICS
    text = render_role.render(unit["template"], TWO_CPUS, asgi_app_name="shop", asgi_app_module="shop.main:app",
                              asgi_app_src="examples/app", __asgi_app_unit_item=unit, **variables)
    lines = text.splitlines()
    for line in ("ExecStart=/usr/bin/env python -m asgi_app_metrics --listen 0.0.0.0:9464", "IPAddressDeny=any",
                 "IPAddressAllow=localhost 10.0.0.7", "TimeoutStopSec=10", "Restart=always",
                 "ReadWritePaths=/var/lib/shop /run/shop/metrics", "WantedBy=multi-user.target"):
        assert line in lines, line
    assert '"PROMETHEUS_MULTIPROC_DIR=/run/shop/metrics"' in text and "ASGI_APP_INSTANCE" not in text
    if shutil.which("systemd-analyze"):
        (tmp_path / "shop-metrics.service").write_text(text)
        result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "shop-metrics.service")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
