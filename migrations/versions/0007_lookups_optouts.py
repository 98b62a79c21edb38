"""Per-day lookup limits and opt-outs (issue 22): who looked up which person (the person's key stored as SHA-256,
rows older than 24 hours purged hourly), and the face templates of people who opted out (kept to protect them:
/forget does not delete them).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-13
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lookups",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("person_key_hash", sa.String(length=64), primary_key=True),  # sha256 hex of "model:person"
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_lookups_first_at", "lookups", ["first_at"])
    op.create_table(
        "optouts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("template", sa.LargeBinary(), nullable=False),  # float32 vector of the opted-out face
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("person_key", sa.String(length=255), nullable=True),  # the registry person hidden, or a name
        sa.Column("layout", sa.String(length=16), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("optouts")
    op.drop_index("ix_lookups_first_at", table_name="lookups")
    op.drop_table("lookups")
