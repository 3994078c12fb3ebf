"""Staff logins: a staff row (from the seed or added by a manager) gets a dashboard
password here. ``python -m dealerline_dashboard set-password --email E`` is the command
line for the same thing."""

from __future__ import annotations

from sqlalchemy import func, select

from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import Staff
from dealerline_common.logs import get_logger

from .auth import hash_password

log = get_logger(__name__)


class UnknownStaff(LookupError):
    """No staff row has that email."""


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def set_password(database_url: str, email: str, password: str) -> None:
    """Give the staff member with ``email`` (case-insensitive) the dashboard ``password``
    (stored as an argon2 hash). Raises :class:`UnknownStaff` when nobody has that email,
    ValueError for a password that is too short."""
    address = normalize_email(email)
    if not address:
        raise ValueError("an email address is required")
    password_hash = hash_password(password)
    engine = create_engine_from_url(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            staff = (
                await session.execute(select(Staff).where(func.lower(Staff.email) == address))
            ).scalar_one_or_none()
            if staff is None:
                raise UnknownStaff(
                    f"no staff member has the email {address!r}; add them to the staff "
                    "table first (e.g. in the dealership YAML, then `make seed-db`)"
                )
            staff.password_hash = password_hash
            staff_id = staff.id
    finally:
        await engine.dispose()
    log.info("staff password set", staff_id=staff_id)
