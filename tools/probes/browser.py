"""A browser's view of the example app's page: headless Chromium (Debian's `chromium` package).

The page (``GET /``) reads /sse with EventSource and echoes a message through /ws, and writes
both results into its DOM. ``page_dom`` loads a URL and returns the DOM once the page reports
both; ``browser_result`` turns that DOM into plain data. ``python -m probes browser
http://127.0.0.1:8000/`` prints the result.

Chromium is driven over the DevTools protocol rather than with ``--dump-dom``: virtual time
(``--virtual-time-budget``) waits for pending fetches such as the SSE stream but not for
WebSocket messages, so a dump could be taken before the echo arrives, and a stream that never
ends made it hang without any output.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
from websockets.sync.client import connect

# True once the page has written both results (or why it has none).
PAGE_DONE = "Boolean(document.body && document.body.dataset.sse && document.body.dataset.ws)"


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is not installed: apt-get install chromium (make chromium does it)")
    return path


def page_dom(url: str, *, timeout: float = 30, ready: str = PAGE_DONE) -> str:
    """The DOM of `url` (document.documentElement.outerHTML) once the JavaScript `ready` is true.

    After `timeout` seconds the DOM is returned as it is, so the caller sees how far the page got.
    """
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="asgi-app-browser-", ignore_cleanup_errors=True) as profile:
        log = Path(profile) / "chromium.log"
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                   "about:blank"]
        with open(log, "w") as output:
            browser = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        try:
            port = _devtools_port(browser, Path(profile), log, deadline)
            with connect(_page_target(port), proxy=None, max_size=None, open_timeout=10) as devtools:
                return _load(devtools, url, ready, deadline)
        finally:
            stop_session(browser)


def _devtools_port(browser: subprocess.Popen, profile: Path, log: Path, deadline: float) -> int:
    """Chromium writes the port it chose (--remote-debugging-port=0) into the profile."""
    active = profile / "DevToolsActivePort"
    while True:
        lines = active.read_text().splitlines() if active.exists() else []
        if len(lines) >= 2:
            return int(lines[0])
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited with {browser.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"chromium did not open its DevTools port:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _page_target(port: int) -> str:
    """The DevTools WebSocket of the tab Chromium opened on about:blank (local: no proxy)."""
    targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10, trust_env=False).json()
    pages = [target["webSocketDebuggerUrl"] for target in targets if target["type"] == "page"]
    if not pages:
        raise RuntimeError(f"chromium has no tab to drive: {targets}")
    return pages[0]


def _load(devtools, url: str, ready: str, deadline: float) -> str:
    ids = itertools.count(1)

    def call(method: str, **params) -> dict:
        number = next(ids)
        devtools.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:  # events (none enabled) and answers arrive in order; skip to this answer
            message = json.loads(devtools.recv(timeout=max(deadline - time.monotonic(), 5)))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message["result"]

    def evaluate(expression: str):
        return call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def is_ready() -> bool:
        try:
            return bool(evaluate(ready))
        except RuntimeError as error:  # between about:blank and the page there is no context yet
            if "context" not in str(error):
                raise
            return False

    navigation = call("Page.navigate", url=url)
    if navigation.get("errorText"):
        raise RuntimeError(f"chromium could not load {url}: {navigation['errorText']}")
    while time.monotonic() < deadline and not is_ready():
        time.sleep(0.05)
    return evaluate("document.documentElement.outerHTML")


def stop_session(process: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True and whatever of its session is left:
    SIGTERM, up to 10 s, then SIGKILL to the session (Chromium's helpers, gunicorn's workers)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


class _PageParser(HTMLParser):
    """What the example page wrote: the body's data-sse and data-ws, the events' list items."""

    def __init__(self):
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.events: list[dict] = []
        self._in_sse = False
        self._item: dict | None = None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "body":
            self.body = attributes
        elif tag == "ul" and attributes.get("id") == "sse":
            self._in_sse = True
        elif tag == "li" and self._in_sse:
            self._item = {"data": "", "arrived": float(attributes.get("data-arrived") or 0)}

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_sse = False
        elif tag == "li" and self._item is not None:
            self.events.append(self._item)
            self._item = None

    def handle_data(self, data):
        if self._item is not None:
            self._item["data"] += data


def parse_page(dom: str) -> dict:
    parser = _PageParser()
    parser.feed(dom)
    arrivals = [event["arrived"] for event in parser.events]
    return {
        "sse_events": len(parser.events),
        "sse": parser.body.get("data-sse"),
        # Seconds between the first and the last event's arrival in the browser.
        "sse_spread": round(arrivals[-1] - arrivals[0], 3) if arrivals else 0.0,
        "ws_echo": parser.body.get("data-ws"),
    }


def browser_result(url: str, *, timeout: float = 30) -> dict:
    """What the page saw: {"sse_events": 5, "sse": "5 events", "sse_spread": 0.8, "ws_echo": "echo: ..."}."""
    started = time.monotonic()
    result = parse_page(page_dom(url, timeout=timeout))
    result["elapsed"] = round(time.monotonic() - started, 3)
    return result

