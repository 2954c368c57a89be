"""The arq worker (asgi_app_processes: `arq jobs.worker.WorkerSettings`). On SIGTERM it takes no
new job and gives the jobs it runs up to job_completion_wait seconds to finish, then exits."""

import asyncio
import os

from . import VERSION, WORKER_STARTS, note
from .settings import REDIS


async def slow(ctx, seconds):
    note("jobs.log", "start", ctx["job_id"], VERSION, os.getpid())
    await asyncio.sleep(seconds)
    note("jobs.log", "end", ctx["job_id"], VERSION, os.getpid())
    return VERSION


async def startup(ctx):
    if not WORKER_STARTS:
        raise RuntimeError(f"the worker of version {VERSION} cannot start (on purpose)")
    note("workers.log", "worker", VERSION, os.getpid(), os.environ.get("ASGI_APP_INSTANCE", "?"), os.getcwd())


class WorkerSettings:
    functions = [slow]
    on_startup = startup
    redis_settings = REDIS
    # More than the scenario's longest job (70 s), less than the process's stop_timeout (90 s,
    # molecule.yml), so a job is never cut short and systemd never needs SIGKILL.
    job_completion_wait = 80
    max_jobs = 4
