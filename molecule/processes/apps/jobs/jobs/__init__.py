"""The processes scenario's app: a web app that enqueues jobs, an arq worker that runs them, a
command a timer runs. Each writes what it did to $STATE_DIRECTORY, with the version it ran, so
the scenario tells which release each of them ran. prepare.yml writes jobs/release.py for each
version (VERSION, and WORKER_STARTS: false for the version whose worker cannot start)."""

import os
import time
from pathlib import Path

from .release import VERSION, WORKER_STARTS

__all__ = ["VERSION", "WORKER_STARTS", "note"]


def note(log, *words):
    """Append one line to $STATE_DIRECTORY/LOG: the time, then the words."""
    line = " ".join([f"{time.time():.3f}", *map(str, words)]) + "\n"
    with open(Path(os.environ["STATE_DIRECTORY"]) / log, "a") as handle:
        handle.write(line)
