"""The items service: gunicorn calls create_app() once in each worker.

    gunicorn -k uvicorn_worker.UvicornWorker 'items.main:create_app()'

Environment: DATABASE_URL (PostgreSQL, asyncpg driver) and STATE_DIRECTORY (where uploads are
written; the only writable place under the service's sandbox).
"""

import asyncio
import os
import re
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from items import VERSION
from items.db import create_engine
from items.models import Item, ItemIn, ItemOut

HEALTH_TIMEOUT = 5.0
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
UPLOAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_engine()
    app.state.engine = engine
    app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


def uploads_dir() -> Path:
    # systemd may list several state directories, separated by colons: the first is ours.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if not state:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "STATE_DIRECTORY is not set")
    return Path(state) / "uploads"


def upload_path(name: str) -> Path:
    if not UPLOAD_NAME.fullmatch(name) or ".." in name:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "invalid upload name: letters, digits, '.', '_' and '-' only, no '..', at most 128",
        )
    return uploads_dir() / name


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".upload-", delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def create_app() -> FastAPI:
    app = FastAPI(title="items", version=VERSION, lifespan=lifespan)

    @app.get("/health")
    async def health(request: Request) -> JSONResponse:
        engine: AsyncEngine = request.app.state.engine
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - any failure means "not healthy", with its reason
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return JSONResponse(
                {"status": "error", "version": VERSION, "detail": f"database unavailable: {reason}"},
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return JSONResponse({"status": "ok", "version": VERSION})

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": VERSION}

    @app.post("/items", status_code=status.HTTP_201_CREATED)
    async def create_item(payload: ItemIn, session: Session) -> ItemOut:
        item = Item(**payload.model_dump())
        session.add(item)
        await session.commit()
        return ItemOut.model_validate(item)

    @app.get("/items")
    async def list_items(session: Session) -> list[ItemOut]:
        rows = await session.scalars(select(Item).order_by(Item.id))
        return [ItemOut.model_validate(row) for row in rows]

    @app.get("/items/count")
    async def count_items(session: Session) -> dict[str, int]:
        count = await session.scalar(select(func.count()).select_from(Item))
        return {"count": count or 0}

    @app.put("/uploads/{name}", status_code=status.HTTP_201_CREATED)
    async def put_upload(name: str, request: Request) -> dict[str, str | int]:
        path = upload_path(name)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_UPLOAD_BYTES:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "upload too large")
        await asyncio.to_thread(write_atomically, path, bytes(data))
        return {"name": name, "size": len(data)}

    @app.get("/uploads/{name}")
    async def get_upload(name: str) -> Response:
        path = upload_path(name)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no upload named {name}") from None
        return Response(data, media_type="application/octet-stream")

    return app
