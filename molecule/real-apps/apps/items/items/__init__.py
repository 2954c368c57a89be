"""items: a small FastAPI + SQLAlchemy (asyncpg) + Alembic service, deployed by the real-apps scenario."""

VERSION = "1.0.0"
