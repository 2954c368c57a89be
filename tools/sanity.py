#!/usr/bin/env python3
"""Run `ansible-test sanity` on the collection as users install it: the built tarball.

Builds the collection with `ansible-galaxy collection build`, installs the tarball into a scratch
tree (ansible-test runs only from a directory ending in ansible_collections/NAMESPACE/NAME) and
runs `ansible-test sanity --venv --python 3.11` there. After ansible-test's own output (its
summary names the failed tests), prints how many tests passed, failed and were skipped; exits
non-zero when any test fails or none passed. `make sanity` runs it.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from xml.etree import ElementTree

import yaml

REPO = Path(__file__).resolve().parent.parent
# ansible-core 2.19 runs on the controller's Python 3.11 (2.20 needs 3.12).
PYTHON = "3.11"
# ansible-test's --venv bootstraps pip in each virtualenv it makes with this script when it exists
# (ansible_test/_util/target/setup/requirements.py), and downloads it from its own file host
# otherwise.
PIP_BOOTSTRAP_CACHE = Path("~/.ansible/test/cache").expanduser()
# The stand-in for that download: pip's own wheel from PyPI, run as get-pip.py would run it. It
# installs pip and the packages ansible-test asks for, without setuptools and wheel, which the
# arguments --no-setuptools and --no-wheel (get-pip.py's own) ask to leave out.
PIP_STAND_IN = """\
# ansible-test's pip bootstrap, made by the collection's tools/sanity.py: pip's wheel from PyPI.
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "{wheel}"))
from pip._internal.cli.main import main  # noqa: E402 (found in the wheel just put on sys.path)

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall", *args]))
"""


def pip_version() -> str:
    """The pip version ansible-test bootstraps for PYTHON, from ansible-test itself."""
    # Not a public API: ansible-test keeps the version in this function and nowhere else.
    from ansible_test._internal.python_requirements import get_venv_packages
    return get_venv_packages(SimpleNamespace(version=PYTHON))["pip"]


def provide_pip_bootstrap() -> None:
    """Write the stand-in for ansible-test's pip bootstrap script unless one is cached already.

    Where ansible-test's file host is reachable (GitHub's runners) the stand-in does what the
    downloaded script would; where it is not (machines that reach only package registries) it is
    the only way --venv works.
    """
    version = pip_version()
    script = PIP_BOOTSTRAP_CACHE / f"get_pip_{version.replace('.', '_')}.py"
    if script.exists():
        return
    wheel = f"pip-{version}-py3-none-any.whl"
    PIP_BOOTSTRAP_CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--dest", str(PIP_BOOTSTRAP_CACHE), f"pip=={version}"], check=True)
    if not (PIP_BOOTSTRAP_CACHE / wheel).exists():
        sys.exit(f"sanity: pip download left no {wheel} in {PIP_BOOTSTRAP_CACHE}")
    script.write_text(PIP_STAND_IN.format(wheel=wheel))
    print(f"sanity: ansible-test's pip bootstrap is {script} (pip {version} from PyPI)")


def quiet(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run a step whose output matters only when it fails."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"sanity: {' '.join(command[:3])} failed:\n{result.stdout}{result.stderr}")


def results(collection: Path) -> dict[str, list[str]]:
    """The tests of the run by outcome, from the JUnit files ansible-test wrote (--junit)."""
    outcomes = {"passed": [], "failed": [], "skipped": []}
    for path in sorted((collection / "tests" / "output" / "junit").glob("*.xml")):
        for case in ElementTree.parse(path).iter("testcase"):
            outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                       else "skipped" if case.find("skipped") is not None else "passed")
            outcomes[outcome].append(case.get("name"))
    return outcomes


def main() -> int:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    label = f"{galaxy['namespace']}.{galaxy['name']} {galaxy['version']}"
    # The collection as a user gets it: built and installed without this checkout's Ansible
    # settings (ansible.cfg's collections path leads back to the repository, which would make the
    # install find the collection "already installed").
    env = {name: value for name, value in os.environ.items() if name != "ANSIBLE_CONFIG"}
    provide_pip_bootstrap()
    with tempfile.TemporaryDirectory(prefix="asgi-sanity-") as scratch:
        scratch = Path(scratch)
        tarball = scratch / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
        quiet(["ansible-galaxy", "collection", "build", "--output-path", str(scratch), str(REPO)], scratch, env)
        quiet(["ansible-galaxy", "collection", "install", "--offline", "--force", "-p", str(scratch), str(tarball)],
              scratch, env)
        collection = scratch / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
        run = subprocess.run(["ansible-test", "sanity", "--venv", "--python", PYTHON, "--junit", "--color", "no"],
                             cwd=collection, env=env, check=False)
        outcomes = results(collection)
    total = sum(len(names) for names in outcomes.values())
    print(f"sanity: {total} tests on {label} (the built tarball, installed): {len(outcomes['passed'])} passed, "
          f"{len(outcomes['failed'])} failed, {len(outcomes['skipped'])} skipped")
    for outcome in ("failed", "skipped"):
        if outcomes[outcome]:
            print(f"sanity: {outcome}: {', '.join(outcomes[outcome])}")
    if run.returncode != 0 or outcomes["failed"]:
        print(f"sanity: FAILED (ansible-test exited {run.returncode})", file=sys.stderr)
        return 1
    if not outcomes["passed"]:
        print("sanity: FAILED: ansible-test passed no test (no JUnit results in tests/output/junit)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
