"""The probes: a deployed ASGI app used the way its clients use it, from the machine that deployed it.

One library for every consumer: the fast tests (tests/), the Molecule scenarios' tests and
playbooks (molecule/), the demo (tools/demo.sh) and the benchmark (tools/benchmark.py). Each probe
returns plain data and asserts nothing; callers decide.

- clients: one-shot probes (HTTP, WebSocket echo, SSE event by event, concurrent GETs, also
  until given workers have answered) and
  `report`, each of them once;
- load: clients kept busy during an event (`run_load`, `Watch`, `LoadReport`) and WebSockets held
  by the thousand (`WebSocketHolder`, `hold`);
- tables: aligned Markdown tables (`markdown_table`), the events table of load reports
  (`format_table`);
- browser: the example app's page in headless Chromium;
- __main__: the command line, ``python -m probes report|load|table|hold|browser`` with tools/ on
  the Python path.
"""

from probes.browser import browser_result, page_dom, stop_session
from probes.clients import (
    HttpResult,
    LoadResult,
    SseResult,
    WebSocketResult,
    concurrent_get,
    concurrent_get_across,
    http_get,
    report,
    sse_events,
    websocket_echo,
)
from probes.load import HoldReport, LoadReport, Watch, WebSocketHolder, hold, run_load
from probes.tables import format_table, markdown_table

__all__ = [
    "HoldReport", "HttpResult", "LoadReport", "LoadResult", "SseResult", "Watch", "WebSocketHolder",
    "WebSocketResult", "browser_result", "concurrent_get", "concurrent_get_across", "format_table", "hold",
    "http_get", "markdown_table", "page_dom", "report", "run_load", "sse_events", "stop_session",
    "websocket_echo",
]
