"""Two app hosts behind an nginx load balancer: WebSockets and SSE through it, the client's real
address in the app, a rolling deploy under load with no failed request, and a real browser. The
second app host cannot reach a package index: each release came to it as the wheels the first made."""

import json
import os
from pathlib import Path

import httpx
import pytest
import testinfra

import probes

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
APP_HOSTS = ["asgi-fleet-app-1", "asgi-fleet-app-2"]
RECORD = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "events" / "1.json"
WHEELHOUSES = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "wheelhouses"
CONNECT = ("python3 -c \"import socket; socket.create_connection(('{target}', {port}), timeout=3).close(); "
           "print('connected')\"")


def target(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


@pytest.fixture(scope="module")
def lb():
    return target("asgi-fleet-lb")


def test_the_rolling_deploy_failed_no_request(app_url):
    record = json.loads(RECORD.read_text())
    print("\n" + probes.format_table([record]))
    print(f"rolling deploy: {record['failed']} of {record['requests']} HTTP requests failed")
    assert record["requests"] >= 2000 and record["concurrency"] >= 20
    assert record["failed"] == 0, record["errors"]
    assert record["ws_resets"] == 0 and record["ws_errors"] == 0
    assert set(record["ws_closes"]) <= {"1001", "1012"}
    assert record["sse_ends"]["broken"] == 0
    assert (record["first_version"], record["last_version"]) == ("1.0.0", "1.1.0")


def test_every_app_host_serves_the_new_version_and_is_back_in_the_load_balancer(lb):
    for name in APP_HOSTS:
        health = json.loads(lb.check_output(
            f"python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{name}:8000/health').read().decode())\""))
        assert health["version"] == "1.1.0", name
    servers = lb.file("/etc/nginx/asgi_app/fleet.servers").content_string
    assert [line for line in servers.splitlines() if line.startswith("server ")] == [
        f"server {name}:8000;" for name in APP_HOSTS]


def test_websocket_and_sse_through_the_load_balancer(app_url):
    ws = probes.websocket_echo(app_url.replace("http", "ws", 1) + "/ws", ["through", "the", "balancer"])
    assert ws.echoed, ws
    sse = probes.sse_events(app_url + "/sse?count=5&interval=0.3", count=5)
    print(f"\nSSE through the load balancer: arrivals {[round(e['arrived'], 2) for e in sse.events]} s")
    assert len(sse.events) == 5 and sse.smallest_gap > 0.15


def test_requests_are_spread_over_both_app_hosts(app_url):
    answered_by = {httpx.get(app_url + "/health", timeout=10).json()["pid"] for _ in range(40)}
    assert len(answered_by) >= 2


def test_the_app_sees_the_clients_address_and_scheme(app_url, lb):
    seen = httpx.get(app_url + "/client", timeout=10).json()
    lb_addresses = lb.check_output("hostname -I").split()
    print(f"\nthe app saw {seen}; the load balancer is {lb_addresses}")
    assert seen["client"] == seen["forwarded_for"]
    assert seen["client"] not in lb_addresses
    assert seen["scheme"] == "http"


def test_a_browser_gets_sse_and_websocket_data_through_nginx(app_url):
    result = probes.browser_result(app_url + "/")
    print(f"\nheadless Chromium through nginx: {result}")
    assert result["sse_events"] == 5
    assert result["ws_echo"] == "echo: hello from the browser"


def test_the_second_app_host_cannot_reach_the_package_index():
    """Its only network is internal: no name resolves outside it, and no address outside answers
    (the packets go nowhere), not even the index's, which the first app host resolves and reaches."""
    first, second = target(APP_HOSTS[0]), target(APP_HOSTS[1])
    address = first.check_output("python3 -c \"import socket; print(socket.gethostbyname('pypi.org'))\"")
    assert first.check_output(CONNECT.format(target=address, port=443)) == "connected"
    for where in ("pypi.org", address):
        tried = second.run(CONNECT.format(target=where, port=443))
        print(f"\n{APP_HOSTS[1]} -> {where}:443: {tried.stderr.strip().splitlines()[-1]}")
        assert tried.rc != 0 and any(
            failure in tried.stderr for failure in ("resolution", "unreachable", "timed out")), tried.stderr


def test_each_release_was_made_into_wheels_once_by_the_first_host_and_installed_from_them_on_the_second():
    """One archive of wheels per release on the controller (1.0.0 and 1.1.0), made on the first host
    (which has pip's wheel for it), installed on the second with the lock's hashes, none left on either."""
    archives = sorted(path.name for path in WHEELHOUSES.iterdir())
    releases = {name: sorted(target(name).check_output("ls /opt/fleet/releases").split()) for name in APP_HOSTS}
    print(f"\nwheelhouses {archives}; releases {releases}")
    assert releases[APP_HOSTS[0]] == releases[APP_HOSTS[1]] and len(releases[APP_HOSTS[0]]) == 2
    assert archives == sorted(f"fleet-{release}.tar.gz" for release in releases[APP_HOSTS[0]])
    first, second = target(APP_HOSTS[0]), target(APP_HOSTS[1])
    assert first.check_output("ls /usr/local/lib/asgi-app").split() == ["pip-26.3-py3-none-any.whl", "uv-0.13.8"]
    assert second.check_output("ls /usr/local/lib/asgi-app").split() == ["uv-0.13.8"]
    freeze = "/usr/local/lib/asgi-app/uv-0.13.8/uv pip freeze --python /opt/fleet/current/venv/bin/python"
    assert first.check_output(freeze) == second.check_output(freeze)
    for host in (first, second):
        assert not host.file("/opt/fleet/current/wheelhouse").exists
        assert "--hash=sha256:" in host.file("/opt/fleet/current/locked-requirements.txt").content_string


def test_the_first_app_host_reaches_the_index_with_the_authorities_it_was_given_alone():
    """Its own store does not trust the authority the packages come through here (prepare.yml left
    it out); asgi_app_index_ca's bundle, which its installers read, does."""
    first = target(APP_HOSTS[0])
    fetch = ("python3 -c \"import ssl, urllib.request; print(urllib.request.urlopen('https://pypi.org/simple/', "
             "timeout=10, context=ssl.create_default_context(cafile={cafile})).status)\"")
    own = first.run(fetch.format(cafile=None))
    assert own.rc != 0 and "CERTIFICATE_VERIFY_FAILED" in own.stderr, (own.stdout, own.stderr)
    assert first.check_output(fetch.format(cafile="'/etc/fleet/installer/ca-bundle.pem'")) == "200"
    bundle = first.file("/etc/fleet/installer/ca-bundle.pem")
    assert (bundle.user, bundle.mode) == ("root", 0o644)


def test_the_index_credentials_are_in_root_only_files_and_nowhere_else():
    token = "fleet-index-token-5b2e"
    for name in APP_HOSTS:
        host = target(name)
        for settings in ("uv.toml", "pip.conf"):
            found = host.file(f"/etc/fleet/installer/{settings}")
            assert (found.user, found.mode) == ("root", 0o600) and token in found.content_string, name
        leaks = host.run(f"grep -rl {token} /opt/fleet /etc/fleet /etc/systemd/system /var/cache/asgi-app "
                         f"--exclude-dir=installer; journalctl --no-pager -o cat | grep -c {token}")
        assert leaks.stdout.split() == ["0"], (name, leaks.stdout)


def test_an_app_host_accepts_connections_from_the_load_balancer_alone(lb):
    """asgi_app_allow_from: [the load balancer]: another host of the network, here the other app
    host, gets no connection to the app (its packets are dropped); the load balancer and the app
    host itself (the role's health check) do."""
    connect = CONNECT.replace("{port}", "8000")
    other = target(APP_HOSTS[1])
    refused = other.run(connect.format(target=APP_HOSTS[0]))
    assert refused.rc != 0 and "timed out" in refused.stderr, (refused.rc, refused.stdout, refused.stderr)
    assert lb.check_output(connect.format(target=APP_HOSTS[0])) == "connected"
    itself = target(APP_HOSTS[0])
    assert itself.check_output(connect.format(target="127.0.0.1")) == "connected"
    socket_unit = itself.file("/etc/systemd/system/fleet.socket").content_string
    assert "IPAddressDeny=any" in socket_unit
    assert "IPAddressAllow=127.0.0.1 ::1 172.30.57.10 172.30.58.10" in socket_unit
