"""The admin area's staff table (managers only): everyone the agent can hand a call to,
with phone, role, email, duty and hunt order; no passwords here (``set-password``), but a
login can be removed. A duty change is announced on ``staff.duty`` like the sales view's;
a changed role or removed login closes that person's sockets at once."""

from typing import Any

from fastapi import APIRouter, Response

from ..admin_schemas import AdminStaffIn, AdminStaffOut, AdminStaffPatch
from ..admin_staff import STAFF, admin_staff_json, delete_staff, update_staff
from .admin import ERRORS, no_content
from .deps import Dash, Manager
from .staff import publish_duty

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERRORS)


@router.get("/staff", response_model=list[AdminStaffOut])
async def get_staff(who: Manager, dash: Dash) -> Any:
    """Everyone, in hunt order."""
    return [admin_staff_json(s) for s in await dash.admin.rows(STAFF)]


@router.post("/staff", response_model=AdminStaffOut, status_code=201)
async def post_staff(body: AdminStaffIn, who: Manager, dash: Dash) -> Any:
    """Add a person (without a dashboard login: give one with ``set-password``)."""
    return admin_staff_json(await dash.admin.create(STAFF, body.model_dump(), who.staff.id))


@router.patch("/staff/{staff_id}", response_model=AdminStaffOut)
async def patch_staff(staff_id: int, body: AdminStaffPatch, who: Manager, dash: Dash) -> Any:
    values = body.model_dump(exclude_unset=True)
    staff, changed = await update_staff(dash.admin, staff_id, values, who.staff.id)
    if changed:
        dash.recheck_sockets(staff.id)
    if "on_duty" in changed:
        await publish_duty(dash, staff.id, staff.name, staff.on_duty)
    return admin_staff_json(staff)


@router.delete("/staff/{staff_id}", status_code=204)
async def delete_staff_row(staff_id: int, who: Manager, dash: Dash) -> Response:
    """Delete a person (409 for oneself, the last manager, or someone who closed callback
    requests: take them off duty and remove their login instead)."""
    staff = await delete_staff(dash.admin, staff_id, who.staff.id)
    dash.recheck_sockets(staff_id)
    if staff.on_duty:  # a running escalation stops ringing them
        await publish_duty(dash, staff_id, staff.name, False)
    return no_content()
