"""The nginx site as the role renders it, for the shapes it takes: on the app's host (TCP or unix
socket), with TLS, and on load-balancer hosts in front of several app hosts."""

import re

import pytest

from support import TWO_CPUS

APP = {"asgi_app_name": "shop-api", "asgi_app_module": "shop.main:app", "asgi_app_src": "examples/app",
       "asgi_app_proxy": True}


@pytest.fixture
def site(render):
    return lambda **overrides: render("asgi_app.nginx.conf.j2", TWO_CPUS, **{**APP, **overrides})


def directives(text, name):
    return re.findall(rf"^\s*{name} (.+);$", text, flags=re.MULTILINE)


def test_websockets_get_the_upgrade_and_streams_are_not_buffered(site):
    text = site()
    assert "map $http_upgrade $asgi_app_shop_api_connection {" in text
    assert directives(text, "proxy_http_version") == ["1.1"]
    assert directives(text, "proxy_set_header Upgrade") == ["$http_upgrade"]
    assert directives(text, "proxy_set_header Connection") == ["$asgi_app_shop_api_connection"]
    assert directives(text, "proxy_buffering") == ["off"]
    assert directives(text, "proxy_read_timeout") == directives(text, "proxy_send_timeout") == ["3600s"]
    assert directives(text, "proxy_set_header X-Forwarded-For") == ["$remote_addr"]
    assert directives(text, "proxy_set_header X-Forwarded-Proto") == ["$scheme"]


def test_upstream_is_the_apps_own_bind(site):
    assert directives(site(), "server") == ["127.0.0.1:8000"]
    assert directives(site(asgi_app_bind="0.0.0.0:9000"), "server") == ["127.0.0.1:9000"]
    assert directives(site(asgi_app_bind="unix:/run/shop-api/gunicorn.sock"), "server") == [
        "unix:/run/shop-api/gunicorn.sock"]


def test_load_balancer_proxies_to_every_app_host(site, render):
    upstreams = ["10.0.0.11:8000", "10.0.0.12:8000"]
    text = site(asgi_app_proxy_upstreams=upstreams)
    # The app hosts are listed in a file of their own, which a rolling deploy rewrites.
    assert directives(text, "include") == ["/etc/nginx/asgi_app/shop-api.servers"]
    servers = render("asgi_app.servers.conf.j2", TWO_CPUS, **APP, asgi_app_proxy_upstreams=upstreams)
    assert directives(servers, "server") == upstreams
    draining = render("asgi_app.servers.conf.j2", TWO_CPUS, **APP, asgi_app_proxy_upstreams=upstreams,
                      __asgi_app_proxy_out=["10.0.0.12:8000"])
    assert directives(draining, "server") == ["10.0.0.11:8000", "10.0.0.12:8000 down"]


TLS = {"asgi_app_proxy_tls_certificate": "/etc/ssl/shop.pem", "asgi_app_proxy_tls_key": "/etc/ssl/shop.key"}


def test_tls_serves_https_and_redirects_http(site):
    text = site(**TLS)
    # HTTP/2 as nginx before 1.25.1 (Debian 12's 1.22) spells it, and after (Debian 13's 1.26).
    assert directives(text, "listen") == ["80 default_server", "443 ssl http2 default_server"]
    assert directives(site(**TLS, __asgi_app_nginx_version="1.26.3"), "listen") == [
        "80 default_server", "443 ssl default_server"]
    assert directives(site(**TLS, __asgi_app_nginx_version="1.26.3"), "http2") == ["on"]
    assert directives(text, "ssl_certificate") == ["/etc/ssl/shop.pem"]
    assert directives(text, "ssl_certificate_key") == ["/etc/ssl/shop.key"]
    # No server name (the catch-all "_"): clients go to the host they asked for.
    assert directives(text, "return") == ["301 https://$host$request_uri"]
    other_port = site(**TLS, asgi_app_proxy_tls_listen="8443")
    assert directives(other_port, "return") == ["301 https://$host:8443$request_uri"]


def test_https_redirects_to_the_sites_own_name(site):
    named = site(**TLS, asgi_app_proxy_server_name="shop.example www.shop.example")
    assert directives(named, "return") == ["301 https://shop.example$request_uri"]
    assert directives(site(**TLS, asgi_app_proxy_server_name="~^shop"), "return") == ["301 https://$host$request_uri"]


def test_tls_is_mozillas_intermediate_profile(site):
    text = site(**TLS)
    assert directives(text, "ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    suites = directives(text, "ssl_ciphers")[0].split(":")
    assert suites and all(suite.startswith("ECDHE-") and ("GCM" in suite or "CHACHA20" in suite) for suite in suites)
    assert directives(text, "ssl_session_tickets") == ["off"]
    assert directives(text, "ssl_prefer_server_ciphers") == ["off"]


def test_security_headers_on_every_response_and_hsts_when_asked(site):
    plain = site()
    assert 'X-Content-Type-Options "nosniff" always' in directives(plain, "add_header")
    assert not [value for value in directives(site(**TLS), "add_header") if "Strict-Transport" in value]
    hsts = directives(site(**TLS, asgi_app_proxy_hsts=True), "add_header")
    assert 'Strict-Transport-Security "max-age=63072000" always' in hsts
    assert not [value for value in directives(site(asgi_app_proxy_hsts=True), "add_header") if "Strict" in value]
    assert not [value for value in directives(site(asgi_app_proxy_security_headers={}), "add_header")
                if "nosniff" in value]


def test_buffering_on_still_honours_x_accel_buffering(site):
    text = site(asgi_app_proxy_buffering=True)
    assert directives(text, "proxy_buffering") == ["on"]
    assert "proxy_ignore_headers" not in text


def test_unix_socket_behind_nginx_is_nginx_only_and_trusted(render):
    unix = {**APP, "asgi_app_bind": "unix:/run/shop-api/gunicorn.sock"}
    socket_unit = render("asgi_app.socket.j2", TWO_CPUS, **unix)
    assert "SocketGroup=www-data" in socket_unit and "SocketMode=0660" in socket_unit
    assert 'forwarded_allow_ips = "*"' in render("gunicorn_config.py.j2", TWO_CPUS, **unix)
    # Without nginx, the app's group owns the socket and only the configured peers are trusted.
    plain = {**unix, "asgi_app_proxy": False}
    assert "SocketGroup=shop-api" in render("asgi_app.socket.j2", TWO_CPUS, **plain)
    assert 'forwarded_allow_ips = "127.0.0.1"' in render("gunicorn_config.py.j2", TWO_CPUS, **plain)


def test_a_tcp_socket_takes_connections_from_the_host_and_asgi_app_allow_from_alone(render):
    tcp = {**APP, "asgi_app_bind": "0.0.0.0:8000", "asgi_app_proxy": False}
    assert "IPAddress" not in render("asgi_app.socket.j2", TWO_CPUS, **tcp)
    socket_unit = render("asgi_app.socket.j2", TWO_CPUS, **tcp, asgi_app_allow_from=["10.0.0.5", "10.0.1.0/24"])
    assert re.findall(r"^IPAddress\w+=.*$", socket_unit, re.MULTILINE) == [
        "IPAddressDeny=any", "IPAddressAllow=127.0.0.1 ::1 10.0.0.5 10.0.1.0/24"]
    assert "IPAddress" not in render("asgi_app.socket.j2", TWO_CPUS, **tcp, asgi_app_allow_from=["any"])


def test_static_files_are_served_by_nginx_from_the_release_or_the_state_directory(site):
    text = site(asgi_app_proxy_static=[{"url": "/static/", "root": "state", "path": "static"},
                                       {"url": "/assets/", "path": "dist/assets/"}])
    assert directives(text, "alias") == ["/var/lib/shop-api/static/", "/opt/shop-api/current/app/dist/assets/"]
    assert re.findall(r"location \^~ (\S+) \{", text) == ["/static/", "/assets/"]
    assert directives(text, "autoindex") == ["off", "off"]
    assert directives(text, "etag") == ["on", "on"]
    # A load balancer in front of several app hosts has no files of theirs to serve.
    assert directives(site(asgi_app_proxy_static=[{"url": "/static/", "path": "static"}],
                           asgi_app_proxy_upstreams=["10.0.0.11:8000"]), "alias") == []


def test_extra_config_goes_into_the_server_block(site):
    text = site(asgi_app_proxy_extra_config="location = /robots.txt {\n    return 200 \"User-agent: *\\n\";\n}")
    server = text[text.rindex("server {"):]
    assert "    location = /robots.txt {\n        return 200" in server
    assert server.rstrip().endswith("}\n}")
