"""Staff: the list in hunt order, going on or off duty, and a manager's changes to
anyone's duty, hunt order or role (a duty change is also published on ``staff.duty``)."""

from typing import Any

from fastapi import APIRouter, HTTPException

from dealerline_common import subjects
from dealerline_common.logs import get_logger
from dealerline_common.messages import StaffDutyChanged

from ..dashboard import Dashboard
from ..schemas import DutyIn, Problem, StaffOut, StaffPatch
from ..store import staff_json
from .deps import Dash, Manager, Principal, Who

log = get_logger(__name__)

router = APIRouter(tags=["staff"])


@router.get("/api/staff", response_model=list[StaffOut])
async def staff_list(who: Who, dash: Dash) -> Any:
    """Everyone, in hunt order."""
    return [staff_json(s, who.viewer) for s in await dash.store.list_staff()]


async def change_staff(
    dash: Dashboard,
    staff_id: int,
    who: Principal,
    *,
    on_duty: bool | None = None,
    hunt_order: int | None = None,
    role: str | None = None,
) -> Any:
    """Write the change; publish it if someone's duty changed; the staff row as ``who``
    sees it."""
    result = await dash.store.update_staff(
        staff_id, on_duty=on_duty, hunt_order=hunt_order, role=role
    )
    if result is None:
        raise HTTPException(404, "no such staff member")
    staff, duty_changed = result
    dash.recheck_sockets(staff.id)  # a new role or view of numbers closes their sockets
    log.info(
        "staff changed",
        staff_id=staff_id,
        by=who.staff.id,
        on_duty=on_duty,
        hunt_order=hunt_order,
        role=role,
    )
    if duty_changed:
        await publish_duty(dash, staff.id, staff.name, staff.on_duty)
    return staff_json(staff, who.viewer)


async def publish_duty(dash: Dashboard, staff_id: int, name: str, on_duty: bool) -> None:
    """Tell the fleet (running escalations, the other dashboards) of a duty change."""
    change = StaffDutyChanged(staff_id=staff_id, name=name, on_duty=on_duty)
    try:
        await dash.bus.publish(subjects.STAFF_DUTY, change)
    except Exception:
        # The database is the truth (the next hunt list reads it); running
        # escalations only hear of it through the bus.
        log.exception("duty change not published", staff_id=staff_id)


@router.put("/api/staff/me/duty", response_model=StaffOut)
async def my_duty(body: DutyIn, who: Who, dash: Dash) -> Any:
    """Go on or off duty (the escalation hunt list follows)."""
    return await change_staff(dash, who.staff.id, who, on_duty=body.on_duty)


@router.patch(
    "/api/staff/{staff_id}",
    response_model=StaffOut,
    responses={403: {"model": Problem}, 404: {"model": Problem}},
)
async def patch_staff(staff_id: int, body: StaffPatch, who: Manager, dash: Dash) -> Any:
    """Change someone's duty, hunt order or role (managers only)."""
    return await change_staff(
        dash, staff_id, who, on_duty=body.on_duty, hunt_order=body.hunt_order, role=body.role
    )
