"""Fixtures shared by every scenario's testinfra tests.

A scenario's molecule.yml gives the app's name and URL through the verifier's environment
(ASGI_APP_NAME, ASGI_APP_URL). When a test fails, the service's journal is attached to the
report, so a red run explains itself.
"""

import os
import shlex

import pytest


@pytest.fixture(scope="module")
def app_name():
    return os.environ["ASGI_APP_NAME"]


@pytest.fixture(scope="module")
def app_url():
    return os.environ["ASGI_APP_URL"].rstrip("/")


@pytest.fixture(scope="module")
def service(host, app_name):
    """The running unit as systemd sees it: main PID, invocation, user."""
    unit = f"{app_name}.service"
    props = host.check_output(
        f"systemctl show {unit} -p MainPID -p InvocationID -p User -p ActiveState"
    )
    values = dict(line.split("=", 1) for line in props.splitlines())
    return {
        "unit": unit,
        "main_pid": int(values["MainPID"]),
        "invocation": values["InvocationID"],
        "user": values["User"],
    }


@pytest.fixture(scope="module")
def journal(host, service):
    """Lines the service logged since it last started."""

    def read():
        return host.check_output(
            f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={shlex.quote(service['invocation'])}"
        )

    return read


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    host = item.funcargs.get("host")
    name = os.environ.get("ASGI_APP_NAME")
    if host is None or not name:
        return
    lines = host.run(f"journalctl --unit {name}.service --lines 40 --no-pager").stdout
    report.sections.append((f"journal of {name}.service (last 40 lines)", lines))
