"""The wheel, the unix socket, the io rule, the environment and the shorter timeout chain."""

import json

SOCKET = "/run/api/gunicorn.sock"


def test_unit_is_active_and_enabled(host, service):
    unit = host.service("api")
    assert unit.is_running
    assert unit.is_enabled


def test_app_comes_from_the_wheel(host):
    pip = host.check_output("/opt/api/current/venv/bin/pip show asgi-example-app")
    assert "Version: 1.0.0" in pip
    assert host.file("/opt/api/current/dist/asgi_example_app-1.0.0-py3-none-any.whl").exists
    assert not host.file("/opt/api/current/app").exists


def test_health_answers_through_the_unix_socket(get_on_target):
    status, body = get_on_target(SOCKET, "/health")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_unix_socket_belongs_to_systemd_and_the_apps_group(host):
    socket = host.file(SOCKET)
    assert socket.is_socket
    # nginx is in front: only it (www-data) and root may connect.
    assert (socket.user, socket.group, socket.mode) == ("root", "www-data", 0o660)
    assert "Listen=/run/api/gunicorn.sock (Stream)" in host.check_output("systemctl show api.socket -p Listen")
    # The service's own runtime directory sits beside it and goes away when the service stops.
    runtime = host.file("/run/api/gunicorn")
    assert (runtime.user, runtime.group, runtime.mode) == ("api", "api", 0o750)


def test_worker_count_follows_the_io_rule(usable_cores, worker_pids):
    cores = usable_cores["cores"]
    workers = worker_pids()
    print(f"\ntarget: {usable_cores}; io rule {cores} + 1 = {cores + 1}; running: {len(workers)}")
    assert len(workers) == cores + 1


def test_environment_reaches_the_app_and_stays_root_only(host, get_on_target):
    env_file = host.file("/etc/api/environment")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    assert json.loads(get_on_target(SOCKET, "/health")[1])["version"] == "wheel-1.0.0"
    # systemd reads the secret back whole, quotes and backslash included (the running
    # processes' own environ is overwritten by setproctitle, so a fresh unit reads the file).
    token = host.check_output("systemd-run --quiet --pipe --wait "
                              "--property=EnvironmentFile=/etc/api/environment printenv API_TOKEN")
    assert token == 's3cr"et \\ token'
    master = host.check_output("systemctl show api -p MainPID --value")
    assert "s3cr" not in host.check_output(f"ps -o args= -p {master}")


def test_shutdown_chain_nests(host, service):
    config = host.file("/etc/api/gunicorn_config.py").content_string
    assert "graceful_timeout = 12" in config
    assert "timeout_graceful_shutdown=10," in config
    assert '"ws_ping_interval": 15.0' in config
    assert service["timeout_stop"] == "16s"


def test_no_access_log(host, service, journal, get_on_target):
    get_on_target(SOCKET, "/health?probe=access-log")
    assert "probe=access-log" not in journal()
    # Errors only: journald's rate limit stays as the host has it (0: the unit sets none).
    limit = host.check_output(f"systemctl show -p LogRateLimitBurst --value {service['unit']}")
    assert limit == "0"


def test_config_and_environment_changes_go_live_through_the_standby(host):
    record = json.loads(host.file("/var/tmp/asgi-app-side-effect.json").content_string)
    before, after_config, after_environment = (
        record["before"], record["after_config"], record["after_environment"])
    print(f"\nmaster, workers: before {before}; after a config change {after_config}; "
          f"after an environment change {after_environment}")
    # Each a handover: a new master with a new set of workers, and the standby gone again.
    assert after_config[0] != before[0]
    assert set(after_config[1:]).isdisjoint(before[1:])
    assert after_environment[0] != after_config[0]
    assert set(after_environment[1:]).isdisjoint(after_config[1:])
    assert host.check_output("systemctl show api-standby -p ActiveState --value") == "inactive"
