"""The input checks' messages: each names the variable, the value, why, and what to set."""

import pytest

from support import REPO, TWO_CPUS, load_module

GOOD = {
    "asgi_app_name": "shop-api", "asgi_app_module": "shop.main:app", "asgi_app_src": "/src/shop",
    "asgi_app_package": "", "src_is_directory": True, "asgi_app_environment": {"DB_URL": "x"},
    "asgi_app_worker_class": "uvicorn_worker.UvicornWorker", "asgi_app_gunicorn_version": "27.0.1",
    "asgi_app_h11_min_version": "0.16.0", "asgi_app_bind": "127.0.0.1:8000",
    "asgi_app_uvicorn_version": "0.54.0", "asgi_app_uvicorn_worker_version": "0.4.0", "asgi_app_uv_version": "0.13.8",
    "asgi_app_root": "/opt/shop-api", "asgi_app_config_dir": "/etc/shop-api", "socket_dir": "/run/shop-api",
    "asgi_app_state_dir": "/var/lib/shop-api", "asgi_app_writable_paths": [],
}

# A site with its certificate from an ACME CA, as the role's user would set it.
ACME = {"asgi_app_proxy": True, "asgi_app_proxy_acme": True, "asgi_app_proxy_server_name": "api.example.com",
        "asgi_app_proxy_acme_email": "ops@example.com",
        "asgi_app_proxy_acme_directory": "https://acme-v02.api.letsencrypt.org/directory"}
BAD = {
    "sync worker": ({"asgi_app_worker_class": "sync"}, "asgi_app_worker_class is 'sync'", "WSGI worker"),
    "gthread worker": ({"asgi_app_worker_class": "gthread"}, "asgi_app_worker_class", "WSGI worker"),
    "gevent worker": ({"asgi_app_worker_class": "gevent"}, "asgi_app_worker_class", "WSGI worker"),
    "eventlet worker": ({"asgi_app_worker_class": "eventlet"}, "asgi_app_worker_class", "WSGI"),
    "tornado worker": ({"asgi_app_worker_class": "tornado"}, "asgi_app_worker_class", "WSGI"),
    "sync worker path": ({"asgi_app_worker_class": "gunicorn.workers.sync.SyncWorker"},
                         "'sync' is a WSGI worker", "uvicorn_worker.UvicornWorker"),
    "gevent worker path": ({"asgi_app_worker_class": "gunicorn.workers.ggevent.GeventWorker"},
                           "'gevent' is a WSGI worker", "Remove asgi_app_worker_class"),
    "not a class path": ({"asgi_app_worker_class": "UvicornWorker"}, "asgi_app_worker_class",
                         "not a dotted path"),
    "native asgi on old gunicorn": ({"asgi_app_worker_class": "asgi", "asgi_app_gunicorn_version": "26.0.0"},
                                    "asgi_app_gunicorn_version '26.0.0'", "27.0.0"),
    "module with a dash": ({"asgi_app_module": "my-app:app"}, "asgi_app_module", "main:app"),
    "two colons": ({"asgi_app_module": "a:b:c"}, "asgi_app_module is 'a:b:c', which gunicorn refuses",
                   "Failed to parse 'b:c' as an attribute name or function call."),
    "attribute of an attribute": ({"asgi_app_module": "app:Holder.asgi"}, "asgi_app_module is 'app:Holder.asgi'",
                                  "Failed to parse 'Holder.asgi' as an attribute name or function call."),
    "method as factory": ({"asgi_app_module": "app:Holder.make()"}, "asgi_app_module",
                          "Function reference must be a simple name: 'Holder.make()'"),
    "factory with a variable": ({"asgi_app_module": "app:create_app(settings)"}, "asgi_app_module",
                                "Failed to parse arguments as literal values: 'create_app(settings)'"),
    "factory with **kwargs": ({"asgi_app_module": "app:create_app(**{'a': 1})"}, "asgi_app_module",
                              "Failed to parse arguments as literal values"),
    "empty module": ({"asgi_app_module": ":app"}, "asgi_app_module is ':app'", "'package.module:create_app()'"),
    "relative state dir": ({"asgi_app_state_dir": "var/lib/shop"}, "asgi_app_state_dir is 'var/lib/shop'",
                           "absolute path"),
    "state dir inside the releases' root": ({"asgi_app_state_dir": "/opt/shop-api/data"},
                                            "asgi_app_state_dir is '/opt/shop-api/data'", "'/var/lib/shop-api'"),
    "state dir is /var": ({"asgi_app_state_dir": "/var"}, "asgi_app_state_dir is '/var'", "two levels"),
    "static url without its last slash": ({"asgi_app_proxy_static": [{"url": "/static", "path": "static"}]},
                                          "asgi_app_proxy_static has url '/static'", "'/static../'"),
    "static path climbing out": ({"asgi_app_proxy_static": [{"url": "/static/", "path": "../etc"}]},
                                 "asgi_app_proxy_static has path '../etc'", "without '.' or '..'"),
    "static root unknown": ({"asgi_app_proxy_static": [{"url": "/static/", "path": "s", "root": "home"}]},
                            "asgi_app_proxy_static has root 'home'", "'state'"),
    "acme without nginx": ({**ACME, "asgi_app_proxy": False},
                           "asgi_app_proxy_acme is on, but asgi_app_proxy is off", "asgi_app_proxy: true"),
    "acme for any name": ({**ACME, "asgi_app_proxy_server_name": "_"},
                          "asgi_app_proxy_server_name is '_' with asgi_app_proxy_acme", "not '_', a wildcard"),
    "acme for a wildcard": ({**ACME, "asgi_app_proxy_server_name": "api.example.com *.example.com"},
                            "'api.example.com *.example.com' with asgi_app_proxy_acme", "DNS names"),
    "acme without an email": ({**ACME, "asgi_app_proxy_acme_email": ""}, "asgi_app_proxy_acme_email is ''",
                              "'ops@example.com'"),
    "acme directory over http": ({**ACME, "asgi_app_proxy_acme_directory": "http://ca.example/dir"},
                                 "asgi_app_proxy_acme_directory is 'http://ca.example/dir'", "ACME directory URL"),
    "acme and a certificate": ({**ACME, "asgi_app_proxy_tls_certificate": "/etc/ssl/certs/api.pem"},
                               "asgi_app_proxy_tls_certificate or asgi_app_proxy_tls_key is set with "
                               "asgi_app_proxy_acme", "Empty the two"),
    "release command not a string": ({"asgi_app_release_commands": [["alembic", "upgrade", "head"]]},
                                     "asgi_app_release_commands has ['alembic', 'upgrade', 'head']",
                                     "{command: ..., once: true|false}"),
    "release command once not a bool": ({"asgi_app_release_commands": [{"command": "x", "once": "no"}]},
                                        "asgi_app_release_commands has", "once: true|false"),
    "relative writable path": ({"asgi_app_writable_paths": ["/srv/media", "media"]},
                               "asgi_app_writable_paths has 'media'", "absolute"),
    "no source": ({"asgi_app_src": ""}, "set exactly one", "asgi_app_package"),
    "two sources": ({"asgi_app_package": "shop==1.0"}, "set exactly one", "asgi_app_src"),
    "missing directory": ({"src_is_directory": False}, "asgi_app_src is '/src/shop'", "no such directory"),
    "bad name": ({"asgi_app_name": "Shop API"}, "asgi_app_name is 'Shop API'", "lower-case"),
    "bind without port": ({"asgi_app_bind": "localhost"}, "asgi_app_bind is 'localhost'", "host:port"),
    "port out of range": ({"asgi_app_bind": "0.0.0.0:70000"}, "asgi_app_bind is '0.0.0.0:70000'",
                          "1 to 65535"),
    "port zero": ({"asgi_app_bind": "0.0.0.0:0"}, "asgi_app_bind", "1 to 65535"),
    "socket outside runtime dir": ({"asgi_app_bind": "unix:/tmp/app.sock"}, "asgi_app_bind is 'unix:/tmp/app.sock'",
                                   "unix:/run/shop-api/gunicorn.sock"),
    "old gunicorn": ({"asgi_app_gunicorn_version": "22.0.0"}, "asgi_app_gunicorn_version is '22.0.0'",
                     "request smuggling"),
    "old uvicorn": ({"asgi_app_uvicorn_version": "0.29.0"}, "asgi_app_uvicorn_version is '0.29.0'",
                    "the role's worker is tested with uvicorn 0.30.0 and later. Use 0.30.0 or later."),
    "old h11": ({"asgi_app_h11_min_version": "0.14.0"}, "asgi_app_h11_min_version is '0.14.0'",
                "CVE-2025-43859"),
    "old uv": ({"asgi_app_uv_version": "0.9.5"}, "asgi_app_uv_version is '0.9.5'", "0.13.0 or later"),
    "index not a url": ({"asgi_app_index_url": "pypi.example.com:s3cret"}, "asgi_app_index_url is not an http",
                        "https://USER:TOKEN@pypi.example.com/simple/"),
    "index ca missing": ({"asgi_app_index_ca": "/nonexistent/ca.pem"}, "asgi_app_index_ca is '/nonexistent/ca.pem'",
                         "PEM file"),
    "not a version": ({"asgi_app_gunicorn_version": "latest"}, "asgi_app_gunicorn_version is 'latest'",
                      "not a version"),
    "bad environment name": ({"asgi_app_environment": {"DB-URL": "x"}}, "asgi_app_environment has the key 'DB-URL'",
                             "underscores"),
    "unknown state": ({"asgi_app_state": "removed"}, "asgi_app_state is 'removed'", "'absent' to remove it"),
    "root is /opt": ({"asgi_app_root": "/opt"}, "asgi_app_root is '/opt'", "'/opt/shop-api'"),
    "relative root": ({"asgi_app_root": "opt/shop-api"}, "asgi_app_root is 'opt/shop-api'", "absolute path"),
    "root climbing out": ({"asgi_app_root": "/opt/../etc"}, "asgi_app_root is '/opt/../etc'", "'..'"),
    "config dir is /": ({"asgi_app_config_dir": "/"}, "asgi_app_config_dir is '/'", "'/etc/shop-api'"),
    "port of another app": ({"apps": [{"name": "chat", "listen": "0.0.0.0:8000"}]},
                            "asgi_app_bind is '127.0.0.1:8000': chat listens on 0.0.0.0:8000",
                            "Give shop-api another port"),
    "allow from a name": ({"asgi_app_bind": "0.0.0.0:8000", "asgi_app_allow_from": ["lb.example"]},
                          "asgi_app_allow_from has 'lb.example'", "'10.0.1.0/24'"),
    "allow from on a unix socket": ({"asgi_app_bind": "unix:/run/shop-api/gunicorn.sock",
                                     "asgi_app_allow_from": ["10.0.0.5"]},
                                    "asgi_app_allow_from is set, but asgi_app_bind is a unix socket",
                                    "remove asgi_app_allow_from"),
    "header bytes too few": ({"asgi_app_max_header_bytes": 512}, "asgi_app_max_header_bytes is 512",
                             "at least 4096 bytes"),
    "no header fields": ({"asgi_app_max_headers": 0}, "asgi_app_max_headers is 0", "at least 32"),
    "no time for a request": ({"asgi_app_header_timeout": 0}, "asgi_app_header_timeout is 0",
                              "at least 1 seconds"),
    "process name in capitals": ({"asgi_app_processes": [{"name": "Worker", "command": "arq w.S"}]},
                                 "asgi_app_processes has the name 'Worker'", "such as 'worker'"),
    "process without a name": ({"asgi_app_processes": [{"command": "arq w.S"}]},
                               "asgi_app_processes has the name None", "lower-case letters"),
    "process named standby": ({"asgi_app_processes": [{"name": "standby", "command": "arq w.S"}]},
                              "asgi_app_processes has the name 'standby': shop-api-standby.service is the role's own",
                              "Choose another name"),
    "timer named handover": ({"asgi_app_timers": [{"name": "handover", "command": "x", "on_calendar": "daily"}]},
                             "asgi_app_timers has the name 'handover'", "Choose another name"),
    "two processes of one name": ({"asgi_app_processes": [{"name": "worker", "command": "a"},
                                                          {"name": "worker", "command": "b"}]},
                                  "asgi_app_processes has the name 'worker' once more", "a name of its own"),
    "a process and a timer of one name": ({"asgi_app_processes": [{"name": "sync", "command": "a"}],
                                           "asgi_app_timers": [{"name": "sync", "command": "b",
                                                                "on_calendar": "daily"}]},
                                          "asgi_app_timers has the name 'sync' and asgi_app_processes has it too",
                                          "a name of its own"),
    "process named as another app": ({"asgi_app_processes": [{"name": "admin", "command": "a"}],
                                      "apps": [{"name": "shop-api-admin", "listen": "127.0.0.1:9000"}]},
                                     "asgi_app_processes has the name 'admin': shop-api-admin.service is a unit of "
                                     "shop-api-admin", "Choose another name"),
    "process without a command": ({"asgi_app_processes": [{"name": "worker"}]},
                                  "asgi_app_processes has the command None for 'worker'",
                                  "'arq worker.WorkerSettings'"),
    "process command of two lines": ({"asgi_app_processes": [{"name": "worker", "command": "arq w.S\nExecStartPre=x"}]},
                                     "asgi_app_processes has the command 'arq w.S\\nExecStartPre=x'", "on one line"),
    "process command starting with a dash": ({"asgi_app_processes": [{"name": "worker", "command": "-i arq w.S"}]},
                                             "asgi_app_processes has the command '-i arq w.S'",
                                             "starting with the program"),
    "no instances": ({"asgi_app_processes": [{"name": "worker", "command": "a", "instances": 0}]},
                     "asgi_app_processes has instances 0 for 'worker'", "1 or more"),
    "instances as text": ({"asgi_app_processes": [{"name": "worker", "command": "a", "instances": "2"}]},
                          "asgi_app_processes has instances '2' for 'worker'", "whole number"),
    "stop timeout with a unit": ({"asgi_app_processes": [{"name": "worker", "command": "a", "stop_timeout": "5min"}]},
                                 "asgi_app_processes has stop_timeout '5min' for 'worker'", "for example 300"),
    "process setting misspelt": ({"asgi_app_processes": [{"name": "worker", "command": "a", "instance": 2}]},
                                 "asgi_app_processes has instance for 'worker', which it does not know",
                                 "command, instances, name, stop_timeout"),
    "processes not a list": ({"asgi_app_processes": {"worker": "arq w.S"}}, "asgi_app_processes is {'worker'",
                             "a list of dicts"),
    "process as a string": ({"asgi_app_processes": ["arq w.S"]}, "asgi_app_processes has 'arq w.S'",
                            "{name: worker, command: arq worker.WorkerSettings}"),
    "timer without a time": ({"asgi_app_timers": [{"name": "cleanup", "command": "x"}]},
                             "asgi_app_timers has on_calendar None for 'cleanup'", "'Mon..Fri 03:00'"),
    "timer time of two lines": ({"asgi_app_timers": [{"name": "cleanup", "command": "x",
                                                      "on_calendar": "daily\nOnBootSec=1"}]},
                                "asgi_app_timers has on_calendar 'daily\\nOnBootSec=1'", "on one line"),
    "negative randomized delay": ({"asgi_app_timers": [{"name": "cleanup", "command": "x", "on_calendar": "daily",
                                                        "randomized_delay": -5}]},
                                  "asgi_app_timers has randomized_delay -5 for 'cleanup'", "0, the default"),
    "no time to settle": ({"asgi_app_processes_settle": 0}, "asgi_app_processes_settle is 0", "at least 1"),
    "timer with instances": ({"asgi_app_timers": [{"name": "cleanup", "command": "x", "on_calendar": "daily",
                                                   "instances": 2}]},
                             "asgi_app_timers has instances for 'cleanup', which it does not know", "on_calendar"),
    "json access lines from the native asgi worker": (
        {"asgi_app_worker_class": "asgi", "asgi_app_access_log_format": "json"},
        "asgi_app_access_log_format is 'json' with asgi_app_worker_class 'asgi'",
        "Set asgi_app_worker_class: uvicorn_worker.UvicornWorker (the default), or asgi_app_access_log_format: text"),
    "metrics from the native asgi worker": (
        {"asgi_app_worker_class": "asgi", "asgi_app_metrics": True},
        "asgi_app_metrics is true with asgi_app_worker_class 'asgi'",
        "Set asgi_app_worker_class: uvicorn_worker.UvicornWorker (the default), or asgi_app_metrics: false"),
    "metrics on a unix socket": ({"asgi_app_metrics": True, "asgi_app_metrics_listen": "unix:/run/shop-api/m.sock"},
                                 "asgi_app_metrics_listen is 'unix:/run/shop-api/m.sock'", "'127.0.0.1:9464'"),
    "metrics on the app's port": ({"asgi_app_metrics": True, "asgi_app_metrics_listen": "0.0.0.0:8000"},
                                  "asgi_app_metrics_listen is '0.0.0.0:8000' and asgi_app_bind is '127.0.0.1:8000'",
                                  "a port of their own"),
    "metrics allowed from a name": ({"asgi_app_metrics": True, "asgi_app_metrics_allow_from": ["prometheus"]},
                                    "asgi_app_metrics_allow_from has 'prometheus'", "'10.0.0.7'"),
    "process named metrics": ({"asgi_app_processes": [{"name": "metrics", "command": "python -m stats"}]},
                              "asgi_app_processes has the name 'metrics': shop-api-metrics.service is the role's own",
                              "Choose another name"),
}


@pytest.fixture(scope="module")
def inputs():
    return load_module("asgi_app_inputs", REPO / "plugins" / "filter" / "asgi_app_inputs.py")


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_with_a_message(inputs, case):
    overrides, names, advice = BAD[case]
    problems = inputs.check_inputs({**GOOD, **overrides})["problems"]
    assert len(problems) == 1, problems
    assert names in problems[0]
    assert advice in problems[0]


@pytest.mark.parametrize("spec", [
    "main:app", "shop.main:app", "main", "main:create_app()", "main:create_app('production', debug=False)",
    "main:create_app(settings={'workers': [1, 2]}, name=None)",
])
def test_every_spec_gunicorn_takes_is_accepted(inputs, spec):
    assert inputs.check_inputs({**GOOD, "asgi_app_module": spec})["problems"] == []


def test_a_site_with_acme_certificates_is_accepted(inputs):
    assert inputs.check_inputs({**GOOD, **ACME, "asgi_app_proxy_server_name": "api.example.com www.example.com"})[
        "problems"] == []


def test_release_commands_say_where_they_run(inputs):
    result = inputs.check_inputs({**GOOD, "asgi_app_release_commands_once": True, "asgi_app_release_commands": [
        "alembic upgrade head", {"command": "python manage.py collectstatic --noinput", "once": False}]})
    assert result["release_commands"] == [
        {"command": "alembic upgrade head", "once": True},
        {"command": "python manage.py collectstatic --noinput", "once": False}]


def test_processes_and_timers_come_back_with_their_defaults(inputs):
    result = inputs.check_inputs({**GOOD, "asgi_app_processes": [
        {"name": "worker", "command": "arq shop.worker.WorkerSettings", "stop_timeout": 300},
        {"name": "mailer", "command": "python -m shop.mailer", "instances": 2}],
        "asgi_app_timers": [{"name": "cleanup", "command": "python -m shop.cleanup", "on_calendar": "*-*-* 03:00"},
                            {"name": "report", "command": "x", "on_calendar": "Mon", "randomized_delay": 600,
                             "stop_timeout": 30}],
        # The web service of another app whose name starts the same is no clash.
        "apps": [{"name": "shop-api-admin-ui", "listen": "127.0.0.1:9000"}]})
    assert result["problems"] == []
    assert result["processes"] == [
        {"name": "worker", "command": "arq shop.worker.WorkerSettings", "instances": 1, "stop_timeout": 300},
        {"name": "mailer", "command": "python -m shop.mailer", "instances": 2, "stop_timeout": 90}]
    assert result["timers"] == [
        {"name": "cleanup", "command": "python -m shop.cleanup", "on_calendar": "*-*-* 03:00", "randomized_delay": 0,
         "stop_timeout": 90},
        {"name": "report", "command": "x", "on_calendar": "Mon", "randomized_delay": 600, "stop_timeout": 30}]


def test_a_process_with_a_problem_is_left_out_of_what_comes_back(inputs):
    result = inputs.check_inputs({**GOOD, "asgi_app_processes": [{"name": "worker", "command": "a"},
                                                                 {"name": "mailer", "command": ""}]})
    assert [process["name"] for process in result["processes"]] == ["worker"]
    assert len(result["problems"]) == 1


def test_all_problems_are_reported_at_once(inputs):
    problems = inputs.check_inputs({**GOOD, "asgi_app_worker_class": "sync", "asgi_app_bind": "nowhere"})[
        "problems"]
    assert [problem.split(" ")[0] for problem in problems] == ["asgi_app_worker_class", "asgi_app_bind"]


def test_good_settings_have_no_problems(inputs):
    assert inputs.check_inputs(GOOD)["problems"] == []


@pytest.mark.parametrize("settings", [
    {"asgi_app_access_log_format": "json"},
    {"asgi_app_access_log_format": "text", "asgi_app_worker_class": "asgi"},
    # No access lines at all: the format does not matter.
    {"asgi_app_access_log_format": "json", "asgi_app_worker_class": "asgi", "asgi_app_access_log": False},
])
def test_access_log_formats_that_work(inputs, settings):
    assert inputs.check_inputs({**GOOD, **settings})["problems"] == []


@pytest.mark.parametrize("bind, parts", [
    ("127.0.0.1:8000", ("127.0.0.1", "8000", "", "127.0.0.1")),
    ("0.0.0.0:80", ("0.0.0.0", "80", "", "127.0.0.1")),
    ("[::]:8443", ("[::]", "8443", "", "[::1]")),
    ("app.internal:9000", ("app.internal", "9000", "", "app.internal")),
    ("unix:/run/shop-api/gunicorn.sock", ("", "", "/run/shop-api/gunicorn.sock", "localhost")),
])
def test_good_binds_are_split(inputs, bind, parts):
    result = inputs.check_inputs({**GOOD, "asgi_app_bind": bind})["bind"]
    assert (result["host"], result["port"], result["unix_socket"], result["health_host"]) == parts


@pytest.mark.parametrize("worker_class, expected", [
    ("uvicorn_worker.UvicornWorker", {"kind": "uvicorn", "module": "uvicorn_worker", "class": "UvicornWorker"}),
    ("myapp.workers.TunedWorker", {"kind": "uvicorn", "module": "myapp.workers", "class": "TunedWorker"}),
    ("asgi", {"kind": "asgi"}),
])
def test_good_worker_classes(inputs, worker_class, expected):
    assert inputs.check_inputs({**GOOD, "asgi_app_worker_class": worker_class})["worker"] == expected


def test_deprecated_uvicorn_worker_is_accepted_with_a_warning(inputs):
    result = inputs.check_inputs({**GOOD, "asgi_app_worker_class": "uvicorn.workers.UvicornWorker"})
    assert result["worker"]["module"] == "uvicorn.workers"
    assert "set asgi_app_worker_class: uvicorn_worker.UvicornWorker" in result["warnings"][0]


@pytest.mark.parametrize("bind, allow_from, proxy, warned", [
    ("0.0.0.0:8000", [], False, "with no proxy in front"),
    ("[::]:8000", [], True, "past the nginx in front of it"),
    ("10.0.0.7:8000", [], False, "talks to gunicorn directly"),
    ("0.0.0.0:8000", ["10.0.0.5", "10.0.1.0/24", "fd00::/8"], False, None),
    ("0.0.0.0:8000", ["any"], False, None),
    ("127.0.0.1:8000", [], False, None),
    ("localhost:8000", [], False, None),
    ("unix:/run/shop-api/gunicorn.sock", [], True, None),
])
def test_an_app_other_hosts_reach_is_said_to_be_exposed_unless_allow_from_says_who(inputs, bind, allow_from,
                                                                                   proxy, warned):
    result = inputs.check_inputs({**GOOD, "asgi_app_bind": bind, "asgi_app_allow_from": allow_from,
                                  "asgi_app_proxy": proxy})
    assert result["problems"] == []
    exposed = [w for w in result["warnings"] if "asgi_app_allow_from is empty" in w]
    if warned:
        assert len(exposed) == 1 and warned in exposed[0] and "asgi_app_allow_from: [any]" in exposed[0]
    else:
        assert exposed == []




@pytest.mark.parametrize("workers, kwargs, message", [
    (0, {}, "asgi_app_workers is 0: gunicorn needs at least one worker"),
    (-3, {}, "asgi_app_workers is -3"),
    (40, {}, "asgi_app_workers is 40, but this host has 2 usable CPU(s)"),
    (6, {}, "set asgi_app_allow_extra_workers: true to keep 6"),
    (20, {"worker_memory_mb": 1000, "allow_extra_workers": True}, "they need 20000 MB"),
])
def test_explicit_worker_counts_that_cannot_work(sizing, workers, kwargs, message):
    problems = sizing.worker_plan(TWO_CPUS, "mixed", workers=workers, **kwargs)["problems"]
    assert len(problems) == 1 and message in problems[0]


def test_extra_workers_with_acknowledgement(sizing):
    plan = sizing.worker_plan(TWO_CPUS, "mixed", workers=8, allow_extra_workers=True)
    assert (plan["workers"], plan["problems"]) == (8, [])


ERROR = {"severity": "error", "file": "main.py", "line": 3, "call": "gevent.monkey.patch_all",
         "message": "gevent.monkey.patch_all() monkey-patches the standard library"}
WARNING = {"severity": "warning", "file": "api/routes.py", "line": 14, "call": "time.sleep",
           "message": "time.sleep() blocks the event loop inside an async def"}


def test_source_errors_are_problems_and_warnings_are_warnings(inputs):
    result = inputs.check_inputs({**GOOD, "source": "/src/shop", "source_findings": [ERROR, WARNING]})
    assert result["problems"] == [
        "the application's source, /src/shop/main.py:3: gevent.monkey.patch_all() monkey-patches "
        "the standard library"]
    assert result["warnings"][0].startswith("/src/shop/api/routes.py:14: time.sleep() blocks")
    assert "asgi_app_source_check_strict: true" in result["warnings"][0]


def test_strict_source_check_refuses_blocking_calls(inputs):
    result = inputs.check_inputs({**GOOD, "source": "/src/shop", "source_findings": [WARNING],
                                  "asgi_app_source_check_strict": True})
    assert len(result["problems"]) == 1
    assert "asgi_app_source_check_strict is true" in result["problems"][0]


# The role's other apps on the host, as host_resources.py reads them from their socket units.
CHAT = {"name": "chat", "user": "chat", "group": "chat", "listen": "0.0.0.0:8001", "workers": 3}


@pytest.mark.parametrize("bind, listen, taken", [
    ("127.0.0.1:8000", "127.0.0.1:8000", True),
    ("127.0.0.1:8000", "0.0.0.0:8000", True),      # a wildcard takes the port on every address
    ("0.0.0.0:8000", "10.0.0.5:8000", True),
    ("[::]:8000", "0.0.0.0:8000", True),
    ("127.0.0.1:8000", "10.0.0.5:8000", False),    # the same port on another address
    ("0.0.0.0:8000", "0.0.0.0:8001", False),
    ("0.0.0.0:8000", "/run/chat/gunicorn.sock", False),
    ("unix:/run/shop-api/gunicorn.sock", "0.0.0.0:8000", False),
])
def test_a_port_another_app_listens_on_is_refused(inputs, bind, listen, taken):
    result = inputs.check_inputs({**GOOD, "asgi_app_bind": bind, "apps": [{**CHAT, "listen": listen}]})
    assert bool(result["problems"]) is taken, result["problems"]


def test_the_app_itself_does_not_take_its_own_port(inputs):
    itself = {**CHAT, "name": "shop-api", "listen": "127.0.0.1:8000"}
    assert inputs.check_inputs({**GOOD, "apps": [itself, CHAT]})["problems"] == []


def test_a_removal_needs_only_the_name_and_the_directories(inputs):
    removal = {"asgi_app_name": "shop-api", "asgi_app_state": "absent", "asgi_app_module": "",
               "asgi_app_root": "/opt/shop-api", "asgi_app_config_dir": "/etc/shop-api",
               "asgi_app_bind": "0.0.0.0:8001", "apps": [CHAT], "socket_dir": "/run/shop-api"}
    assert inputs.check_inputs(removal)["problems"] == []


@pytest.mark.parametrize("overrides, names", [
    ({"asgi_app_name": "../etc"}, "asgi_app_name is '../etc'"),
    ({"asgi_app_root": "/opt"}, "asgi_app_root is '/opt'"),
    ({"asgi_app_config_dir": "etc/shop-api"}, "asgi_app_config_dir is 'etc/shop-api'"),
])
def test_a_removal_still_checks_what_it_would_delete(inputs, overrides, names):
    problems = inputs.check_inputs({**GOOD, "asgi_app_state": "absent", **overrides})["problems"]
    assert len(problems) == 1 and names in problems[0], problems


def test_metrics_come_back_as_the_service_that_serves_them(inputs):
    checked = inputs.check_inputs({**GOOD, "asgi_app_metrics": True, "asgi_app_metrics_listen": "0.0.0.0:9464",
                                   "asgi_app_metrics_allow_from": ["10.0.0.7", "10.1.0.0/16"]})
    assert checked["problems"] == []
    assert checked["metrics"] == {"name": "metrics", "command": "python -m asgi_app_metrics --listen 0.0.0.0:9464",
                                  "stop_timeout": 10, "allow_from": ["10.0.0.7", "10.1.0.0/16"]}
    assert inputs.check_inputs(GOOD)["metrics"] is None


def test_an_index_url_is_never_shown_in_a_message(inputs):
    secret = "ftp://deploy:Tk-91b7@pypi.example.com/simple/"
    problems = inputs.check_inputs({**GOOD, "asgi_app_index_url": secret})["problems"]
    assert problems and not any("Tk-91b7" in problem or secret in problem for problem in problems)
    assert inputs.check_inputs({**GOOD, "asgi_app_index_url": "https://deploy:Tk-91b7@pypi.example.com/simple/",
                                "asgi_app_index_ca": "/etc/ca.pem", "index_ca_is_file": True})["problems"] == []
