"""The open-set decision of each searched face: the person named, or none (not in the gallery), and its score.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "query_faces",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("query_id", sa.Integer(), sa.ForeignKey("queries.id", ondelete="CASCADE"), nullable=False),
        sa.Column("face", sa.Integer(), nullable=False),
        sa.Column("identity_name", sa.String(length=255), nullable=True),  # NULL: not in the gallery
        sa.Column("identity_score", sa.Float(), nullable=False),
    )
    op.create_index("ix_query_faces_query_id", "query_faces", ["query_id"])


def downgrade() -> None:
    op.drop_index("ix_query_faces_query_id", table_name="query_faces")
    op.drop_table("query_faces")
