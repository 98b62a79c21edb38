"""Follow and delivery (live events): a user's agreement, their one face template, and the outbox of photos to send.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("agreed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text_version", sa.Integer(), nullable=False),
    )
    op.create_table(
        "followers",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("template", sa.LargeBinary(), nullable=False),  # float32 unit vector
        sa.Column("selfies", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_batch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_followers_expires_at", "followers", ["expires_at"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(length=1024), nullable=False),  # relative to the gallery
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("w", sa.Integer(), nullable=False),
        sa.Column("h", sa.Integer(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),  # pending | sending | sent | skipped
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=32), nullable=True),
        sa.UniqueConstraint("user_id", "path", name="uq_deliveries_user_path"),
    )
    op.create_index("ix_deliveries_status", "deliveries", ["status", "user_id"])
    op.create_index("ix_deliveries_claimed_by", "deliveries", ["claimed_by"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_claimed_by", table_name="deliveries")
    op.drop_index("ix_deliveries_status", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_followers_expires_at", table_name="followers")
    op.drop_table("followers")
    op.drop_table("consents")
