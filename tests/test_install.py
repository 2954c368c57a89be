"""How a release's virtualenv is built (plugins/module_utils/asgi_app_install.py): what each kind of
source installs, with which installer, and where the app's lock and the role's pins disagree.
The example app's uv.lock is checked against its pyproject.toml and the role's defaults, and the
release's digest against the lock."""

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.asgi.gunicorn.plugins.filter.asgi_app_install import asgi_app_install_plan
from ansible_collections.asgi.gunicorn.plugins.module_utils import asgi_app_install as install
from ansible_collections.asgi.gunicorn.plugins.module_utils.asgi_app_source import inspect_source
from support import REPO, ROLE

EXAMPLE = REPO / "examples" / "app"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
SERVER = ["gunicorn==27.0.1", "uvicorn[standard]==0.54.0", "uvicorn-worker==0.4.0", "h11>=0.16.0", "setproctitle"]
UV, PY = "/usr/local/lib/asgi-app/uv-0.13.8/uv", "python3"
RELEASE, CODE = "/opt/shop/releases/abc", "/opt/shop/releases/abc/app"
UV_PIP = [UV, "pip", "install", "--python", f"{RELEASE}/venv/bin/python"]
PIP = [f"{RELEASE}/venv/bin/pip", "install"]
HASHED = """\
# uv pip compile --generate-hashes requirements.in
anyio==4.16.0 \\
    --hash=sha256:59bb03251907983d1603d27c3087ddb1e93299ea2163adcdba37899a4fb12ffb
gunicorn==23.0.0 \\
    --hash=sha256:aaaa  # via -r requirements.in
h11==0.14.0 ; python_version >= "3.8" \\
    --hash=sha256:bbbb
"""
LOCK = """\
version = 1
requires-python = ">=3.11"

[[package]]
name = "Gunicorn"
version = "27.0.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "numpy"
version = "2.2.6"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "numpy"
version = "2.3.1"
source = { registry = "https://pypi.org/simple" }

[[package]]
name = "shop"
version = "1.0.0"
source = { editable = "." }
"""


def plan(source, installer="uv", packages=SERVER, **kwargs):
    return asgi_app_install_plan(str(source), installer, packages, PY, UV, RELEASE, CODE,
                                 is_directory=source.is_dir(), **kwargs)


def write(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_a_uv_lock_is_exported_with_its_hashes_and_installed_with_them_checked(tmp_path):
    source = write(tmp_path / "app", {"uv.lock": LOCK, "pyproject.toml": "[project]\nname = 'shop'\n",
                   "requirements.txt": "flask\n"})
    result = plan(source)
    locked = f"{RELEASE}/locked-requirements.txt"
    assert (result["kind"], result["file"], result["problems"]) == ("uv.lock", "uv.lock", [])
    assert result["pins"] == {"gunicorn": ["27.0.1"], "numpy": ["2.2.6", "2.3.1"]}
    assert [step["argv"] for step in result["steps"]] == [
        [UV, "venv", "--quiet", "--python", PY, f"{RELEASE}/venv"],
        [UV, "export", "--quiet", "--locked", "--no-dev", "--no-emit-project", "--format", "requirements.txt",
         "--project", CODE, "--output-file", locked],
        UV_PIP + ["--require-hashes", "-r", locked],
        UV_PIP + ["-c", locked] + SERVER,
    ]


def test_hashed_requirements_are_installed_with_hashes_required_then_the_server_constrained_by_them(tmp_path):
    source = write(tmp_path / "app", {"requirements.txt": HASHED, "pyproject.toml": "[project]\nname = 'shop'\n"})
    result = plan(source, packages=["gunicorn==23.0.0", "h11>=0.14.0"])
    assert result["kind"] == "requirements.txt with hashes" and result["problems"] == []
    assert result["pins"] == {"anyio": ["4.16.0"], "gunicorn": ["23.0.0"], "h11": ["0.14.0"]}
    assert [step["argv"] for step in result["steps"]][1:] == [
        UV_PIP + ["--require-hashes", "-r", f"{CODE}/requirements.txt"],
        UV_PIP + ["-c", f"{CODE}/requirements.txt", "gunicorn==23.0.0", "h11>=0.14.0"],
    ]


def test_pip_is_refused_for_hashed_requirements(tmp_path):
    """pip turns on hash checking for the whole install once a file of it has hashes, and then
    refuses the server packages, which have none (seen on a host: "all requirements must have their
    versions pinned with ==")."""
    source = write(tmp_path / "app", {"requirements.txt": HASHED})
    problems = plan(source, packages=["gunicorn==23.0.0", "h11>=0.14.0"], installer="pip")["problems"]
    assert len(problems) == 1
    assert "asgi_app_installer is 'pip', and the app's requirements.txt has hashes" in problems[0]


@pytest.mark.parametrize("files, kind, app", [
    ({"requirements.txt": "fastapi>=0.115  # no hashes\n"}, "requirements.txt", ["-r", f"{CODE}/requirements.txt"]),
    ({"pyproject.toml": "[project]\nname = 'shop'\n"}, "pyproject.toml", [CODE]),
    ({"main.py": "app = None\n"}, "nothing", []),
])
def test_a_source_without_a_lock_is_resolved_with_the_server_in_one_step(tmp_path, files, kind, app):
    result = plan(write(tmp_path / "app", files))
    assert result["kind"] == kind and result["problems"] == []
    assert [step["argv"] for step in result["steps"]][1:] == [UV_PIP + app + SERVER]


def test_a_package_is_installed_with_the_server(tmp_path):
    result = asgi_app_install_plan("shop==1.4.0", "uv", SERVER, PY, UV, RELEASE, CODE, package="shop==1.4.0")
    assert result["kind"] == "package" and result["steps"][1]["argv"] == UV_PIP + ["shop==1.4.0"] + SERVER


def test_a_lock_that_pins_a_server_package_elsewhere_is_a_problem_naming_the_variable(tmp_path):
    source = write(tmp_path / "app", {"requirements.txt": HASHED})
    problems = plan(source)["problems"]
    assert len(problems) == 2, problems
    assert "requirements.txt pins gunicorn 23.0.0, and asgi_app_gunicorn_version is '27.0.1'" in problems[0]
    assert "Set asgi_app_gunicorn_version: '23.0.0'" in problems[0]
    assert "pins h11 0.14.0, below asgi_app_h11_min_version ('0.16.0')" in problems[1]


def test_a_lock_is_read_only_by_uv_and_only_with_its_project(tmp_path):
    with_project = write(tmp_path / "app", {"uv.lock": LOCK, "pyproject.toml": "[project]\nname = 'shop'\n"})
    assert "asgi_app_installer is 'pip', and the app's source has uv.lock" in plan(with_project, "pip")["problems"][0]
    alone = write(tmp_path / "alone", {"uv.lock": LOCK, "requirements.txt": "flask\n"})
    assert "uv.lock but no pyproject.toml" in plan(alone)["problems"][0]
    # A lock the source leaves out of the release (asgi_app_src_exclude) is not read either.
    assert plan(alone, exclude=["uv.lock"])["kind"] == "requirements.txt"


def test_a_lock_that_is_not_toml_fails_the_filter_with_the_path(tmp_path):
    source = write(tmp_path / "app", {"uv.lock": "[[package]\n", "pyproject.toml": ""})
    with pytest.raises(AnsibleFilterError, match="cannot read what the application's source .* installs"):
        plan(source)


def test_requirement_lines_are_read_as_pip_reads_them():
    read = install.read_requirements(
        "-r base.txt\n--index-url https://example.org/simple\nDjango_Rest.Framework[x]==3.16 \\\n"
        "    --hash=sha256:cc\n# gunicorn==1\nuvicorn>=0.30\n")
    assert read == {"hashed": True, "pins": {"django-rest-framework": ["3.16"]}}


def test_the_example_apps_lock_matches_its_project_and_the_roles_pins():
    """uv.lock is what pyproject.toml resolves to (uv lock --check), and it pins the server at the
    versions the role's defaults install, so the demo deploys it without a conflict."""
    uv = shutil.which("uv", path=str(REPO / ".venv" / "bin")) or shutil.which("uv")
    assert uv, "uv is not installed (requirements.txt lists it; run `make setup`)"
    check = subprocess.run([uv, "lock", "--check", "--offline", "--project", str(EXAMPLE)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    packages = ["gunicorn==" + DEFAULTS["asgi_app_gunicorn_version"],
                "uvicorn[standard]==" + DEFAULTS["asgi_app_uvicorn_version"],
                "uvicorn-worker==" + DEFAULTS["asgi_app_uvicorn_worker_version"],
                "h11>=" + DEFAULTS["asgi_app_h11_min_version"]]
    result = plan(EXAMPLE, packages=packages)
    assert result["kind"] == "uv.lock" and result["problems"] == []
    assert {name for name in install.server_pins(packages)} <= set(result["pins"])


def test_the_release_digest_covers_the_lock(tmp_path):
    source = shutil.copytree(EXAMPLE, tmp_path / "app")
    before = inspect_source(str(source))["digest"]
    lock = source / "uv.lock"
    lock.write_text(lock.read_text().replace('version = "27.0.1"', 'version = "27.0.2"', 1))
    assert inspect_source(str(source))["digest"] != before


def test_uv_is_fetched_once_as_the_binary_of_its_wheel(tmp_path, monkeypatch):
    """fetch_uv() asks pip for the pinned wheel of the host's architecture, keeps its binary packed
    in the cache, and does not ask again."""
    calls = []

    def pip_download(argv, **_):
        calls.append(argv)
        dest = argv[argv.index("--dest") + 1]
        with zipfile.ZipFile(f"{dest}/uv-0.13.8-py3-none-manylinux_2_17_aarch64.whl", "w") as wheel:
            wheel.writestr("uv-0.13.8.data/scripts/uv", b"\x7fELF binary")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(install.subprocess, "run", pip_download)
    first = install.fetch_uv("0.13.8", "aarch64", str(tmp_path), python="python3")
    assert install.fetch_uv("0.13.8", "aarch64", str(tmp_path), python="python3") == first
    assert calls == [["python3", "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                      "--dest", calls[0][calls[0].index("--dest") + 1], "--platform", "manylinux_2_17_aarch64",
                      "uv==0.13.8"]]
    with tarfile.open(first) as archive:
        member = archive.getmember("uv")
        assert (member.mode, archive.extractfile(member).read()) == (0o755, b"\x7fELF binary")


def test_a_uv_that_pip_cannot_fetch_is_an_error_with_pips_message(tmp_path):
    done = subprocess.run([sys.executable, install.SCRIPT, "fetch-uv", "--version", "0.0.0.0.1",
                           "--machine", "x86_64", "--cache", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1 and "asgi_app: cannot fetch uv 0.0.0.0.1: pip could not download" in done.stderr
    assert not list(tmp_path.glob("*.tar.gz"))


def test_the_export_step_refuses_a_lock_that_no_longer_matches_its_project(tmp_path):
    """The plan's export step, run by this checkout's uv with a cache of its own: the example's lock
    exports offline with a hash on every package, as a host of a wheelhouse runs it; once
    pyproject.toml asks for more, the same step fails as a builder runs it (uv resolves again from
    the index to tell), saying why."""
    uv = shutil.which("uv", path=str(REPO / ".venv" / "bin")) or shutil.which("uv")
    source = shutil.copytree(EXAMPLE, tmp_path / "app")
    release = tmp_path / "release"
    release.mkdir()

    def export(*options):
        step = asgi_app_install_plan(str(source), "uv", SERVER, PY, uv, str(release), str(source),
                                     is_directory=True)["steps"][1]
        return subprocess.run(step["argv"] + list(options), capture_output=True, text=True, check=False,
                              env={**os.environ, "UV_CACHE_DIR": str(tmp_path / "uv-cache")}, timeout=300)

    done = export("--offline")
    assert done.returncode == 0, done.stderr
    exported = (release / install.LOCKED_REQUIREMENTS).read_text()
    assert exported.count("==") >= 15 and exported.count("==") <= exported.count("--hash=sha256:")
    pyproject = source / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"fastapi>=0.115,<1",', '"fastapi>=0.115,<1", "httpx>=0.28",'))
    done = export()
    assert done.returncode != 0 and "The lockfile at `uv.lock` needs to be updated" in done.stderr, done.stderr


def test_from_a_wheelhouse_the_same_steps_install_with_no_index(tmp_path):
    """asgi_app_wheelhouse: a host that installs from the deploy's wheels runs the same steps, with
    no index and the lock exported offline; a project built on each host names its build requirements."""
    locked = plan(write(tmp_path / "app", {"uv.lock": LOCK, "pyproject.toml": "[project]\nname = 'shop'\n"}))
    wheelhouse = ["--no-index", "--find-links", f"{RELEASE}/wheelhouse"]
    assert [step["argv"] for step in locked["wheelhouse_steps"]] == [
        locked["steps"][0]["argv"],
        locked["steps"][1]["argv"] + ["--offline"],
        UV_PIP + wheelhouse + ["--require-hashes", "-r", f"{RELEASE}/locked-requirements.txt"],
        UV_PIP + wheelhouse + ["-c", f"{RELEASE}/locked-requirements.txt"] + SERVER,
    ]
    assert locked["freeze"] == [UV, "pip", "freeze", "--python", f"{RELEASE}/venv/bin/python"]
    project = plan(write(tmp_path / "project", {"pyproject.toml": '[build-system]\nrequires = ["hatchling>=1.26"]\n'}),
                   installer="pip")
    assert project["build_requires"] == ["hatchling>=1.26"]
    assert project["freeze"] == [f"{RELEASE}/venv/bin/pip", "freeze"]
    assert project["wheelhouse_steps"][1]["argv"] == PIP + wheelhouse + [CODE] + SERVER


def test_pip_is_fetched_once_as_its_wheel(tmp_path, monkeypatch):
    calls = []

    def pip_download(argv, **_):
        calls.append(argv)
        dest = argv[argv.index("--dest") + 1]
        with zipfile.ZipFile(f"{dest}/pip-26.3-py3-none-any.whl", "w") as wheel:
            wheel.writestr("pip/__main__.py", "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(install.subprocess, "run", pip_download)
    first = install.fetch_pip("26.3", str(tmp_path), python="python3")
    assert install.fetch_pip("26.3", str(tmp_path), python="python3") == first
    assert first == str(tmp_path / "pip-26.3-py3-none-any.whl")
    assert len(calls) == 1 and calls[0][-1] == "pip==26.3"
