"""The timer's command (asgi_app_timers: `python -m jobs.tick`): one line in ticks.log, one in
the journal, exit status 0."""

import os

from . import VERSION, note

if __name__ == "__main__":
    note("ticks.log", "tick", VERSION, os.getpid())
    print(f"tick of version {VERSION}")
