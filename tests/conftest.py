"""Fixtures of the fast tests: the role's Python and templates, and a gunicorn serving the example
app, without any host. Plain helpers are in support.py; the probes in tools/probes/."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from probes import stop_session
from support import REPO, ROLE, TWO_CPUS, WORKER_MODULE_DIR, free_port, load_module, wait_for

# The role's worker module, importable here and in the gunicorns the tests start (see support.py).
sys.path.insert(0, str(WORKER_MODULE_DIR))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WORKER_MODULE_DIR), os.environ.get("PYTHONPATH")]))

GUNICORN = Path(sys.executable).parent / "gunicorn"


@pytest.fixture(scope="session")
def sizing():
    """plugins/filter/asgi_app.py, the filters the role computes derived values with."""
    return load_module("asgi_app_filters", REPO / "plugins" / "filter" / "asgi_app.py")


@pytest.fixture(scope="session")
def host_resources():
    """roles/asgi_app/files/host_resources.py, the script the role runs on the target."""
    return load_module("host_resources", ROLE / "files" / "host_resources.py")


@pytest.fixture(scope="session")
def render():
    """Render one of the role's templates as the role would: render(template, resources, **vars)."""
    return load_module("render_role", REPO / "tools" / "render_role.py").render


@pytest.fixture
def start_gunicorn(tmp_path, render):
    """start_gunicorn(*extra_args) -> (base_url, process): a gunicorn master serving the example
    app with two workers, the role's gunicorn_config.py, and its log in tmp_path/gunicorn.log."""
    processes = []

    def start(*extra_args: str):
        port = free_port()
        log = tmp_path / "gunicorn.log"
        config = tmp_path / "gunicorn_config.py"
        config.write_text(render("gunicorn_config.py.j2", TWO_CPUS, asgi_app_name="example",
                                 asgi_app_module="example_app.main:app", asgi_app_src="examples/app"))
        # The role's config, with what belongs to the host overridden on the command line; started
        # in the app's directory as systemd would. --no-control-socket: gunicorn >= 24 otherwise
        # creates ~/.gunicorn/gunicorn.ctl.
        command = [str(GUNICORN), "--config", str(config), "-w", "2", "-b", f"127.0.0.1:{port}",
                   "--worker-tmp-dir", str(tmp_path), "--no-control-socket", *extra_args]
        with open(log, "w") as output:
            # No __pycache__ in examples/app: the scenarios copy that directory onto their hosts.
            process = subprocess.Popen(command, cwd=REPO / "examples" / "app", stdout=output,
                                       stderr=subprocess.STDOUT,
                                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                                       start_new_session=True)
        processes.append(process)
        base_url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log.read_text()}")
            try:
                return httpx.get(base_url + "/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, 20, "/health")
        return base_url, process

    yield start
    for process in processes:
        stop_session(process)


@pytest.fixture
def gunicorn(start_gunicorn):
    """A gunicorn master serving the example app with two workers: (base_url, process)."""
    return start_gunicorn()
