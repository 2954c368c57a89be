"""How a release's virtualenv is built: the installer, what the app's source asks to install, and
the server packages the role pins, checked against the app's lock.

The asgi_app role builds each release's virtualenv with uv (the default) or pip. What goes into it
comes from the app's source, in this order of precedence:

- ``uv.lock`` beside ``pyproject.toml``: the environment is exactly the lock. uv exports it with
  its hashes (``uv export --locked``, which fails when the lock no longer matches pyproject.toml)
  and installs that export with ``--require-hashes``. The project itself runs from the release's
  code directory, as with a requirements file (``uv sync`` would install it editable, pointing
  there). Only uv reads uv.lock.
- ``requirements.txt`` with ``--hash=`` options: installed with ``--require-hashes``, so a file
  whose hash does not match is refused.
- ``requirements.txt`` without hashes, a ``pyproject.toml`` project, or a package (a wheel, an
  sdist or a pip requirement, asgi_app_package): installed with the server packages in one
  resolution, so a requirement that conflicts with them is the installer's error.

The server packages (gunicorn, uvicorn, uvicorn-worker, h11's floor, ...) are pinned by the role.
With a lock or hashed requirements they are installed after it, constrained by it, so nothing the
app locked moves; lock_conflicts() says before anything is installed where the app's lock pins one
of them to another version than the role's variable, which is a problem the preflight reports.

With a wheelhouse (asgi_app_wheelhouse), the release's packages come from the index once per
deploy: the first host of a batch that builds the release installs from the index, then makes a
wheel of every package the virtualenv holds (pip's own wheel runs ``pip wheel --no-deps`` on the
exact versions, and the build requirements of a project that is built on each host); the controller
keeps them, and every other host installs from them with ``--no-index --find-links``, with the same
steps, so hashes are checked against the lock again.

uv itself reaches the host as the binary of its wheel from the package index, at the pinned
version: the controller fetches it with pip (its own index settings, certificates and proxy) and
keeps it, packed, in its cache (fetch_uv(), ``python asgi_app_install.py fetch-uv``); the role
unpacks it on each host that does not have that version yet.

Standard library only. The collection's filter asgi_app_install_plan imports this module in
Ansible's process, and the role runs this same file as a script on the controller to fetch uv.
"""

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

try:  # Python 3.11 and later: every controller the supported ansible-core versions run on.
    import tomllib
except ImportError:  # pragma: no cover - read as "no lock" where tomllib is missing
    tomllib = None

# This file, as the role runs it: python SCRIPT fetch-uv ...
SCRIPT = os.path.abspath(__file__)
# Where the controller keeps what it fetched (uv, pip) and, in wheelhouses/, each release's wheels.
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                     "asgi.gunicorn")

INSTALLERS = ("uv", "pip")
UV_LOCK, HASHED, REQUIREMENTS, PYPROJECT, PACKAGE, NOTHING = (
    "uv.lock", "requirements.txt with hashes", "requirements.txt", "pyproject.toml", "package", "nothing")
# The file a lock is exported to, in the release directory: what the release installed, kept.
LOCKED_REQUIREMENTS = "locked-requirements.txt"
# Where a host unpacks the deploy's wheelhouse, in the release directory, while it installs from it.
WHEELHOUSE = "wheelhouse"
# The role variable behind each server package's pin, for the message of a conflict.
SERVER_VARIABLES = {
    "gunicorn": "asgi_app_gunicorn_version",
    "uvicorn": "asgi_app_uvicorn_version",
    "uvicorn-worker": "asgi_app_uvicorn_worker_version",
    "h11": "asgi_app_h11_min_version",
    "prometheus-client": "asgi_app_prometheus_client_version",
}
REQUIREMENT_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(==|>=)?\s*([^\s;,]*)")


def normalize(name):
    """A distribution's name as indexes compare it (PEP 503): case and runs of -_. do not count."""
    return re.sub(r"[-_.]+", "-", name).lower()


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", str(text))[:4])


def _logical_lines(text):
    """A requirements file's lines, continuation lines joined and comments removed."""
    for line in re.sub(r"\\\r?\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            yield line


def read_requirements(text):
    """{"hashed": whether any requirement has --hash=, "pins": {name: [versions pinned with ==]}}."""
    hashed, pins = False, {}
    for line in _logical_lines(text):
        hashed = hashed or "--hash=" in line
        match = REQUIREMENT_RE.match(line)
        if line.startswith("-") or not match:
            continue
        if match.group(2) == "==":
            pins.setdefault(normalize(match.group(1)), []).append(match.group(3))
    return {"hashed": hashed, "pins": pins}


def read_uv_lock(text):
    """{"pins": {name: [versions]}}. A lock may hold one package at several versions (for
    different Python versions or platforms): each is a version the lock allows. The project and
    the members of its workspace (an editable or a virtual source) are code, not pins."""
    pins = {}
    for package in tomllib.loads(text).get("package", []):
        source = package.get("source", {})
        if "editable" not in source and "virtual" not in source:
            pins.setdefault(normalize(package["name"]), []).append(str(package.get("version", "")))
    return {"pins": pins}


def read_source(source, is_directory, excluded=None):
    """What the app's source asks to install: {"kind", "file", "pins"}. excluded(path,
    is_dir) says which files the release leaves out (asgi_app_src_exclude): those are not read."""
    if not is_directory:
        return {"kind": PACKAGE if source else NOTHING, "file": "", "pins": {}}

    def text(name):
        path = os.path.join(source, name)
        if not os.path.isfile(path) or (excluded and excluded(name, False)):
            return None
        with open(path, encoding="utf-8") as handle:
            return handle.read()

    lock, pyproject, requirements = text("uv.lock"), text("pyproject.toml"), text("requirements.txt")
    if lock is not None:
        return {"kind": UV_LOCK, "file": "uv.lock", **read_uv_lock(lock), "pyproject": pyproject is not None}
    if requirements is not None:
        read = read_requirements(requirements)
        return {"kind": HASHED if read["hashed"] else REQUIREMENTS, "file": "requirements.txt", "pins": read["pins"]}
    if pyproject is not None:
        build = tomllib.loads(pyproject).get("build-system", {})
        return {"kind": PYPROJECT, "file": "pyproject.toml", "pins": {},
                "build_requires": list(build.get("requires", ["setuptools>=40.8.0"]))}
    return {"kind": NOTHING, "file": "", "pins": {}}


def server_pins(packages):
    """{name: (operator, version)} of the role's server packages ("gunicorn==27.0.1", "h11>=0.16.0")."""
    pins = {}
    for package in packages:
        match = REQUIREMENT_RE.match(package)
        if match and match.group(2):
            pins[normalize(match.group(1))] = (match.group(2), match.group(3))
    return pins


def lock_conflicts(read, packages):
    """Where the app's lock pins a server package to a version the role's pin does not allow."""
    problems = []
    for name, (operator, wanted) in server_pins(packages).items():
        locked = read["pins"].get(name)
        if not locked:
            continue
        variable = SERVER_VARIABLES.get(name, name)
        if operator == "==" and wanted not in locked:
            problems.append(
                f"the app's {read['file']} pins {name} {' or '.join(locked)}, and {variable} is '{wanted}': the "
                f"role installs {name} {wanted} and would not keep the lock. Set {variable}: '{locked[0]}' to "
                f"deploy the locked version, or update the lock to {name}=={wanted}.")
        elif operator == ">=" and any(version_tuple(v) < version_tuple(wanted) for v in locked):
            problems.append(
                f"the app's {read['file']} pins {name} {' or '.join(locked)}, below {variable} ('{wanted}'), the "
                f"oldest the role deploys: update the lock to {name}>={wanted}.")
    return problems


def install_steps(installer, read, uv, python, release_dir, code_dir, package, packages, wheelhouse=None):
    """The commands that build the release's virtualenv, in order: [{"name", "argv"}]; with a
    wheelhouse directory, from it alone (no index)."""
    venv = f"{release_dir}/venv"
    offline = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    if installer == "uv":
        steps = [{"name": "create the virtualenv", "argv": [uv, "venv", "--quiet", "--python", python, venv]}]
        install = [uv, "pip", "install", "--python", f"{venv}/bin/python"] + offline
    else:
        steps = [{"name": "create the virtualenv", "argv": [python, "-m", "venv", venv]}]
        install = [f"{venv}/bin/pip", "install"] + offline
    kind = read["kind"]
    if kind in (UV_LOCK, HASHED):
        locked = f"{code_dir}/{read['file']}"
        if kind == UV_LOCK:
            locked = f"{release_dir}/{LOCKED_REQUIREMENTS}"
            # The lock is checked against the project alone: an index the deploy installs from
            # (asgi_app_index_url) is not the lock's, and uv would take it for a change of the lock.
            steps.append({"name": "export uv.lock with its hashes (fails if it does not match pyproject.toml)",
                          "argv": [uv, "export", "--quiet", "--locked", "--no-dev", "--no-emit-project",
                                   "--format", "requirements.txt", "--project", code_dir, "--output-file", locked]
                          + (["--offline"] if wheelhouse else []), "index": False})
        steps.append({"name": f"install the app's {read['file']} with its hashes checked",
                      "argv": install + ["--require-hashes", "-r", locked]})
        steps.append({"name": f"install the server packages, keeping what {read['file']} pins",
                      "argv": install + ["-c", locked] + list(packages)})
        return steps
    app = {REQUIREMENTS: ["-r", f"{code_dir}/requirements.txt"], PYPROJECT: [code_dir],
           PACKAGE: [package], NOTHING: []}[kind]
    name = {REQUIREMENTS: "the app's requirements.txt", PYPROJECT: "the app's project",
            PACKAGE: "the app's package", NOTHING: "nothing of the app's"}[kind]
    steps.append({"name": f"install the server packages and {name}, resolved together",
                  "argv": install + app + list(packages)})
    return steps


def install_plan(source, is_directory, installer, uv, python, release_dir, code_dir, package, packages,
                 excluded=None):
    """What the filter asgi_app_install_plan returns: how the source is installed, the steps, and
    the problems that stop a deploy before anything changes."""
    read = read_source(source, is_directory, excluded)
    problems = []
    if installer not in INSTALLERS:
        problems.append(f"asgi_app_installer is '{installer}': use uv (the default) or pip.")
    if read["kind"] == UV_LOCK and not read["pyproject"]:
        problems.append("the app's source has uv.lock but no pyproject.toml, which the lock is made from: "
                        "deploy the project's directory with both, as `uv lock` left them.")
    if installer == "pip" and read["kind"] == HASHED:
        problems.append("asgi_app_installer is 'pip', and the app's requirements.txt has hashes: once a file of the "
                        "install has hashes pip wants one for every package, and the server packages the role adds "
                        "have none. Set asgi_app_installer: uv (the default), which checks the file's hashes and "
                        "installs the server packages beside them.")
    if installer in INSTALLERS and read["kind"] == UV_LOCK and installer != "uv":
        problems.append("asgi_app_installer is 'pip', and the app's source has uv.lock, which only uv reads: "
                        "set asgi_app_installer: uv to deploy what the lock says, or remove uv.lock and "
                        "give a requirements.txt.")
    problems += lock_conflicts(read, packages)
    arguments = (installer, read, uv, python, release_dir, code_dir, package, packages)
    venv = f"{release_dir}/venv"
    return {**read, "installer": installer, "problems": problems, "script": SCRIPT, "cache": CACHE,
            "freeze": [uv, "pip", "freeze", "--python", f"{venv}/bin/python"] if installer == "uv"
            else [f"{venv}/bin/pip", "freeze"],
            "steps": install_steps(*arguments),
            "wheelhouse_steps": install_steps(*arguments, wheelhouse=f"{release_dir}/{WHEELHOUSE}")}


def _fetch(dest, requirement, make, python, platform=None):
    """DEST, made once by make(wheel, scratch) from the wheel of REQUIREMENT that pip downloads
    from the controller's package index (for PLATFORM when given), and reused after."""
    if os.path.isfile(dest):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(dest)) as scratch:
        download = subprocess.run(
            [python, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", scratch]
            + (["--platform", platform] if platform else []) + [requirement],
            capture_output=True, text=True, check=False)
        wheels = [name for name in os.listdir(scratch) if name.endswith(".whl")]
        if download.returncode != 0 or not wheels:
            raise RuntimeError(f"pip could not download {requirement}{' for ' + platform if platform else ''}: "
                               f"{(download.stderr or download.stdout).strip()}")
        os.replace(make(os.path.join(scratch, wheels[0]), scratch), dest)
    return dest


def fetch_uv(version, machine, cache=None, python=sys.executable):
    """The path of a .tar.gz holding uv VERSION's binary for a Linux host of architecture MACHINE,
    from the wheel pip downloads from the controller's package index; kept in CACHE and reused."""

    def pack(wheel, scratch):
        with zipfile.ZipFile(wheel) as opened:
            binary = opened.read(f"uv-{version}.data/scripts/uv")
        packed = os.path.join(scratch, "uv.tar.gz")
        with tarfile.open(packed, "w:gz", compresslevel=6) as archive:
            info = tarfile.TarInfo("uv")
            info.size, info.mode = len(binary), 0o755
            archive.addfile(info, io.BytesIO(binary))
        return packed

    cache = cache or CACHE
    return _fetch(os.path.join(cache, f"uv-{version}-{machine}.tar.gz"), f"uv=={version}", pack, python,
                  f"manylinux_2_17_{machine}")


def fetch_pip(version, cache=None, python=sys.executable):
    """The path of pip VERSION's wheel (pure Python: it runs as ``python PIP.whl/pip``), from the
    controller's package index, kept in CACHE and reused."""
    cache = cache or CACHE
    return _fetch(os.path.join(cache, f"pip-{version}-py3-none-any.whl"), f"pip=={version}",
                  lambda wheel, scratch: wheel, python)


# --- Command line --------------------------------------------------------------------------------
# A command on the controller (the role runs `python asgi_app_install.py fetch-uv ...` there), never
# code inside a module on a host, so it prints and exits as commands do; ansible-test's pylint,
# which takes every file in module_utils for module code, would have it call exit_json instead.
# pylint: disable=ansible-bad-function


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fetch uv's binary, or pip's wheel, from the package index.")
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch-uv", help="print the path of a .tar.gz holding uv's binary")
    fetch.add_argument("--version", required=True, help="uv's version, such as 0.13.8")
    fetch.add_argument("--machine", required=True, help="the host's architecture (uname -m), such as x86_64")
    fetch.add_argument("--cache", help="where fetched binaries are kept (default: ~/.cache/asgi.gunicorn)")
    pip = commands.add_parser("fetch-pip", help="print the path of pip's wheel, which runs as python PIP.whl/pip")
    pip.add_argument("--version", required=True, help="pip's version, such as 26.3")
    pip.add_argument("--cache", help="where fetched wheels are kept (default: ~/.cache/asgi.gunicorn)")
    args = parser.parse_args(argv)
    try:
        print(fetch_uv(args.version, args.machine, args.cache) if args.command == "fetch-uv"
              else fetch_pip(args.version, args.cache))
    except (RuntimeError, KeyError, OSError) as exc:
        print(f"asgi_app: cannot fetch {args.command.removeprefix('fetch-')} {args.version}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
