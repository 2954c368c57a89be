"""The web app: its version, and jobs enqueued for the worker."""

import contextlib
import os

from arq import create_pool
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from . import VERSION
from .settings import REDIS


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.redis = await create_pool(REDIS)
    yield
    # redis-py 5 names it aclose; 4, which arq allows too, close.
    await getattr(app.state.redis, "aclose", app.state.redis.close)()


async def health(request):
    """Its version, and the directory its code runs from (the release `current` pointed to)."""
    return JSONResponse({"status": "ok", "version": VERSION, "code": os.getcwd()})


async def enqueue(request):
    """POST /jobs?seconds=N: a job that runs N seconds."""
    job = await request.app.state.redis.enqueue_job("slow", float(request.query_params.get("seconds", "1")))
    return JSONResponse({"job": job.job_id, "version": VERSION})


app = Starlette(routes=[Route("/health", health), Route("/jobs", enqueue, methods=["POST"])], lifespan=lifespan)
