"""The example app is a uv project: its release holds exactly what its uv.lock says, read here from
the lock itself (not from the export the role installs), and uv installed it, not pip."""

import json
import tomllib
from pathlib import Path

from packaging.markers import Marker

LOCK = Path(__file__).resolve().parents[3] / "examples" / "app" / "uv.lock"
UV = "/usr/local/lib/asgi-app/uv-0.13.8/uv"
# The role's own packages that the example's lock does not name: what the release may hold beyond it.
ROLE_ONLY = {"setproctitle"}
# The values markers are evaluated against, as the release's interpreter has them.
MARKER_ENVIRONMENT = (
    "import json, os, platform, sys; "
    "print(json.dumps({'python_version': '%d.%d' % sys.version_info[:2], "
    "'python_full_version': platform.python_version(), 'os_name': os.name, 'sys_platform': sys.platform, "
    "'platform_machine': platform.machine(), 'platform_system': platform.system(), "
    "'platform_release': platform.release(), 'platform_version': platform.version(), "
    "'platform_python_implementation': platform.python_implementation(), "
    "'implementation_name': sys.implementation.name, 'implementation_version': platform.python_version()}))")


def locked_for(environment):
    """{name: version} of the packages the lock installs on a host with this marker environment:
    the project's dependencies and theirs, with their extras, along the edges whose marker holds."""
    packages = {package["name"]: package for package in tomllib.loads(LOCK.read_text())["package"]}
    project = next(name for name, package in packages.items() if package["source"].get("editable") == ".")
    wanted, seen = [(project, ())], set()
    while wanted:
        name, extras = wanted.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        package = packages[name]
        edges = package.get("dependencies", []) + [
            edge for extra in extras for edge in package.get("optional-dependencies", {}).get(extra, [])]
        for edge in edges:
            if "marker" not in edge or Marker(edge["marker"]).evaluate(environment):
                wanted.append((edge["name"], tuple(edge.get("extra", ()))))
    return {name: packages[name]["version"] for name, _ in seen if name != project}


def test_the_release_holds_exactly_what_uv_lock_says(host, app_name):
    venv = f"/opt/{app_name}/current/venv"
    environment = json.loads(host.check_output(f"{venv}/bin/python -c \"{MARKER_ENVIRONMENT}\""))
    frozen = dict(line.split("==") for line in host.check_output(f"{UV} pip freeze --python {venv}/bin/python")
                  .splitlines())
    locked = locked_for(environment)
    assert len(locked) >= 15, locked
    assert {name: version for name, version in frozen.items() if name not in ROLE_ONLY} == locked
    assert set(frozen) - set(locked) == ROLE_ONLY
    # uv built it: a virtualenv without pip, and the export the lock was installed from, kept.
    assert not host.file(f"{venv}/bin/pip").exists
    export = host.file(f"/opt/{app_name}/current/locked-requirements.txt").content_string
    assert "--hash=sha256:" in export and "uv export --locked" in export
