"""Each of the role's tags run alone, with playbooks/deploy.yml as an operator runs it, against the
host converge deployed: it succeeds, runs its own step after preflight and changes nothing. A
tagged run that needs what an earlier step makes (the app installed, the release its inputs name
built) stops before any change when the host lacks it, and what a configure run changes goes live
in that same run."""

import re
import time

import pytest
import yaml

from deploys import REPO, ROLE_TASK, deploy


def documented_tags():
    """The tags of roles/asgi_app/tasks/main.yml, and asgi_app_preflight, which runs preflight alone
    (tests/test_tags.py keeps main.yml's tags and its own list of them in step)."""
    tags = set()
    for task in yaml.safe_load((REPO / "roles" / "asgi_app" / "tasks" / "main.yml").read_text()):
        for each in [task] + task.get("block", []):
            tags.update(each.get("tags", []))
    return sorted(tags - {"always"}) + ["asgi_app_preflight"]


# A task each tag's step shows it ran (its header is printed even when the task is skipped).
RAN = {
    "asgi_app": "Point current at the release",
    "asgi_app_preflight": "Report the worker count and why",
    "asgi_app_remove": "Remove the application from the host",
    "asgi_app_install": "Create the application's directories",
    "asgi_app_release": "Find the releases, the one just built among them",
    "asgi_app_configure": "Render gunicorn_config.py, checked by gunicorn --check-config before it goes live",
    "asgi_app_service": "Install the service, its standby and the handover between them",
    # A task of health.yml, which verify.yml includes: the tag reaches the included tasks too.
    "asgi_app_verify": "Check that the health path answered 200 in time",
    "asgi_app_proxy": "Put nginx in front of the app",
    "asgi_app_processes": "Stop and disable the processes and timers no longer listed",
}


@pytest.mark.parametrize("tag", documented_tags())
def test_a_tag_alone_succeeds_runs_its_step_and_changes_nothing(tag):
    rc, output, changed = deploy("--tags", tag)
    assert rc == 0, output
    assert f"{ROLE_TASK}Refuse settings that cannot work]" in output, output
    assert f"{ROLE_TASK}{RAN[tag]}]" in output, output
    assert changed == 0, output


def test_configure_alone_stops_when_the_inputs_name_a_release_not_built(host, app_name):
    config = host.file(f"/etc/{app_name}/gunicorn_config.py").sha256sum
    # Another uv version names another release (the installer is part of its digest), which no run
    # has built on the host.
    rc, output, changed = deploy("--tags", "asgi_app_configure", asgi_app_uv_version="0.13.7")
    assert rc != 0, output
    assert f"{ROLE_TASK}Check that the release is built and checked]" in output, output
    assert "is not built on" in output and "--tags asgi_app_release" in output, output
    assert changed == 0, output
    assert host.file(f"/etc/{app_name}/gunicorn_config.py").sha256sum == config


def test_release_alone_stops_on_a_host_the_app_was_never_installed_on(host):
    rc, output, changed = deploy("--tags", "asgi_app_release", asgi_app_name="never-installed",
                                 asgi_app_bind="127.0.0.1:8099")
    assert rc != 0, output
    assert f"{ROLE_TASK}Check that the application is installed on the host]" in output, output
    assert "never-installed is not installed on" in output and "--tags asgi_app_install" in output, output
    assert changed == 0, output
    assert not host.file("/etc/never-installed").exists and not host.file("/opt/never-installed").exists


def test_what_configure_alone_changes_goes_live_in_the_same_run(host, app_name, worker_pids):
    def workers_now():
        pid = host.check_output(f"systemctl show -p MainPID --value {app_name}.service")
        return len(host.check_output(f"ps --ppid {pid} -o pid=").split())

    before = len(worker_pids())
    assert before > 1
    try:
        rc, output, changed = deploy("--tags", "asgi_app_configure", asgi_app_workers=before - 1)
        assert rc == 0, output
        assert "handover: changed: config" in output, output
        assert changed > 0, output
        # The service restarted onto the new config: its new master forks one worker fewer.
        deadline = time.monotonic() + 15
        while workers_now() != before - 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert workers_now() == before - 1
        # What went live reports the open files it got, as the host's /proc says, and warns when
        # the host allows fewer than asgi_app_limit_nofile (the test hosts cap them at 20,000).
        pid = host.check_output(f"systemctl show -p MainPID --value {app_name}.service")
        got = int(host.check_output(f"grep '^Max open files' /proc/{pid}/limits").split()[3])
        said = " ".join(output.split())  # the YAML callback folds long messages
        assert re.search(rf"{'WARNING. ' if got < 65536 else ''}{app_name} on \S+ runs with at most {got} open files",
                         said), output
    finally:
        rc, output, _ = deploy("--tags", "asgi_app_configure")
        assert rc == 0, output
