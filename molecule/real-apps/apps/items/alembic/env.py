"""Alembic's environment for items: async migrations over asyncpg (Alembic's async template).

The URL comes from DATABASE_URL, exactly as the application reads it (items.db); alembic.ini
holds none. Run from the source root:  alembic upgrade head
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from items.db import DatabaseURLMissing, database_url
from items.models import Base

# Several hosts may run `alembic upgrade head` against one database at the same time: they
# take turns on this transaction-scoped advisory lock, and the later ones find nothing to do.
MIGRATION_LOCK_ID = 0x6974656D73  # "items"

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def url() -> str:
    try:
        return database_url().render_as_string(hide_password=False)
    except DatabaseURLMissing as exc:
        raise CommandError(str(exc)) from None


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL instead of running it."""
    context.configure(
        url=url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    # One transaction for all pending migrations (PostgreSQL's DDL is transactional): a
    # migration that fails leaves the database, and alembic_version, as they were.
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
