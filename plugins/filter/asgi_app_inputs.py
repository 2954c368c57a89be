"""Checks of the asgi_app role's inputs, made before anything on the host changes.

Each problem is described with the variable, the value given, why it cannot work and what to
set instead, and all of them are returned at once (the role's preflight refuses to go on while
there is one). What passes comes back normalized (the bind split into its parts, the worker
class into module and class) for the templates. A removal (asgi_app_state: absent) needs only
the names and directories it removes, so only those are checked then.
"""

import ast
import ipaddress
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
                                                 "(CVE-2025-43859)"),
          # The oldest the role's worker module (files/asgi_app_worker.py) is tested against.
          "asgi_app_uvicorn_version": ("0.30.0", "the role's worker is tested with uvicorn 0.30.0 and later"),
          "asgi_app_uvicorn_worker_version": ("0.2.0", "the role's worker is tested with uvicorn-worker 0.2.0 "
                                                       "and later"),
          # UV_SYSTEM_CERTS, with which uv trusts the host's certificate store as pip and apt do.
          "asgi_app_uv_version": ("0.13.0", "the role's uv commands and settings are those of uv 0.13 and later")}
IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
DOTTED = rf"{IDENTIFIER}(?:\.{IDENTIFIER})*"
MODULE_PATH_RE = re.compile(rf"^{DOTTED}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
ENV_NAME_RE = re.compile(rf"^{IDENTIFIER}$")
# A DNS name a CA can check over HTTP: no wildcard, no regular expression, at least one dot.
ACME_NAME_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]*[A-Za-z0-9]$")
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
    module, _dot, cls = worker_class.rpartition(".")
    return {"kind": "uvicorn", "module": module, "class": cls}


def check_access_log_format(settings, worker, problems):
    """JSON access lines are written by the role's Uvicorn worker (asgi_app_worker.JsonAccessLines):
    gunicorn's native asgi worker writes its own lines, in its own format."""
    if (settings.get("asgi_app_access_log", True) and settings.get("asgi_app_access_log_format") == "json"
            and worker and worker["kind"] == "asgi"):
        problems.append(
            "asgi_app_access_log_format is 'json' with asgi_app_worker_class 'asgi': JSON access lines are "
            "written by the role's Uvicorn worker, and gunicorn's native asgi worker writes only its own. "
            f"Set asgi_app_worker_class: {SUPPORTED_WORKER} (the default), or asgi_app_access_log_format: text.")


# Seconds the metrics' server gets from SIGTERM: it answers nothing longer than a scrape.
METRICS_STOP_TIMEOUT = 10


def check_metrics(settings, worker, bind, problems):
    """asgi_app_metrics: the role's Uvicorn worker counts the requests (asgi_app_metrics.RequestMetrics),
    and NAME-metrics.service serves them on asgi_app_metrics_listen to the host and
    asgi_app_metrics_allow_from. Returns that service as the processes plan takes it, or None."""
    if not settings.get("asgi_app_metrics"):
        return None
    before = len(problems)
    if worker and worker["kind"] == "asgi":
        problems.append(
            "asgi_app_metrics is true with asgi_app_worker_class 'asgi': the requests are counted by the role's "
            "Uvicorn worker, which gunicorn's native asgi worker is not. Set asgi_app_worker_class: "
            f"{SUPPORTED_WORKER} (the default), or asgi_app_metrics: false.")
    listen = str(settings.get("asgi_app_metrics_listen", "127.0.0.1:9464"))
    host, sep, port = listen.rpartition(":")
    if not sep or not HOST_RE.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        problems.append(
            f"asgi_app_metrics_listen is '{listen}': give host:port, such as '127.0.0.1:9464' (the host itself) "
            "or '0.0.0.0:9464' (with asgi_app_metrics_allow_from, for a Prometheus on another host).")
    elif bind and not bind["unix_socket"] and port == bind["port"] and (
            host == bind["host"] or {host, bind["host"]} & WILDCARD_HOSTS):
        problems.append(
            f"asgi_app_metrics_listen is '{listen}' and asgi_app_bind is '{settings.get('asgi_app_bind')}': the "
            "metrics need a port of their own. Use another port, such as 9464.")
    allowed = settings.get("asgi_app_metrics_allow_from") or []
    check_addresses("asgi_app_metrics_allow_from", allowed, ("10.0.0.7", "10.0.0.0/24"), problems)
    if len(problems) > before:
        return None
    return {"name": "metrics", "command": f"python -m asgi_app_metrics --listen {listen}",
            "stop_timeout": METRICS_STOP_TIMEOUT, "allow_from": [str(entry) for entry in allowed]}


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


# What systemd's IPAddressAllow= takes besides addresses and prefixes (systemd.resource-control(5)).
ALLOW_KEYWORDS = {"any", "localhost", "link-local", "multicast"}


def check_addresses(variable, allowed, examples, problems):
    """A list of addresses or prefixes that may connect (systemd's IPAddressAllow=), `examples` an
    address and a prefix for the message. False when it is not a list at all."""
    address, prefix = examples
    if not isinstance(allowed, list):
        problems.append(f"{variable} is {allowed!r}: give a list of addresses or prefixes, "
                        f"for example ['{address}', '{prefix}'].")
        return False
    for entry in allowed:
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            if str(entry) not in ALLOW_KEYWORDS:
                problems.append(
                    f"{variable} has '{entry}': not an IP address or prefix (such as "
                    f"'{address}' or '{prefix}'), nor one of {', '.join(sorted(ALLOW_KEYWORDS))}.")
    return True


def check_allow_from(allowed, bind, proxy, problems, warnings):
    """asgi_app_allow_from: the addresses that may connect to the app's TCP socket (systemd's
    IPAddressAllow= on the socket unit). Empty on an address other hosts reach: a warning that
    says what that exposes."""
    allowed = allowed or []
    if not check_addresses("asgi_app_allow_from", allowed, ("10.0.0.5", "10.0.1.0/24"), problems):
        return
    if not bind or bind["unix_socket"]:
        if allowed and bind:
            problems.append(
                "asgi_app_allow_from is set, but asgi_app_bind is a unix socket, which no other host "
                "reaches and file permissions guard: remove asgi_app_allow_from.")
        return
    host = bind["host"].strip("[]")
    loopback = host == "localhost" or (host not in WILDCARD_HOSTS and _is_loopback(host))
    if not allowed and not loopback:
        past = " past the nginx in front of it (asgi_app_proxy)" if proxy else ", with no proxy in front"
        warnings.append(
            f"asgi_app_bind is '{bind['host']}:{bind['port']}' and asgi_app_allow_from is empty: anyone who "
            f"reaches this host on port {bind['port']} talks to gunicorn directly{past}. Set "
            "asgi_app_allow_from to the addresses that may connect (the load balancers), bind to "
            "127.0.0.1 or a unix socket behind asgi_app_proxy, or set asgi_app_allow_from: [any] to say "
            "the app is meant to be public.")


def _is_loopback(host):
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_is_free(text, bind, name, apps, problems):
    """The role's other apps on the host (host_resources.py): two sockets cannot share a port."""
    if not bind or bind["unix_socket"]:
        return
    for app in apps:
        host, _colon, port = str(app.get("listen") or "").rpartition(":")
        if app.get("name") == name or port != bind["port"]:
            continue
        if host == bind["host"] or {host, bind["host"]} & WILDCARD_HOSTS:
            problems.append(
                f"asgi_app_bind is '{text}': {app['name']} listens on "
                f"{app['listen']} on this host already ({app['name']}.socket), and two apps cannot "
                f"share a port. Give {name} another port, or remove {app['name']} first "
                "(asgi_app_state: absent).")


def app_spec_problem(spec):
    """Why gunicorn would refuse spec, in gunicorn's own words (gunicorn.util.import_app), or None.

    gunicorn takes 'module:name' or 'module:factory(...)' with literal arguments; 'module' alone
    means 'module:application'. The import itself is the release's check, on the target.
    """
    module, sep, obj = spec.partition(":")
    if not sep:
        obj = "application"
    if not MODULE_PATH_RE.match(module):
        return f"'{module}' is not a module's import path (package.module)."
    try:
        expression = ast.parse(obj, mode="eval").body
    except SyntaxError:
        return f"Failed to parse {obj!r} as an attribute name or function call."
    if isinstance(expression, ast.Name):
        return None
    if not isinstance(expression, ast.Call):
        return f"Failed to parse {obj!r} as an attribute name or function call."
    if not isinstance(expression.func, ast.Name):
        return f"Function reference must be a simple name: {obj!r}"
    try:
        for argument in expression.args + [keyword.value for keyword in expression.keywords]:
            ast.literal_eval(argument)
    except ValueError:
        return f"Failed to parse arguments as literal values: {obj!r}"
    if any(keyword.arg is None for keyword in expression.keywords):
        return f"Failed to parse arguments as literal values: {obj!r}"
    return None


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


def _inside(path, directory):
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_writable_paths(settings, problems):
    """The app's state directory and the other paths it may write: absolute, and none the role
    owns (its code and configuration stay read-only to the app, and are deleted on removal)."""
    name = settings.get("asgi_app_name")
    state_dir = str(settings.get("asgi_app_state_dir") or "")
    parts = [part for part in state_dir.split("/") if part]
    # Only the role's directories that are valid themselves (check_app_dirs reports the others).
    owned = [path for path in (str(settings.get(variable) or "") for variable in APP_DIRS)
             if path.startswith("/") and len([part for part in path.split("/") if part]) >= 2]
    if not state_dir.startswith("/") or len(parts) < 2 or {".", ".."} & set(parts):
        problems.append(
            f"asgi_app_state_dir is '{state_dir}': the app's data lives there and the role makes it "
            "the app's own, so it must be an absolute path at least two levels deep, without '.' "
            f"or '..'. For example '/var/lib/{name}'.")
    elif any(_inside(state_dir, directory) or _inside(directory, state_dir) for directory in owned if directory):
        problems.append(
            f"asgi_app_state_dir is '{state_dir}': it overlaps {' or '.join(owned)}, which hold the "
            "app's code and configuration (read-only to the app, replaced on deploys, deleted on "
            f"removal). Keep data apart, for example in '/var/lib/{name}'.")
    for path in settings.get("asgi_app_writable_paths") or []:
        if not str(path).startswith("/") or str(path).rstrip("/") == "":
            problems.append(
                f"asgi_app_writable_paths has '{path}': each entry must be an absolute path other "
                "than / (an existing directory or file the app may write to, such as '/srv/media').")


def check_proxy_static(entries, problems):
    """asgi_app_proxy_static: where nginx serves files itself, and from which directory."""
    for entry in entries or []:
        entry = entry if isinstance(entry, dict) else {}
        url, path = str(entry.get("url") or ""), str(entry.get("path") or "")
        root = entry.get("root", "release")
        parts = [part for part in path.split("/") if part]
        if not (url.startswith("/") and url.endswith("/") and len(url) > 1) or ".." in url.split("/"):
            problems.append(
                f"asgi_app_proxy_static has url '{url}': it must be a URL prefix that starts and ends "
                "with '/', such as '/static/' (without the last '/', nginx's alias would serve "
                "'/static../' from the directory's parent).")
        if path.startswith("/") or not parts or {".", ".."} & set(parts):
            problems.append(
                f"asgi_app_proxy_static has path '{path}' for '{url}': it must be a directory relative "
                "to the release's code (root: release) or the state directory (root: state), without "
                "'.' or '..', such as 'static'.")
        if root not in ("release", "state"):
            problems.append(
                f"asgi_app_proxy_static has root '{root}' for '{url}': use 'release' (the live "
                "release's code directory) or 'state' (asgi_app_state_dir).")


def check_acme(settings, problems):
    """asgi_app_proxy_acme: certbot answers HTTP-01 challenges for each server name through nginx."""
    if not settings.get("asgi_app_proxy_acme"):
        return
    names = str(settings.get("asgi_app_proxy_server_name") or "").split()
    if not settings.get("asgi_app_proxy"):
        problems.append("asgi_app_proxy_acme is on, but asgi_app_proxy is off: the CA's challenges are "
                        "answered by the nginx the role sets up. Set asgi_app_proxy: true.")
    odd = [name for name in names if not ACME_NAME_RE.match(name)]
    if not names or odd:
        problems.append(
            f"asgi_app_proxy_server_name is '{' '.join(names)}' with asgi_app_proxy_acme: the CA certifies "
            "names it can reach over HTTP, so give the site's DNS names, such as 'api.example.com "
            "www.example.com' (not '_', a wildcard or a regular expression).")
    if str(settings.get("asgi_app_proxy_acme_email") or "").count("@") != 1:
        problems.append(f"asgi_app_proxy_acme_email is '{settings.get('asgi_app_proxy_acme_email') or ''}': "
                        "give the address the CA writes to about expiring certificates, such as 'ops@example.com'.")
    if not str(settings.get("asgi_app_proxy_acme_directory") or "").startswith("https://"):
        problems.append(f"asgi_app_proxy_acme_directory is '{settings.get('asgi_app_proxy_acme_directory')}': "
                        "give the CA's ACME directory URL, such as "
                        "'https://acme-v02.api.letsencrypt.org/directory'.")
    if settings.get("asgi_app_proxy_tls_certificate") or settings.get("asgi_app_proxy_tls_key"):
        problems.append("asgi_app_proxy_tls_certificate or asgi_app_proxy_tls_key is set with "
                        "asgi_app_proxy_acme: the certificate comes from one or the other. Empty the "
                        "two, or turn asgi_app_proxy_acme off.")


def check_release_commands(commands, once, problems):
    """asgi_app_release_commands, each as {"command", "once"}: a string runs as asgi_app_release_commands_once
    says, a dict {command, once} chooses for itself."""
    normalized = []
    for entry in commands or []:
        command, runs_once = ((entry.get("command"), entry.get("once", once)) if isinstance(entry, dict)
                              else (entry, once))
        if not isinstance(command, str) or not command.strip() or not isinstance(runs_once, bool):
            problems.append(
                f"asgi_app_release_commands has {entry!r}: each entry is a shell command, or a dict "
                "{command: ..., once: true|false} to choose where it runs (once: false runs it on every "
                "host that builds the release, after the commands that run once).")
            continue
        normalized.append({"command": command, "once": runs_once})
    return normalized


# The app's processes and timers (asgi_app_processes, asgi_app_timers) are units named NAME-<name>,
# beside the role's own NAME-standby.service and NAME-handover.service.
RESERVED_UNIT_NAMES = {"standby": "the standby that serves while the service restarts",
                       "handover": "the restart through the standby",
                       "metrics": "the server of the metrics, asgi_app_metrics"}
UNIT_SETTINGS = {
    "asgi_app_processes": {"name", "command", "instances", "stop_timeout"},
    "asgi_app_timers": {"name", "command", "on_calendar", "randomized_delay", "stop_timeout"},
}
UNIT_EXAMPLES = {"asgi_app_processes": "{name: worker, command: arq worker.WorkerSettings}",
                 "asgi_app_timers": "{name: cleanup, command: python -m shop.cleanup, on_calendar: daily}"}
# systemd's own default of TimeoutStopSec=: seconds from SIGTERM to SIGKILL.
DEFAULT_STOP_TIMEOUT = 90


def _whole_number(value, least):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _one_line(value):
    return isinstance(value, str) and value.strip() != "" and not set(value) & {"\n", "\r"}


def _unit_name_problem(variable, name, app, seen, others):
    unit = f"{app}-{name}"
    if not isinstance(name, str) or not NAME_RE.match(name):
        return (f"{variable} has the name {name!r}: it names the unit {app}-NAME, so it must be lower-case "
                "letters, digits and dashes, starting with a letter, at most 31 characters, such as 'worker'.")
    if name in RESERVED_UNIT_NAMES:
        return (f"{variable} has the name '{name}': {unit}.service is the role's own unit "
                f"({RESERVED_UNIT_NAMES[name]}). Choose another name, such as 'worker'.")
    if name in seen:
        where = "once more" if seen[name] == variable else f"and {seen[name]} has it too"
        return (f"{variable} has the name '{name}' {where}: each process and timer is a unit named "
                f"{app}-<name>, so give each a name of its own.")
    owner = next((other for other in others if unit in (other, *(f"{other}-{own}" for own in RESERVED_UNIT_NAMES))),
                 None)
    if owner:
        return (f"{variable} has the name '{name}': {unit}.service is a unit of {owner}, another app on this "
                "host. Choose another name.")
    return None


def check_units(settings, problems):
    """asgi_app_processes and asgi_app_timers, each entry with its defaults filled in: a process is
    the template unit NAME-<name>@.service with `instances` instances, a timer NAME-<name>.timer
    with its service NAME-<name>.service. Returns (processes, timers)."""
    app = settings.get("asgi_app_name")
    others = sorted({other.get("name") for other in settings.get("apps") or []} - {app, None})
    seen, normalized = {}, {variable: [] for variable in UNIT_SETTINGS}
    for variable, known in UNIT_SETTINGS.items():
        entries = settings.get(variable) or []
        if not isinstance(entries, list):
            problems.append(f"{variable} is {entries!r}: give a list of dicts such as [{UNIT_EXAMPLES[variable]}].")
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                problems.append(f"{variable} has {entry!r}: each entry is a dict such as {UNIT_EXAMPLES[variable]}.")
                continue
            before = len(problems)
            name = entry.get("name")
            unknown = sorted(set(entry) - known)
            if unknown:
                problems.append(f"{variable} has {', '.join(map(str, unknown))} for '{name}', which it does not "
                                f"know: the settings of an entry are {', '.join(sorted(known))}.")
            refused = _unit_name_problem(variable, name, app, seen, others)
            if refused:
                problems.append(refused)
            elif name not in seen:
                seen[name] = variable
            command = entry.get("command")
            # env(1) starts it (templates/asgi_app.command.service.j2): a leading '-' would be env's option.
            if not _one_line(command) or command.lstrip().startswith("-"):
                problems.append(
                    f"{variable} has the command {command!r} for '{name}': give the command line that runs it, on "
                    "one line and starting with the program, such as 'arq worker.WorkerSettings'. systemd splits it "
                    "into words (no shell: write sh -c '...' for one) and finds it in the live release's virtualenv "
                    "first.")
            stop_timeout = entry.get("stop_timeout", DEFAULT_STOP_TIMEOUT)
            if not _whole_number(stop_timeout, 1):
                problems.append(
                    f"{variable} has stop_timeout {stop_timeout!r} for '{name}': give the seconds from SIGTERM to "
                    f"SIGKILL as a whole number, at least the longest job it may be running (for example 300), "
                    f"or leave it out for {DEFAULT_STOP_TIMEOUT}.")
            settings_of = {"name": name, "command": command, "stop_timeout": stop_timeout}
            if variable == "asgi_app_processes":
                instances = entry.get("instances", 1)
                if not _whole_number(instances, 1):
                    problems.append(f"{variable} has instances {instances!r} for '{name}': give how many copies "
                                    "of it run as a whole number, 1 or more (or leave it out for 1).")
                settings_of["instances"] = instances
            else:
                on_calendar, delay = entry.get("on_calendar"), entry.get("randomized_delay", 0)
                if not _one_line(on_calendar):
                    problems.append(
                        f"{variable} has on_calendar {on_calendar!r} for '{name}': give when it runs as a systemd "
                        "OnCalendar= expression on one line, such as 'daily', 'Mon..Fri 03:00' or '*:0/15' "
                        "(systemd-analyze calendar EXPRESSION shows when it elapses).")
                if not _whole_number(delay, 0):
                    problems.append(f"{variable} has randomized_delay {delay!r} for '{name}': give the most seconds "
                                    "a run may be delayed at random, as a whole number (0, the default, for none).")
                settings_of.update(on_calendar=on_calendar, randomized_delay=delay)
            if len(problems) == before:
                normalized[variable].append(settings_of)
    settle = settings.get("asgi_app_processes_settle", 5)
    if not _whole_number(settle, 1):
        problems.append(f"asgi_app_processes_settle is {settle!r}: give the seconds a process a deploy started must "
                        "keep running for the deploy to go on, as a whole number, at least 1 (the default is 5).")
    return normalized["asgi_app_processes"], normalized["asgi_app_timers"]


def check_source_findings(findings, source, strict, problems, warnings):
    """What the check of plugins/module_utils/asgi_app_source.py found in the app's source on the controller."""
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


# The least each limit on a request's head may be: below them ordinary clients are refused
# (a browser's request with its cookies takes several KiB and a few dozen header fields).
REQUEST_HEAD_FLOORS = {
    "asgi_app_max_header_bytes": (4096, "bytes: a browser's request with its cookies takes several KiB"),
    "asgi_app_max_headers": (32, "header fields: browsers and proxies send a few dozen"),
    "asgi_app_header_timeout": (1, "seconds: a client needs time to send its request over a slow network"),
}


def check_request_head_limits(settings, problems):
    for variable, (floor, why) in REQUEST_HEAD_FLOORS.items():
        value = settings.get(variable, floor)
        if not isinstance(value, int) or value < floor:
            problems.append(f"{variable} is {value!r}: use at least {floor} {why}.")


def check_index(settings, problems):
    """asgi_app_index_url may hold credentials: a message names it, never its value."""
    url = str(settings.get("asgi_app_index_url") or "")
    if url and not re.match(r"^https?://[^/\s]+", url):
        problems.append("asgi_app_index_url is not an http:// or https:// URL (its value is not shown: it may hold "
                        "credentials): give the index's simple API, such as https://USER:TOKEN@pypi.example.com/simple/.")
    ca = str(settings.get("asgi_app_index_ca") or "")
    if ca and not settings.get("index_ca_is_file"):
        problems.append(f"asgi_app_index_ca is '{ca}': there is no such file on the controller. Give a PEM file of "
                        "the certificate authorities the installers trust besides the host's.")


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
        return {"worker": None, "bind": None, "release_commands": [], "processes": [], "timers": [],
                "metrics": None, "warnings": warnings, "problems": problems}
    module = str(settings.get("asgi_app_module") or "")
    refused = app_spec_problem(module)
    if refused:
        problems.append(
            f"asgi_app_module is '{module}', which gunicorn refuses: {refused} gunicorn takes "
            "'package.module:name' (for example 'main:app' for app = FastAPI() in main.py) or a "
            "factory called with literal arguments, 'package.module:create_app()'; an attribute of "
            "an attribute ('main:Holder.app') is neither, so give the application a name of its "
            "own in the module.")
    check_index(settings, problems)
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
    check_writable_paths(settings, problems)
    check_request_head_limits(settings, problems)
    check_proxy_static(settings.get("asgi_app_proxy_static"), problems)
    check_acme(settings, problems)
    release_commands = check_release_commands(settings.get("asgi_app_release_commands"),
                                              settings.get("asgi_app_release_commands_once", True), problems)
    processes, timers = check_units(settings, problems)
    worker = check_worker_class(settings.get("asgi_app_worker_class"),
                                settings.get("asgi_app_gunicorn_version"), problems, warnings)
    check_access_log_format(settings, worker, problems)
    bind = check_bind(settings.get("asgi_app_bind"), settings["socket_dir"], problems)
    check_bind_is_free(settings.get("asgi_app_bind"), bind, name, settings.get("apps") or [], problems)
    metrics = check_metrics(settings, worker, bind, problems)
    check_allow_from(settings.get("asgi_app_allow_from"), bind, settings.get("asgi_app_proxy"), problems, warnings)
    check_source_findings(settings.get("source_findings") or [], settings.get("source") or "",
                          bool(settings.get("asgi_app_source_check_strict")), problems, warnings)
    for warning in warnings:
        Display().warning(warning)
    return {"worker": worker, "bind": bind, "release_commands": release_commands, "processes": processes,
            "timers": timers, "metrics": metrics, "warnings": warnings, "problems": problems}


class FilterModule:
    """asgi_app input checks."""

    def filters(self):
        return {"asgi_app_check_inputs": check_inputs}
