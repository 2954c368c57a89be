"""gunicorn_config.py as the role renders it: accepted by gunicorn itself, values as intended."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, TWO_CPUS

GUNICORN = Path(sys.executable).with_name("gunicorn")

VARIANTS = {
    "defaults": {},
    "unix socket, io workload": {"asgi_app_bind": "unix:/run/example/gunicorn.sock",
                                 "asgi_app_workload": "io"},
    "explicit workers, uvicorn options": {"asgi_app_workers": 3,
                                          "asgi_app_uvicorn_options": {"ws_ping_interval": 20.0,
                                                                       "ws_max_size": 1048576}},
    "deprecated uvicorn.workers path": {"asgi_app_worker_class": "uvicorn.workers.UvicornWorker"},
    "native asgi worker": {"asgi_app_worker_class": "asgi"},
    "long graceful timeout, no access log": {"asgi_app_graceful_timeout": 120,
                                             "asgi_app_access_log": False},
    "gunicorn 23 (no control socket)": {"asgi_app_gunicorn_version": "23.0.0"},
    "json access lines": {"asgi_app_access_log_format": "json"},
}


@pytest.fixture
def rendered(tmp_path, render):
    """Render a variant into tmp_path, with the example app where the role would copy it."""

    def _rendered(overrides):
        (tmp_path / "current").mkdir()
        (tmp_path / "current" / "app").symlink_to(REPO / "examples" / "app")
        variables = {"asgi_app_name": "example", "asgi_app_module": "example_app.main:app",
                     "asgi_app_src": str(REPO / "examples" / "app"), "asgi_app_root": str(tmp_path),
                     **overrides}
        config = tmp_path / "gunicorn_config.py"
        config.write_text(render("gunicorn_config.py.j2", TWO_CPUS, **variables))
        return config

    return _rendered


@pytest.mark.parametrize("variant", VARIANTS)
def test_gunicorn_check_config_accepts_it(rendered, variant):
    config = rendered(VARIANTS[variant])
    # In the service's working directory, as systemd starts it. No __pycache__ in examples/app:
    # the scenarios copy that directory onto their hosts.
    result = subprocess.run([str(GUNICORN), "--check-config", "--config", str(config)],
                            cwd=config.parent / "current" / "app", capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr


def test_baseline_values(rendered):
    settings = runpy.run_path(str(rendered({})))
    assert settings["workers"] == 5
    assert settings["timeout"] == 120
    assert settings["graceful_timeout"] == 30
    assert settings["keepalive"] == 5
    assert (settings["max_requests"], settings["max_requests_jitter"]) == (10000, 1000)
    assert (settings["accesslog"], settings["errorlog"], settings["loglevel"]) == ("-", "-", "info")
    assert settings["preload_app"] is True
    assert settings["worker_tmp_dir"] == "/run/example/gunicorn"
    assert settings["control_socket"] == "/run/example/gunicorn/gunicorn.ctl"


def test_uvicorn_gets_a_graceful_shutdown_below_gunicorns(rendered):
    settings = runpy.run_path(str(rendered({})))
    from uvicorn_worker import UvicornWorker

    worker = settings["worker_class"]
    assert issubclass(worker, UvicornWorker)
    assert worker.CONFIG_KWARGS["timeout_graceful_shutdown"] == 25 < settings["graceful_timeout"]
    assert worker.CONFIG_KWARGS["loop"] == UvicornWorker.CONFIG_KWARGS["loop"]


def test_uvicorn_options_reach_the_worker(rendered):
    settings = runpy.run_path(str(rendered(VARIANTS["explicit workers, uvicorn options"])))
    assert settings["workers"] == 3
    kwargs = settings["worker_class"].CONFIG_KWARGS
    assert (kwargs["ws_ping_interval"], kwargs["ws_max_size"]) == (20.0, 1048576)


def test_native_asgi_worker_is_named_not_subclassed(rendered):
    settings = runpy.run_path(str(rendered(VARIANTS["native asgi worker"])))
    assert settings["worker_class"] == "asgi"


def test_the_config_says_why_this_many_workers(rendered):
    text = rendered({}).read_text()
    assert "# 2 usable CPU(s), limited by online CPUs (online 2, affinity 2, cgroup quota none)." in text
    assert "# mixed rule 2 x cores + 1 = 5." in text


def test_control_socket_only_where_gunicorn_has_one(rendered):
    assert "control_socket" not in runpy.run_path(str(rendered(VARIANTS["gunicorn 23 (no control socket)"])))


@pytest.mark.parametrize("overrides, uvicorns_lines", [
    ({}, True),
    ({"asgi_app_access_log_format": "json"}, False),  # the worker's JSON lines instead
    ({"asgi_app_access_log_format": "json", "asgi_app_access_log": False}, True),  # no lines at all
])
def test_json_access_lines_take_the_place_of_uvicorns(rendered, overrides, uvicorns_lines):
    config = rendered(overrides)
    kwargs = runpy.run_path(str(config))["worker_class"].CONFIG_KWARGS
    assert kwargs.get("access_log", True) is uvicorns_lines
    assert ('access_log_format="json"' in config.read_text()) is not uvicorns_lines
