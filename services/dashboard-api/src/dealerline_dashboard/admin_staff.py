"""A manager's changes to the staff table (the people the agent hands calls to, in hunt
order, and the dashboard's logins) with the rules that keep the dealership workable: a
manager with a login always remains, nobody deletes their own account, and a person who
closed callback requests is not deleted (the requests would lose who closed them): they
are taken off duty and their login removed instead."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dealerline_common.db.models import CallbackRequest, Staff

from .admin_store import AdminStore, Table, conflict

STAFF = Table("staff member", Staff, ("phone", "email"), (Staff.hunt_order, Staff.id))
MANAGER = "manager"


async def _other_managers(session: AsyncSession, staff_id: int) -> int:
    """Managers with a dashboard login, but ``staff_id``."""
    return int(
        (
            await session.execute(
                select(func.count())
                .select_from(Staff)
                .where(
                    Staff.role == MANAGER,
                    Staff.password_hash.is_not(None),
                    Staff.id != staff_id,
                )
            )
        ).scalar_one()
    )


async def _keeps_a_manager(session: AsyncSession, staff: Staff, leaving: str) -> None:
    if staff.role != MANAGER or staff.password_hash is None:
        return
    if await _other_managers(session, staff.id) == 0:
        raise conflict(
            f"{staff.name} is the only manager who can sign in; {leaving} would leave "
            "nobody to run the admin pages: make someone else a manager first"
        )


async def update_staff(
    store: AdminStore, staff_id: int, values: dict[str, Any], by: int
) -> tuple[Staff, dict[str, Any]]:
    """Change a staff row (``has_login: false`` removes the password)."""
    if values.pop("has_login", None) is False:
        values["password_hash"] = None

    async def check(session: AsyncSession, staff: Staff) -> None:
        if values.get("role", MANAGER) != MANAGER and staff.role == MANAGER:
            await _keeps_a_manager(session, staff, "another role")
        if "password_hash" in values and staff.password_hash is not None:
            await _keeps_a_manager(session, staff, "removing the login")

    return await store.update(
        STAFF,
        staff_id,
        values,
        by,
        must=("name", "phone", "role", "on_duty", "hunt_order"),
        check=check,
    )


async def delete_staff(store: AdminStore, staff_id: int, by: int) -> Staff:
    """Delete a staff row; the row as it was."""
    gone: list[Staff] = []

    async def check(session: AsyncSession, staff: Staff) -> None:
        if staff.id == by:
            raise conflict("you cannot delete your own account; ask another manager")
        await _keeps_a_manager(session, staff, "deleting them")
        closed = int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(CallbackRequest)
                    .where(CallbackRequest.done_by == staff.id)
                )
            ).scalar_one()
        )
        if closed:
            raise conflict(
                f"{staff.name} closed {closed} callback request(s); deleting them would "
                "erase who did. Take them off duty and remove their login instead"
            )
        gone.append(staff)

    await store.delete(STAFF, staff_id, by, check)
    return gone[0]


def admin_staff_json(staff: Staff) -> dict[str, Any]:
    return {
        "id": staff.id,
        "name": staff.name,
        "phone": staff.phone,
        "role": staff.role,
        "email": staff.email,
        "on_duty": staff.on_duty,
        "hunt_order": staff.hunt_order,
        "has_login": staff.password_hash is not None,
    }
