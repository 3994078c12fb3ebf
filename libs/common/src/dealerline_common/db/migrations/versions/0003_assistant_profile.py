"""The assistant on the dealership profile: her name (default "Ava"), a persona the prompt
uses, and the Kokoro voice she speaks with (NULL: the TTS service's default).

Revision ID: 0003_assistant_profile
Revises: 0002_after_call
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_assistant_profile"
down_revision: str | None = "0002_after_call"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dealership") as batch:
        batch.add_column(
            sa.Column("assistant_name", sa.String(60), server_default="Ava", nullable=False)
        )
        batch.add_column(sa.Column("persona", sa.Text(), nullable=True))
        batch.add_column(sa.Column("voice", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dealership") as batch:
        for column in ("voice", "persona", "assistant_name"):
            batch.drop_column(column)
