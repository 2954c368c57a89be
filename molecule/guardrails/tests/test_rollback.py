"""Going back: a new release that imports but does not answer its health check is rolled back by
the deploy itself, and playbooks/rollback.yml returns to the release before the current one."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import probes
from guardrails import NAME, deploy

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "app"


def app_copy(tmp_path, edit, module="main.py"):
    source = tmp_path / "app"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    edited = source / "example_app" / module
    edited.write_text(edit(edited.read_text()))
    return source


def current(host):
    return host.file(f"/opt/{NAME}/current").linked_to


def test_unhealthy_release_is_rolled_back(host, tmp_path, app_url):
    running = current(host)
    unhealthy = app_copy(tmp_path, lambda text: text.replace(
        'return {"status": "ok", "version": VERSION, "pid": os.getpid()}',
        'raise RuntimeError("health check fails in this release")'))
    rc, output = deploy({"asgi_app_src": str(unhealthy), "asgi_app_health_timeout": 10})
    flat = " ".join(output.split())
    # Its standby never answered, so it received no request; the standby's unit changed with the
    # health timeout and went back too.
    went_back = (f"It went back to what served before (release {Path(running).name}, {NAME}-standby.service), "
                 "which answers again")
    print(f"\n{went_back}: {went_back in flat}")
    assert rc != 0
    assert went_back in flat, output[-3000:]
    assert f"{NAME}-standby.service, started on what changed, did not answer /health" in flat
    assert "the release that failed was removed" in flat
    assert current(host) == running
    assert probes.http_get(app_url + "/health").status == 200
    assert host.check_output(f"ls /opt/{NAME}/releases").split() == [Path(running).name]


def test_rollback_playbook_returns_to_the_previous_release(host, tmp_path, app_url):
    first = current(host)
    newer = app_copy(tmp_path, lambda text: text.replace('__version__ = "1.0.0"', '__version__ = "2.0.0"'),
                     module="__init__.py")
    rc, output = deploy({"asgi_app_src": str(newer)})
    assert rc == 0, output[-2000:]
    second = current(host)
    assert second != first
    assert probes.http_get(app_url + "/health").body["version"] == "2.0.0"

    # Molecule's inventory reaches the container as root, with no sudo to become through.
    extra = {"asgi_app_name": NAME, "asgi_app_module": "example_app.main:app",
             "asgi_app_src": str(newer), "asgi_app_bind": "0.0.0.0:8000", "ansible_become": False}
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(REPO / "playbooks" / "rollback.yml"),
         "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    print(f"\nrollback.yml: current went from {Path(second).name} back to {Path(current(host)).name}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert current(host) == first
    assert probes.http_get(app_url + "/health").body["version"] == "1.0.0"
