"""Checks of the asgi_app role's inputs, made before anything on the host changes.

Each problem is described with the variable, the value given, why it cannot work and what to
set instead, and all of them are returned at once (the role's preflight refuses to go on while
there is one). What passes comes back normalized (the bind split into its parts, the worker
class into module and class) for the templates. A removal (asgi_app_state: absent) needs only
the names and directories it removes, so only those are checked then.
"""

import re

from ansible.utils.display import Display

WSGI_WORKERS = {
    "sync": "gunicorn.workers.sync.SyncWorker",
    "gthread": "gunicorn.workers.gthread.ThreadWorker",
    "gevent": "gunicorn.workers.ggevent.GeventWorker",
    "eventlet": "gunicorn.workers.geventlet.EventletWorker",
    "tornado": "gunicorn.workers.gtornado.TornadoWorker",
}
DEPRECATED_WORKERS = {"uvicorn.workers.UvicornWorker": "uvicorn_worker.UvicornWorker",
                      "uvicorn.workers.UvicornH11Worker": "uvicorn_worker.UvicornH11Worker"}
SUPPORTED_WORKER = "uvicorn_worker.UvicornWorker"
NATIVE_ASGI_SINCE = "27.0.0"  # gunicorn's asgi worker with the ASGI parser fixes
FLOORS = {"asgi_app_gunicorn_version": ("23.0.0", "gunicorn before 23.0.0 allows HTTP request smuggling"),
          "asgi_app_h11_min_version": ("0.16.0", "h11 before 0.16.0 allows HTTP request smuggling "
                                                 "(CVE-2025-43859)")}
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED = rf"{IDENTIFIER}(?:\.{IDENTIFIER})*"
MODULE_RE = re.compile(rf"^{DOTTED}:{DOTTED}(?:\(.*\))?$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ENV_NAME_RE = re.compile(rf"^{IDENTIFIER}$")
HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])$")
STATES = ("present", "absent")
# A socket on one of these takes the port on every address.
WILDCARD_HOSTS = {"", "0.0.0.0", "[::]", "*"}
# Directories the role owns: it sets their owner and mode, and a removal deletes them.
APP_DIRS = {"asgi_app_root": "/opt", "asgi_app_config_dir": "/etc"}


def version_tuple(text):
    parts = re.findall(r"\d+", str(text))
    if not parts:
        raise ValueError(text)
    return tuple(int(part) for part in parts[:3]) + (0,) * (3 - len(parts[:3]))


def check_worker_class(worker_class, gunicorn_version, problems, warnings):
    wsgi = {**WSGI_WORKERS, **{path: name for name, path in WSGI_WORKERS.items()}}
    if worker_class in wsgi:
        name = worker_class if worker_class in WSGI_WORKERS else wsgi[worker_class]
        problems.append(
            f"asgi_app_worker_class is '{worker_class}': '{name}' is a WSGI worker. It can only "
            "call a synchronous app(environ, start_response) and cannot serve an ASGI (async) "
            "application such as FastAPI or Starlette: requests would fail, and WebSockets and "
            f"streaming would not work at all. Remove asgi_app_worker_class to use the default "
            f"'{SUPPORTED_WORKER}'.")
        return None
    if worker_class == "asgi":
        try:
            recent = version_tuple(gunicorn_version) >= version_tuple(NATIVE_ASGI_SINCE)
        except ValueError:
            recent = False
        if not recent:
            problems.append(
                f"asgi_app_worker_class is 'asgi' with asgi_app_gunicorn_version "
                f"'{gunicorn_version}': gunicorn's native asgi worker is used only from "
                f"{NATIVE_ASGI_SINCE} on, which has its ASGI parser fixes. Set "
                f"asgi_app_gunicorn_version to {NATIVE_ASGI_SINCE} or later, or use "
                f"'{SUPPORTED_WORKER}'.")
            return None
        return {"kind": "asgi"}
    if not re.match(rf"^{DOTTED}\.{IDENTIFIER}$", worker_class or ""):
        problems.append(
            f"asgi_app_worker_class is '{worker_class}': not a dotted path to a worker class "
            f"(module.Class). Use '{SUPPORTED_WORKER}' (the default) or gunicorn's native 'asgi'.")
        return None
    if worker_class in DEPRECATED_WORKERS:
        warnings.append(
            f"asgi_app_worker_class '{worker_class}' is deprecated by Uvicorn and will be removed; "
            f"set asgi_app_worker_class: {DEPRECATED_WORKERS[worker_class]} (package uvicorn-worker, "
            "which the role installs).")
    module, _, cls = worker_class.rpartition(".")
    return {"kind": "uvicorn", "module": module, "class": cls}


def check_bind(bind, socket_dir, problems):
    text = str(bind)
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not re.match(rf"^{re.escape(socket_dir)}/[^/]+\.sock$", path):
            problems.append(
                f"asgi_app_bind is '{text}': a unix socket must be a .sock file in {socket_dir}/, "
                f"where the app's systemd socket unit creates it and a proxy on the host finds it. "
                f"Use 'unix:{socket_dir}/gunicorn.sock'.")
            return None
        return {"host": "", "port": "", "unix_socket": path, "health_host": "localhost"}
    host, sep, port = text.rpartition(":")
    if not sep or not HOST_RE.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        why = ("the port must be a number from 1 to 65535" if sep and HOST_RE.match(host)
               else "it is not host:port")
        problems.append(
            f"asgi_app_bind is '{text}': {why}. Use host:port such as '127.0.0.1:8000' "
            f"(behind a proxy on the same host), '0.0.0.0:8000' (all interfaces), or "
            f"'unix:{socket_dir}/gunicorn.sock'.")
        return None
    health_host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    return {"host": host, "port": port, "unix_socket": "", "health_host": health_host}


def check_bind_is_free(text, bind, name, apps, problems):
    """The role's other apps on the host (host_resources.py): two sockets cannot share a port."""
    if not bind or bind["unix_socket"]:
        return
    for app in apps:
        host, _, port = str(app.get("listen") or "").rpartition(":")
        if app.get("name") == name or port != bind["port"]:
            continue
        if host == bind["host"] or {host, bind["host"]} & WILDCARD_HOSTS:
            problems.append(
                f"asgi_app_bind is '{text}': {app['name']} listens on "
                f"{app['listen']} on this host already ({app['name']}.socket), and two apps cannot "
                f"share a port. Give {name} another port, or remove {app['name']} first "
                "(asgi_app_state: absent).")


def check_app_dirs(settings, problems):
    name = settings.get("asgi_app_name")
    for variable, parent in APP_DIRS.items():
        path = str(settings.get(variable) or "")
        parts = [part for part in path.split("/") if part]
        if not path.startswith("/") or len(parts) < 2 or {".", ".."} & set(parts):
            problems.append(
                f"{variable} is '{path}': the role makes this directory the app's own (owner, group "
                "and mode) and deletes it when the app is removed, so it must be an absolute path "
                f"at least two levels deep, without '.' or '..'. For example '{parent}/{name}'.")


def check_source_findings(findings, source, strict, problems, warnings):
    """What files/check_app_source.py found in the app's source on the controller."""
    for finding in findings:
        where = f"{source}/{finding['file']}:{finding['line']}"
        if finding["severity"] == "error":
            problems.append(f"the application's source, {where}: {finding['message']}")
        elif strict:
            problems.append(f"the application's source, {where}: {finding['message']} "
                            "(an error because asgi_app_source_check_strict is true)")
        else:
            warnings.append(f"{where}: {finding['message']} "
                            "(set asgi_app_source_check_strict: true to refuse such code)")


def check_inputs(settings):
    """settings: the role's public variables, the runtime directory (socket_dir) and the role's
    apps on the host (apps, from host_resources.py), as a dict."""
    problems, warnings = [], []
    name = settings.get("asgi_app_name")
    if not NAME_RE.match(str(name or "")):
        problems.append(
            f"asgi_app_name is '{name}': it names a system user, a unit and directories, so it "
            "must be lower-case letters, digits and dashes, starting with a letter, at most 31 "
            "characters. For example 'shop-api'.")
    state = settings.get("asgi_app_state", "present")
    if state not in STATES:
        problems.append(f"asgi_app_state is '{state}': use 'present' to deploy the app or 'absent' to remove it.")
    check_app_dirs(settings, problems)
    if state == "absent":
        return {"worker": None, "bind": None, "warnings": warnings, "problems": problems}
    module = settings.get("asgi_app_module")
    if not MODULE_RE.match(str(module or "")):
        problems.append(
            f"asgi_app_module is '{module}': gunicorn needs 'package.module:attribute', the "
            "import path of the module, a colon, and the name of the ASGI application in it. "
            "For example 'main:app' for app = FastAPI() in main.py.")
    src, package = settings.get("asgi_app_src") or "", settings.get("asgi_app_package") or ""
    if bool(src) == bool(package):
        problems.append(
            f"asgi_app_src is '{src}' and asgi_app_package is '{package}': set exactly one, "
            "asgi_app_src to a directory of code on the controller, or asgi_app_package to a "
            "wheel, an sdist or a pip requirement.")
    elif src and not settings.get("src_is_directory"):
        problems.append(f"asgi_app_src is '{src}': there is no such directory on the controller.")
    for variable, (floor, why) in FLOORS.items():
        value = settings.get(variable)
        try:
            too_old = version_tuple(value) < version_tuple(floor)
        except ValueError:
            problems.append(f"{variable} is '{value}': not a version number. Use {floor} or later.")
            continue
        if too_old:
            problems.append(f"{variable} is '{value}': {why}. Use {floor} or later.")
    for key in settings.get("asgi_app_environment") or {}:
        if not ENV_NAME_RE.match(str(key)):
            problems.append(
                f"asgi_app_environment has the key '{key}': environment variable names are "
                "letters, digits and underscores, not starting with a digit.")
    worker = check_worker_class(settings.get("asgi_app_worker_class"),
                                settings.get("asgi_app_gunicorn_version"), problems, warnings)
    bind = check_bind(settings.get("asgi_app_bind"), settings["socket_dir"], problems)
    check_bind_is_free(settings.get("asgi_app_bind"), bind, name, settings.get("apps") or [], problems)
    check_source_findings(settings.get("source_findings") or [], settings.get("source") or "",
                          bool(settings.get("asgi_app_source_check_strict")), problems, warnings)
    for warning in warnings:
        Display().warning(warning)
    return {"worker": worker, "bind": bind, "warnings": warnings, "problems": problems}


class FilterModule:
    """asgi_app input checks."""

    def filters(self):
        return {"asgi_app_check_inputs": check_inputs}
