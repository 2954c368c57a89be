"""Add items.warehouse_id, NOT NULL, referencing warehouses(id).

Revision ID: 0003
Revises: 0002

Broken on purpose (the real-apps scenario deploys it to see a failing release command stop
the release): no migration creates the warehouses table, so PostgreSQL refuses this with
    relation "warehouses" does not exist
whatever the table holds. The whole upgrade is rolled back and the database stays at 0002.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE items ADD COLUMN warehouse_id integer NOT NULL REFERENCES warehouses (id)"
    )


def downgrade() -> None:
    op.drop_column("items", "warehouse_id")
