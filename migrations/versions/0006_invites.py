"""Invite links (issue 22): invite codes (stored as SHA-256), who was admitted by one, per-day audit counts, and a
purpose on each consent ("follow": a face template is kept; "search": a selfie is searched, nothing kept).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invites",
        sa.Column("code_hash", sa.String(length=64), primary_key=True),  # sha256 hex of the code
        sa.Column("prefix", sa.String(length=8), nullable=False),  # the code's first characters, shown to admins
        sa.Column("created_by", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_invites_prefix", "invites", ["prefix"])
    op.create_table(
        "admissions",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_admissions_admitted_at", "admissions", ["admitted_at"])
    op.create_table(  # counts only, never who: refusals per day (searches and admissions have their own rows)
        "audit_counts",
        sa.Column("day", sa.String(length=10), primary_key=True),  # YYYY-MM-DD, UTC
        sa.Column("kind", sa.String(length=32), primary_key=True),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    # consents: one row per user and purpose. The table is rebuilt (a primary key cannot be altered on SQLite);
    # rows from 0005 are follow consents.
    op.create_table(
        "consents_v2",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("purpose", sa.String(length=16), primary_key=True, server_default="follow"),
        sa.Column("agreed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text_version", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO consents_v2 (user_id, purpose, agreed_at, text_version) "
        "SELECT user_id, 'follow', agreed_at, text_version FROM consents"
    )
    op.drop_table("consents")
    op.rename_table("consents_v2", "consents")


def downgrade() -> None:
    op.create_table(
        "consents_v1",
        sa.Column("user_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("agreed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text_version", sa.Integer(), nullable=False),
    )
    op.execute(
        "INSERT INTO consents_v1 (user_id, agreed_at, text_version) "
        "SELECT user_id, agreed_at, text_version FROM consents WHERE purpose = 'follow'"
    )
    op.drop_table("consents")
    op.rename_table("consents_v1", "consents")
    op.drop_table("audit_counts")
    op.drop_index("ix_admissions_admitted_at", table_name="admissions")
    op.drop_table("admissions")
    op.drop_index("ix_invites_prefix", table_name="invites")
    op.drop_table("invites")
