"""Tables as aligned Markdown: one renderer, `markdown_table`, for the probes and the benchmark.

Its output is a Markdown table whose columns are also aligned as plain text, so the same string
reads well in a terminal, in a Molecule log and on a rendered page. `format_table` turns load
reports (see load.LoadReport) into its rows: the events table of the scenarios.
"""

from __future__ import annotations


def markdown_table(header: list[str], rows: list[list[str]], numeric: set[int], *,
                   align_header: bool = True) -> str:
    """An aligned Markdown table; the columns in `numeric` (indices) are right-aligned.

    The header's cells follow their column's alignment, or are all left-aligned with
    align_header=False (the events table's).
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str], aligned: bool = True) -> str:
        return "| " + " | ".join(cell.rjust(width) if aligned and i in numeric else cell.ljust(width)
                                 for i, (cell, width) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if i in numeric else "-" * (w + 2)
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header, align_header), rule, *(line(row) for row in rows)])


def _counts_cell(counts: dict, extra: dict | None = None) -> str:
    items = [(key, n) for key, n in {**counts, **(extra or {})}.items() if n]
    return ", ".join(f"{key} x{n}" for key, n in items) or "-"


EVENTS_HEADER = ["event", "requests", "failed", "p99 (s)", "slowest (s)", "WS closes", "SSE ends", "stop (s)",
                 "version"]


def format_table(records: list[dict]) -> str:
    """One row per load report, with the keys an orchestrator adds: event, stop_seconds, sigkill."""
    rows = []
    for record in records:
        stop = record.get("stop_seconds")
        stop_cell = "-" if stop is None else f"{stop:.2f}"
        if record.get("sigkill"):
            stop_cell += f", SIGKILL x{record['sigkill']}"
        first, last = record.get("first_version"), record.get("last_version")
        rows.append([
            str(record.get("event", "")),
            str(record.get("requests", 0)),
            str(record.get("failed", 0)),
            f"{record.get('latency_p99', 0.0):.2f}",
            f"{record.get('latency_max', 0.0):.2f}",
            _counts_cell(record.get("ws_closes") or {}, {"reset": record.get("ws_resets", 0)}),
            _counts_cell(record.get("sse_ends") or {}),
            stop_cell,
            (f"{first} -> {last}" if first and first != last else last) or "-",
        ])
    return markdown_table(EVENTS_HEADER, rows, numeric={1, 2, 3, 4, 7}, align_header=False)
