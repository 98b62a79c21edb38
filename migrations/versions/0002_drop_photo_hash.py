"""Privacy: drop the stored sha256 of each query photo (it linked a user's queries across chats, for no use).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queries") as batch:
        batch.drop_column("photo_sha256")
    op.create_index("ix_queries_created_at", "queries", ["created_at"])  # HISTORY_RETENTION_DAYS deletes by age


def downgrade() -> None:
    op.drop_index("ix_queries_created_at", table_name="queries")
    with op.batch_alter_table("queries") as batch:  # the hashes are gone: old rows get an empty one
        batch.add_column(sa.Column("photo_sha256", sa.String(length=64), nullable=False, server_default=""))
