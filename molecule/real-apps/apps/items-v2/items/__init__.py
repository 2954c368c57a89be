"""items: a small FastAPI + SQLAlchemy (asyncpg) + Alembic service, deployed by the real-apps scenario."""

VERSION = "2.0.0"
