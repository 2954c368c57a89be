"""The example app's page in headless Chromium, against a real gunicorn on 127.0.0.1 running the
role's own gunicorn_config.py (conftest.py's gunicorn fixture), and what the app learns about a client.

A browser is the client the example's streams are for: its EventSource must see the SSE events
one by one and its WebSocket must get the echo, with nothing in between but gunicorn and Uvicorn.
"""

import httpx

from probes import browser_result


def test_the_page_in_a_browser(gunicorn):
    base_url, _ = gunicorn
    result = browser_result(base_url + "/", timeout=60)
    print(f"\nbrowser: {result}")

    assert result["sse"] == "5 events", result
    assert result["sse_events"] == 5, result
    # /sse sends one event every 0.2 s; had something buffered the stream, they would arrive
    # together.
    assert result["sse_spread"] >= 0.4, result
    assert result["ws_echo"] == "echo: hello from the browser", result


def test_client_as_the_app_sees_it(gunicorn):
    base_url, _ = gunicorn
    port = base_url.rpartition(":")[2]
    direct = httpx.get(base_url + "/client", timeout=10).json()
    assert direct == {"client": "127.0.0.1", "scheme": "http", "host": f"127.0.0.1:{port}",
                      "forwarded_for": None, "forwarded_proto": None}

    # 127.0.0.1 is in the role's default forwarded_allow_ips: a proxy there is believed.
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    proxied = httpx.get(base_url + "/client", headers=headers, timeout=10).json()
    assert proxied["client"] == "203.0.113.7"
    assert proxied["scheme"] == "https"
    assert proxied["forwarded_for"] == "203.0.113.7"
