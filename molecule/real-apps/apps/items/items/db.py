"""The database URL from the environment, shared by the application and Alembic's env.py."""

import os

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class DatabaseURLMissing(RuntimeError):
    pass


def database_url() -> URL:
    """DATABASE_URL, e.g. postgresql+asyncpg://items:SECRET@db-host:5432/items.

    A plain postgresql:// (or postgres://) URL is taken to mean the asyncpg driver.
    """
    raw = os.environ.get("DATABASE_URL", "").strip()
    if not raw:
        raise DatabaseURLMissing(
            "DATABASE_URL is not set: give it as postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB"
        )
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+asyncpg")
    if url.drivername != "postgresql+asyncpg":
        raise DatabaseURLMissing(
            f"DATABASE_URL uses the driver {url.drivername!r}; items needs postgresql+asyncpg"
        )
    return url


def create_engine() -> AsyncEngine:
    """One engine (and so one connection pool) per worker process; it connects lazily."""
    return create_async_engine(database_url(), pool_size=5, max_overflow=5, pool_pre_ping=True)
