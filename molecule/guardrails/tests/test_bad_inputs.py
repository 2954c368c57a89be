"""A catalogue of bad inputs: the play fails before the first change, the message names the
variable, and the host is exactly as it was (files, unit, running process and its start)."""

import json
import os
import subprocess

import pytest

import probes
from guardrails import NAME, SCENARIO, deploy

# Each case: the extra vars, and what the message must contain (the variable, then the advice).
CASES = {
    "sync worker class": ({"asgi_app_worker_class": "sync"},
                          ["asgi_app_worker_class is 'sync'", "WSGI worker", "uvicorn_worker.UvicornWorker"]),
    "gthread worker class": ({"asgi_app_worker_class": "gthread"}, ["asgi_app_worker_class is 'gthread'"]),
    "gevent worker class": ({"asgi_app_worker_class": "gevent"}, ["asgi_app_worker_class is 'gevent'"]),
    "eventlet worker class": ({"asgi_app_worker_class": "eventlet"}, ["asgi_app_worker_class is 'eventlet'"]),
    "tornado worker class": ({"asgi_app_worker_class": "tornado"}, ["asgi_app_worker_class is 'tornado'"]),
    "gevent worker class path": ({"asgi_app_worker_class": "gunicorn.workers.ggevent.GeventWorker"},
                                 ["asgi_app_worker_class is 'gunicorn.workers.ggevent.GeventWorker'"]),
    "native asgi on gunicorn 26": ({"asgi_app_worker_class": "asgi", "asgi_app_gunicorn_version": "26.0.0"},
                                   ["asgi_app_gunicorn_version '26.0.0'", "27.0.0"]),
    "zero workers": ({"asgi_app_workers": 0}, ["asgi_app_workers is 0"]),
    "negative workers": ({"asgi_app_workers": -2}, ["asgi_app_workers is -2"]),
    "32 workers on this host": ({"asgi_app_workers": 32},
                                ["asgi_app_workers is 32", "asgi_app_allow_extra_workers"]),
    "workers that do not fit in memory": ({"asgi_app_workers": 4, "asgi_app_worker_memory_mb": 100000},
                                          ["asgi_app_workers is 4", "MB"]),
    "uvicorn timeout not below graceful": ({"asgi_app_uvicorn_graceful_timeout": 30},
                                           ["30 < 30 < 40", "asgi_app_uvicorn_graceful_timeout"]),
    "stop timeout below graceful": ({"asgi_app_timeout_stop_sec": 20},
                                    ["25 < 30 < 20", "asgi_app_timeout_stop_sec"]),
    "bind without a port": ({"asgi_app_bind": "localhost"}, ["asgi_app_bind is 'localhost'"]),
    "port out of range": ({"asgi_app_bind": "0.0.0.0:70000"}, ["asgi_app_bind is '0.0.0.0:70000'", "65535"]),
    "unix socket outside the runtime directory": ({"asgi_app_bind": "unix:/tmp/guard.sock"},
                                                  ["asgi_app_bind is 'unix:/tmp/guard.sock'", "/run/guard/"]),
    "attribute of an attribute": ({"asgi_app_module": "example_app.main:app.router"},
                                  ["asgi_app_module is 'example_app.main:app.router', which gunicorn refuses",
                                   "Failed to parse 'app.router' as an attribute name or function call."]),
    "gunicorn below 23": ({"asgi_app_gunicorn_version": "22.0.0"},
                          ["asgi_app_gunicorn_version is '22.0.0'", "23.0.0"]),
    "h11 below 0.16": ({"asgi_app_h11_min_version": "0.15.0"}, ["asgi_app_h11_min_version is '0.15.0'"]),
    "unknown workload": ({"asgi_app_workload": "fast"}, ["asgi_app_workload", "io, mixed, cpu"]),
    "source directory missing": ({"asgi_app_src": "/nonexistent/app"}, ["asgi_app_src is '/nonexistent/app'"]),
    "unknown installer": ({"asgi_app_installer": "poetry"}, ["asgi_app_installer", "uv, pip"]),
    "pip for a uv.lock": ({"asgi_app_installer": "pip"},
                          ["asgi_app_installer is 'pip', and the app's source has uv.lock", "asgi_app_installer: uv"]),
    "index authorities not on the controller": ({"asgi_app_index_ca": "/nonexistent/ca.pem"},
                                                ["asgi_app_index_ca is '/nonexistent/ca.pem'", "PEM file"]),
    "gunicorn other than the lock's": ({"asgi_app_gunicorn_version": "26.0.1"},
                                       ["the app's uv.lock pins gunicorn 27.0.1, and asgi_app_gunicorn_version is "
                                        "'26.0.1'", "Set asgi_app_gunicorn_version: '27.0.1'"]),
}


@pytest.fixture
def snapshot(host):
    """Everything a failed deploy must not touch: files, unit, the master process and its start."""

    def take():
        files = host.check_output(
            f"find /opt/{NAME} /etc/{NAME} /etc/systemd/system/{NAME}.service -printf '%p %s %T@ %m\\n' | sort")
        contents = host.check_output(
            f"sha256sum /etc/{NAME}/* /etc/systemd/system/{NAME}.service")
        unit = host.check_output(
            f"systemctl show {NAME} -p MainPID -p ActiveEnterTimestampMonotonic -p ActiveState -p NRestarts")
        return {"files": files, "contents": contents, "unit": unit}

    return take


@pytest.mark.parametrize("case", CASES)
def test_bad_input_changes_nothing(case, snapshot, app_url):
    extra_vars, expected = CASES[case]
    before = snapshot()
    rc, output = deploy(extra_vars)
    after = snapshot()
    message = next((line for line in output.splitlines() if expected[0] in line), output[-600:])
    print(f"\n{case}: {json.dumps(extra_vars)}\n  -> {message.strip()}")
    assert rc != 0, output[-2000:]
    for text in expected:
        assert text in output, f"{text!r} not in the play's output:\n{output[-3000:]}"
    assert "changed=0" in output, output[-1500:]
    assert after == before
    assert probes.http_get(app_url + "/health").status == 200


def test_host_without_systemd_is_refused():
    """A container of the same image whose PID 1 is not systemd."""
    name = f"asgi-app-{NAME}-no-systemd"
    test_image = os.environ.get("ASGI_APP_TEST_IMAGE", "asgi-app-test/debian-systemd:12")
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    subprocess.run(["docker", "run", "-d", "--name", name, test_image, "sleep", "600"],
                   check=True, capture_output=True)
    try:
        inventory = SCENARIO / ".no-systemd-inventory.yml"
        inventory.write_text(
            f"asgi_apps:\n  hosts:\n    {name}:\n      ansible_connection: community.docker.docker\n")
        rc, output = deploy({}, inventory=str(inventory))
        print("\n" + next(line for line in output.splitlines() if "not managed by systemd" in line))
        assert rc != 0
        assert "is not managed by systemd" in output
        assert "changed=0" in output
        listing = subprocess.run(["docker", "exec", name, "ls", "/opt", "/etc/systemd/system"],
                                 capture_output=True, text=True, check=True).stdout
        assert NAME not in listing
    finally:
        inventory.unlink(missing_ok=True)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_deprecated_worker_class_deploys_with_a_warning():
    rc, output = deploy({"asgi_app_worker_class": "uvicorn.workers.UvicornWorker"})
    warning = next(line for line in output.splitlines() if "[WARNING]" in line and "deprecated" in line)
    print(f"\n{warning}")
    assert rc == 0, output[-2000:]
    assert "set asgi_app_worker_class: uvicorn_worker.UvicornWorker" in output.replace("\n", " ")
    rc, output = deploy({})  # back to the supported class
    assert rc == 0, output[-2000:]
