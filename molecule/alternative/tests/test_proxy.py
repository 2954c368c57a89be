"""nginx in front of the app on its unix socket: WebSockets and SSE pass through unbuffered, the
app sees the client's real address and scheme, only nginx may connect to the socket, a value
nginx rejects fails the deploy with nginx's own message while the live site serves on, and a
certificate from an ACME CA (Debian's pebble on the host) turns on HTTPS at Mozilla's intermediate
profile, with HTTP redirecting to it, and is renewed under an open WebSocket."""

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


# Mozilla's intermediate profile for TLS 1.2 (ssl-config.mozilla.org, 5.7); TLS 1.3's suites all are.
INTERMEDIATE_TLS12 = {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                      "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
                      "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305"}
SITE_NAME = "api.test"
# Debian's pebble, an ACME CA for tests, on the host. Its own HTTPS certificate comes from a CA the
# host trusts, as a company's private ACME CA would be; it checks HTTP-01 challenges on port 8000,
# where the scenario's nginx listens, and finds api.test in /etc/hosts.
PEBBLE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q pebble >/dev/null
mkdir -p /etc/pebble && cd /etc/pebble
# The extensions Python 3.13's strict verification asks of a CA and of the certificate it signs.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ACME test CA" \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout pebble.key -out pebble.csr 2>/dev/null
printf '%s\n' subjectAltName=DNS:localhost,IP:127.0.0.1 keyUsage=critical,digitalSignature,keyEncipherment \
  extendedKeyUsage=serverAuth authorityKeyIdentifier=keyid > san.ext
openssl x509 -req -in pebble.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext \
  -out pebble.pem 2>/dev/null
cp ca.pem /usr/local/share/ca-certificates/acme-test-ca.crt && update-ca-certificates >/dev/null 2>&1
printf '%s' '{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "/etc/pebble/pebble.pem", "privateKey": "/etc/pebble/pebble.key", "httpPort": 8000,
  "tlsPort": 8443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}' > config.json
grep -q ' api.test$' /etc/hosts || echo '127.0.0.1 api.test' >> /etc/hosts
systemctl stop acme-test-pebble 2>/dev/null || true
systemd-run --quiet --collect --unit acme-test-pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 \
  /usr/bin/pebble -config /etc/pebble/config.json
python3 -c '
import ssl, time, urllib.request
context = ssl.create_default_context(cafile="/etc/pebble/ca.pem")
for _ in range(100):
    try:
        urllib.request.urlopen("https://localhost:14000/dir", timeout=2, context=context)
        break
    except OSError:
        time.sleep(0.1)
# The root of the certificates pebble issues (a new one each start), for clients of the site.
open("/etc/pebble/issued-root.pem", "wb").write(
    urllib.request.urlopen("https://localhost:15000/roots/0", timeout=5, context=context).read())
'
"""
ACME = {"asgi_app_proxy_acme": True, "asgi_app_proxy_acme_email": "ops@api.test",
        "asgi_app_proxy_acme_directory": "https://localhost:14000/dir", "asgi_app_proxy_tls_listen": "8443",
        "asgi_app_proxy_server_name": SITE_NAME, "asgi_app_proxy_hsts": True}
# Run on the test host: what a browser would see of the HTTPS site (the certificate checked against
# pebble's root), and where plain HTTP sends a client that names another host.
TLS_PROBE = r"""
import http.client, json, socket, ssl, sys
context = ssl.create_default_context(cafile="/etc/pebble/issued-root.pem")
context.set_alpn_protocols(["h2", "http/1.1"])
with context.wrap_socket(socket.create_connection(("api.test", 8443), timeout=10), server_hostname="api.test") as tls:
    alpn = tls.selected_alpn_protocol()
    certificate = tls.getpeercert()
context.set_alpn_protocols(["http/1.1"])
connection = http.client.HTTPSConnection("api.test", 8443, context=context, timeout=10)
connection.request("GET", "/client")
response = connection.getresponse()
plain = http.client.HTTPConnection("localhost", 8000, timeout=10)
plain.request("GET", "/health?from=http", headers={"Host": "elsewhere.example"})
print(json.dumps({"alpn": alpn, "issuer": dict(pair[0] for pair in certificate["issuer"]),
                  "serial": certificate["serialNumber"], "status": response.status,
                  "headers": dict(response.getheaders()), "client": json.loads(response.read()),
                  "redirect": plain.getresponse().getheader("Location")}))
"""
# Run on the test host with the app's virtualenv (it has websockets): a WebSocket through HTTPS
# echoes, stays open until the test says the certificate was renewed, then echoes again.
WEBSOCKET_HOLD = r"""
import json, os, ssl, sys, time
from websockets.sync.client import connect
context = ssl.create_default_context(cafile="/etc/pebble/issued-root.pem")
seen = []
with connect("wss://api.test:8443/ws", ssl=context, open_timeout=10) as websocket:
    websocket.send("before"); seen.append(websocket.recv(timeout=10))
    open("/run/ws-open", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists("/run/ws-renewed") and time.monotonic() < deadline:
        time.sleep(0.1)
    websocket.send("after"); seen.append(websocket.recv(timeout=10))
open("/run/ws-seen.json", "w").write(json.dumps(seen))
"""


def scan_with_testssl(host, target):
    """testssl.sh (Debian's) on the host: {id: finding} of its protocols, ciphers and defaults."""
    host.check_output("DEBIAN_FRONTEND=noninteractive apt-get install -y -q testssl.sh >/dev/null")
    scan = host.run(f"rm -f /tmp/testssl.json; testssl --quiet --color 0 --warnings off --jsonfile /tmp/testssl.json "
                    f"-p -E -S {target}")
    assert host.file("/tmp/testssl.json").exists, scan.stdout[-2000:] + scan.stderr[-2000:]
    return {entry["id"]: entry["finding"] for entry in json.loads(host.file("/tmp/testssl.json").content_string)}


def session_ticket_bytes(host, version):
    """Length of the first session ticket the site hands a client of this TLS version (0: none)."""
    out = host.check_output(f"(sleep 1) | openssl s_client -{version} -connect {SITE_NAME}:8443 "
                            f"-servername {SITE_NAME} 2>/dev/null")
    if "TLS session ticket:" not in out:
        return 0
    dump = out.split("TLS session ticket:", 1)[1].split("\n\n", 1)[0]
    return sum(len(line.split(" - ", 1)[1][:47].replace("-", " ").split()) for line in dump.splitlines()
               if " - " in line)


def served_serial(host):
    return host.check_output(f"openssl s_client -connect {SITE_NAME}:8443 -servername {SITE_NAME} </dev/null "
                             "2>/dev/null | openssl x509 -noout -serial")


def nginx_reloads(host):
    return int(host.check_output("journalctl -u nginx --no-pager -o cat | grep -c '^Reloaded' || true"))


def wait_for(host, path, seconds=30):
    host.check_output(f"for _ in $(seq {seconds * 10}); do [ -e {path} ] && exit 0; sleep 0.1; done; exit 1")


def test_https_with_a_certificate_from_acme_at_mozillas_intermediate_profile_renewed_under_a_websocket(host):
    host.check_output(f"bash -c {shlex.quote(PEBBLE)}")
    result = converge(ACME)
    try:
        assert result.returncode == 0, result.stdout[-3000:]
        probe = json.loads(host.check_output(f"python3 -c {shlex.quote(TLS_PROBE)}"))
        headers = {name.lower(): value for name, value in probe["headers"].items()}
        print(f"\nHTTPS: certificate from {probe['issuer']}, serial {probe['serial']}; ALPN {probe['alpn']}; "
              f"headers {headers}; http://elsewhere.example -> {probe['redirect']}")
        assert probe["issuer"]["commonName"].startswith("Pebble Intermediate CA")
        assert probe["status"] == 200 and probe["client"]["scheme"] == "https"
        assert probe["alpn"] == "h2"
        assert headers["strict-transport-security"] == "max-age=63072000"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "SAMEORIGIN"
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
        assert headers["server"] == "nginx"
        # To the site's name, not to the one the client sent.
        assert probe["redirect"] == f"https://{SITE_NAME}:8443/health?from=http"

        findings = scan_with_testssl(host, f"{SITE_NAME}:8443")
        # "TLS 1.2   xc02c   ECDHE-ECDSA-AES256-GCM-SHA384   ECDH 253 ...": OpenSSL's name is the fourth word.
        offered = {finding.split()[3] for name, finding in findings.items()
                   if name.startswith("cipher-tls1_2") and len(finding.split()) > 3}
        protocols = {name: findings.get(name, "") for name in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")}
        print(f"testssl.sh: protocols {protocols}; TLS 1.2 suites {sorted(offered)}; "
              f"session tickets: {findings.get('TLS_session_ticket')}")
        assert offered and offered <= INTERMEDIATE_TLS12, offered - INTERMEDIATE_TLS12
        assert all(protocols[name].startswith("not offered") for name in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"))
        assert protocols["TLS1_2"].startswith("offered") and protocols["TLS1_3"].startswith("offered")
        # No session tickets: TLS 1.2 gets none; TLS 1.3's are stateful (nginx's session cache hands
        # out a 32-byte reference, not the session sealed with a key), which testssl.sh reports as
        # a ticket with the cache's lifetime.
        tickets = {version: session_ticket_bytes(host, version) for version in ("tls1_2", "tls1_3")}
        print(f"session ticket bytes: {tickets}")
        assert tickets == {"tls1_2": 0, "tls1_3": 32}

        # Renewal as certbot's timer does it (forced: the certificate is new), under an open WebSocket.
        python = host.check_output("readlink -f /opt/api/current") + "/venv/bin/python"
        host.check_output("rm -f /run/ws-open /run/ws-renewed /run/ws-seen.json")
        host.check_output(f"systemd-run --quiet --collect --unit acme-test-websocket {python} -c "
                          f"{shlex.quote(WEBSOCKET_HOLD)}")
        wait_for(host, "/run/ws-open")
        before = served_serial(host)
        reloads_before = nginx_reloads(host)
        renewal = host.run("certbot renew --force-renewal --cert-name api --no-random-sleep-on-renew")
        assert renewal.rc == 0, renewal.stdout + renewal.stderr
        after = served_serial(host)
        host.check_output("touch /run/ws-renewed")
        wait_for(host, "/run/ws-seen.json")
        seen = json.loads(host.file("/run/ws-seen.json").content_string)
        reloads = nginx_reloads(host) - reloads_before
        print(f"renewal: {before} -> {after}, nginx reloaded {reloads} time(s); the WebSocket opened before: {seen}")
        assert before != after and reloads >= 1
        assert seen == ["echo: before", "echo: after"]
        # The renewal is certbot's own: the next run of the role finds the certificate it asked for.
        again = converge(ACME)
        assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    finally:
        # Back to plain HTTP on 8000, as the other tests of this scenario expect, without the CA.
        restored = converge({})
        host.run("systemctl stop acme-test-pebble acme-test-websocket")
        assert restored.returncode == 0, restored.stdout[-3000:]
