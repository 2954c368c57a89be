"""The probes' command line: ``python -m probes COMMAND ...`` with the repository's tools/ on the
Python path (``PYTHONPATH=tools`` from the repository's top).

  report BASE_URL         every one-shot probe once, as the demo shows it (--json: as JSON)
  load BASE_URL ...       clients busy until a stop file exists; prints a LoadReport as JSON
  table REPORT.json ...   load reports as one table
  hold WS_URL --count N   opens N WebSockets and holds them; a HoldReport per round of echoes
  browser URL             the example app's page in headless Chromium; what it saw, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from probes import browser
from probes.clients import report
from probes.load import hold, run_load
from probes.tables import format_table

PROG = "python -m probes"


def report_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} report", description="Probe a deployed ASGI app.")
    parser.add_argument("base_url", help="for example http://127.0.0.1:8000")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = parser.parse_args(argv)
    result = report(args.base_url.rstrip("/"))
    if args.json:
        print(json.dumps(result))
        return 0
    h, ws, sse, load = result["health"], result["websocket"], result["sse"], result["concurrency"]
    print(f"HTTP      GET /health -> {h['status']} {json.dumps(h['body'])}")
    print(f"WebSocket /ws handshake={'ok' if ws['handshake'] else 'FAILED'} "
          f"sent={ws['sent']} received={ws['received']} {ws['error'] or ''}".rstrip())
    print(f"SSE       /sse {sse['status']} {sse['content_type']}; events arrived at "
          f"{sse['arrivals']} s (smallest gap {sse['smallest_gap']} s)")
    print(f"I/O       {load['requests']} concurrent GET /io?delay=0.5 -> {load['ok']} ok, "
          f"{load['failed']} failed in {load['elapsed']} s, served by {load['workers_seen']} worker pids")
    healthy = (h["status"] == 200 and ws["echoed"] and len(sse["arrivals"]) == 5
               and load["failed"] == 0)
    return 0 if healthy else 1


def load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} load",
        description="Keep clients busy during an event; print what they saw as one JSON object.")
    parser.add_argument("base_url", help="for example http://127.0.0.1:8000")
    parser.add_argument("--stop-file", required=True, help="stop once this file exists")
    parser.add_argument("--ready-file", help="written once every client is connected")
    parser.add_argument("--min-requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--websockets", type=int, default=4)
    parser.add_argument("--sse", type=int, default=2)
    parser.add_argument("--path", default="/health")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    result = run_load(args.base_url, stop_file=args.stop_file, ready_file=args.ready_file,
                      min_requests=args.min_requests, concurrency=args.concurrency,
                      websockets=args.websockets, sse=args.sse, path=args.path, timeout=args.timeout)
    print(json.dumps(result.to_dict()))
    return 0


def table_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} table",
                                     description="Print load reports (JSON files) as one table.")
    parser.add_argument("files", nargs="+", help="each a JSON object or a list of them")
    args = parser.parse_args(argv)
    records: list[dict] = []
    for name in args.files:
        with open(name) as handle:
            data = json.load(handle)
        records.extend(data if isinstance(data, list) else [data])
    print(format_table(records))
    return 0


def hold_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} hold",
        description="Open COUNT WebSockets and hold them: print a JSON HoldReport once all are open "
                    "and have echoed, another after each 'echo' line on stdin; close them at EOF.")
    parser.add_argument("url", help="for example ws://127.0.0.1:8000/ws")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--local-address", help="loopback source address, e.g. 127.0.0.2")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    asyncio.run(hold(args.url, args.count, args.local_address, args.timeout))
    return 0


def browser_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"{PROG} browser", description=browser.__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the example app's page, e.g. http://127.0.0.1:8000/")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--dom", action="store_true", help="print the DOM instead of the result")
    args = parser.parse_args(argv)
    if args.dom:
        print(browser.page_dom(args.url, timeout=args.timeout))
    else:
        print(json.dumps(browser.browser_result(args.url, timeout=args.timeout), indent=2))
    return 0


COMMANDS = {"report": report_main, "load": load_main, "table": table_main, "hold": hold_main,
            "browser": browser_main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    print(__doc__.split("\n\n", 1)[1].rstrip(), file=sys.stderr)
    print(f"usage: {PROG} {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
