"""The after-call record (columns on ``calls``), callback requests and the delivery ledger
of emails and texts.

Revision ID: 0002_after_call
Revises: 0001_initial
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_after_call"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _tz() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column("created_at", _tz(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", _tz(), server_default=sa.func.now(), nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("end_reason", sa.String(50), nullable=True))
        batch.add_column(sa.Column("duration_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("customer_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("barge_ins", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("latency", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("escalation", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("appointments", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("recorded_at", _tz(), nullable=True))
    op.create_table(
        "callback_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("phone", sa.String(20), nullable=True),
        sa.Column("preferred_window", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), server_default="open", nullable=False),
        sa.Column("done_at", _tz(), nullable=True),
        sa.Column("done_by", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name="fk_callback_requests_customer_id_customers",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["done_by"],
            ["staff.id"],
            name="fk_callback_requests_done_by_staff",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_callback_requests"),
        sa.UniqueConstraint("idempotency_key", name="uq_callback_requests_idempotency_key"),
    )
    op.create_index("ix_callback_requests_session_id", "callback_requests", ["session_id"])
    op.create_index(
        "ix_callback_requests_status_created_at", "callback_requests", ["status", "created_at"]
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(10), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.String(300), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.String(200), nullable=True),
        sa.Column("sent_at", _tz(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_deliveries"),
        sa.UniqueConstraint("key", name="uq_deliveries_key"),
    )
    op.create_index("ix_deliveries_session_id", "deliveries", ["session_id"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("callback_requests")
    with op.batch_alter_table("calls") as batch:
        for column in (
            "recorded_at",
            "appointments",
            "escalation",
            "latency",
            "barge_ins",
            "customer_name",
            "duration_s",
            "end_reason",
        ):
            batch.drop_column(column)
