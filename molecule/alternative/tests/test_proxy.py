"""nginx in front of the app on its unix socket: WebSockets and SSE pass through unbuffered, the
app sees the client's real address and scheme, only nginx may connect to the socket, a value
nginx rejects fails the deploy with nginx's own message while the live site serves on, and a
certificate on the host turns on HTTPS with HTTP redirecting to it."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import httpx

import probes

SCENARIO = Path(__file__).resolve().parents[1]
SITE = "/etc/nginx/sites-available/api.conf"


HTTPS_GET = r"""
import ssl, sys, urllib.request, urllib.error
context = ssl.create_default_context(cafile=sys.argv[2])
class Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None
opener = urllib.request.build_opener(Stay, urllib.request.HTTPSHandler(context=context))
try:
    response = opener.open(sys.argv[1], timeout=10)
    print(response.status, response.read().decode())
except urllib.error.HTTPError as error:
    print(error.code, error.headers.get("Location"))
"""


def converge(extra):
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(SCENARIO / "converge.yml"),
         "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})


def test_websocket_echo_through_nginx(app_url):
    result = probes.websocket_echo(app_url.replace("http", "ws", 1) + "/ws", ["through", "nginx"])
    assert result.echoed, result


def test_sse_events_arrive_one_by_one_through_nginx(app_url):
    interval = 0.3
    result = probes.sse_events(app_url + f"/sse?count=5&interval={interval}", count=5)
    arrivals = [round(event["arrived"], 2) for event in result.events]
    print(f"\nSSE through nginx: events arrived at {arrivals} s")
    assert result.status == 200 and result.content_type.startswith("text/event-stream")
    assert len(result.events) == 5
    # Buffered, they would arrive together at the end.
    assert result.smallest_gap > interval / 2
    assert result.spread > 3 * interval


def test_app_sees_the_clients_address_and_scheme(app_url):
    # A forged X-Forwarded-For is replaced by the address nginx saw.
    seen = httpx.get(app_url + "/client", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).json()
    print(f"\nthe app saw: {seen}")
    assert seen["client"] == seen["forwarded_for"]
    assert seen["client"] not in ("203.0.113.9", None, "")
    assert seen["scheme"] == "http"


def test_only_nginx_may_connect_to_the_socket(host):
    connect = ("python3 -c 'import socket; "
               "socket.socket(socket.AF_UNIX).connect(\"/run/api/gunicorn.sock\")'")
    assert host.run(f"runuser -u www-data -- {connect}").rc == 0
    refused = host.run(f"runuser -u api -- {connect}")
    assert refused.rc != 0 and "Permission denied" in refused.stderr


def test_nginx_rejects_a_broken_value_and_the_site_serves_on(host, app_url):
    site_before = host.file(SITE).sha256sum
    result = converge({"asgi_app_proxy_client_max_body_size": "ten megabytes"})
    output = result.stdout + result.stderr
    # nginx's own words, as the failed validation reported them.
    found = re.search(r"\[emerg\] \S+ (.*?\.conf:\d+)", output.replace('\\"', '"'))
    message = found.group(1) if found else ""
    print(f"\nplay rc={result.returncode}; nginx said: {message[:300]}")
    assert result.returncode != 0
    assert "client_max_body_size" in message, output[-3000:]
    assert "/etc/nginx/sites-enabled/api.conf" in message
    assert host.file(SITE).sha256sum == site_before
    assert probes.http_get(app_url + "/health").status == 200


def test_tls_serves_https_and_redirects_http(host):
    # A certificate for "localhost" made on the host, as an operator's would be put there.
    host.check_output("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost "
                      "-addext subjectAltName=DNS:localhost -keyout /etc/ssl/private/api.key "
                      "-out /etc/ssl/certs/api.pem 2>/dev/null")
    tls = {"asgi_app_proxy_tls_certificate": "/etc/ssl/certs/api.pem",
           "asgi_app_proxy_tls_key": "/etc/ssl/private/api.key", "asgi_app_proxy_tls_listen": "8443"}
    result = converge(tls)
    try:
        assert result.returncode == 0, result.stdout[-3000:]
        https = host.check_output(f"python3 -c {shlex.quote(HTTPS_GET)} https://localhost:8443/health "
                                  "/etc/ssl/certs/api.pem")
        print(f"\nhttps://localhost:8443/health -> {https}")
        assert https.startswith("200 ") and json.loads(https[4:])["status"] == "ok"
        seen = json.loads(host.check_output(f"python3 -c {shlex.quote(HTTPS_GET)} "
                                            "https://localhost:8443/client /etc/ssl/certs/api.pem")[4:])
        assert seen["scheme"] == "https"
        redirect = host.check_output(f"python3 -c {shlex.quote(HTTPS_GET)} http://localhost:8000/health "
                                     "/etc/ssl/certs/api.pem")
        assert redirect == "301 https://localhost:8443/health"
    finally:
        # Back to plain HTTP on 8000, as the other tests of this scenario expect.
        restored = converge({})
        assert restored.returncode == 0, restored.stdout[-3000:]
