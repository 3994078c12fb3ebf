"""The admin area (managers only, 403 for the other roles): the dealership's profile, its
opening hours and holidays, and the FAQ the agent answers from. The bays and services are
in :mod:`.admin_catalog`, the staff in :mod:`.admin_staff`; the rules and the audit log
in :mod:`..admin_store`."""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status

from dealerline_common.db.models import DealershipProfile, FaqEntry, Holiday, OpeningHours

from ..admin_schemas import (
    WEEKDAYS,
    FaqIn,
    FaqOut,
    FaqPatch,
    HolidayIn,
    HolidayOut,
    HolidayPatch,
    HoursIn,
    HoursOut,
    ProfileOut,
    ProfilePatch,
)
from ..admin_store import FAQ, HOLIDAYS
from ..schemas import Problem
from .deps import Dash, Manager

ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "only a manager may do this"},
    404: {"model": Problem, "description": "no such row"},
    409: {"model": Problem, "description": "taken already, or still needed by other rows"},
}

router = APIRouter(prefix="/api/admin", tags=["admin"], responses=ERRORS)


def no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def profile_json(row: DealershipProfile) -> dict[str, Any]:
    return {
        "name": row.name,
        "address": row.address,
        "phone": row.phone,
        "timezone": row.timezone,
        "service_desk_email": row.service_desk_email,
        "assistant_name": row.assistant_name,
        "persona": row.persona,
        "voice": row.voice,
    }


def hours_json(weekday: int, row: OpeningHours | None) -> dict[str, Any]:
    closed = row is None or row.closed
    return {
        "weekday": weekday,
        "day": WEEKDAYS[weekday],
        "closed": closed,
        "opens_at": None if closed or row is None else f"{row.opens_at:%H:%M}",
        "closes_at": None if closed or row is None else f"{row.closes_at:%H:%M}",
    }


def holiday_json(row: Holiday) -> dict[str, Any]:
    return {"id": row.id, "date": row.date.isoformat(), "name": row.name}


def faq_json(row: FaqEntry) -> dict[str, Any]:
    return {"id": row.id, "question": row.question, "answer": row.answer, "tags": row.tags}


# ---------------------------------------------------------------------- profile


@router.get("/profile", response_model=ProfileOut)
async def get_profile(who: Manager, dash: Dash) -> Any:
    """The dealership's profile (404 before it has one)."""
    row = await dash.admin.profile()
    if row is None:
        raise HTTPException(404, "the dealership has no profile yet; save one to make it")
    return profile_json(row)


@router.patch("/profile", response_model=ProfileOut)
async def patch_profile(body: ProfilePatch, who: Manager, dash: Dash) -> Any:
    """Change the profile (the next call's greeting and prompt use it)."""
    row = await dash.admin.update_profile(body.model_dump(exclude_unset=True), who.staff.id)
    return profile_json(row)


# ---------------------------------------------------------------------- hours

Weekday = Annotated[int, Path(ge=0, le=6, description="0 = Monday … 6 = Sunday")]


@router.get("/hours", response_model=list[HoursOut])
async def get_hours(who: Manager, dash: Dash) -> Any:
    """The seven weekdays, Monday first."""
    rows = await dash.admin.hours()
    return [hours_json(day, rows.get(day)) for day in range(7)]


@router.put("/hours/{weekday}", response_model=HoursOut)
async def put_hours(weekday: Weekday, body: HoursIn, who: Manager, dash: Dash) -> Any:
    """One weekday's opening (``closed: true``, or ``opens_at`` < ``closes_at``)."""
    row = await dash.admin.set_hours(
        weekday, body.model_dump(include={"closed", "opens_at", "closes_at"}), who.staff.id
    )
    return hours_json(weekday, row)


# ---------------------------------------------------------------------- holidays


@router.get("/holidays", response_model=list[HolidayOut])
async def get_holidays(who: Manager, dash: Dash) -> Any:
    """Days the dealership is closed, by date."""
    return [holiday_json(r) for r in await dash.admin.rows(HOLIDAYS)]


@router.post("/holidays", response_model=HolidayOut, status_code=201)
async def post_holiday(body: HolidayIn, who: Manager, dash: Dash) -> Any:
    return holiday_json(await dash.admin.create(HOLIDAYS, body.model_dump(), who.staff.id))


@router.patch("/holidays/{holiday_id}", response_model=HolidayOut)
async def patch_holiday(holiday_id: int, body: HolidayPatch, who: Manager, dash: Dash) -> Any:
    row, _ = await dash.admin.update(
        HOLIDAYS,
        holiday_id,
        body.model_dump(exclude_unset=True),
        who.staff.id,
        must=("date", "name"),
    )
    return holiday_json(row)


@router.delete("/holidays/{holiday_id}", status_code=204)
async def delete_holiday(holiday_id: int, who: Manager, dash: Dash) -> Response:
    await dash.admin.delete(HOLIDAYS, holiday_id, who.staff.id)
    return no_content()


# ---------------------------------------------------------------------- FAQ


@router.get("/faq", response_model=list[FaqOut])
async def get_faq(who: Manager, dash: Dash) -> Any:
    return [faq_json(r) for r in await dash.admin.rows(FAQ)]


@router.post("/faq", response_model=FaqOut, status_code=201)
async def post_faq(body: FaqIn, who: Manager, dash: Dash) -> Any:
    return faq_json(await dash.admin.create(FAQ, body.model_dump(), who.staff.id))


@router.patch("/faq/{faq_id}", response_model=FaqOut)
async def patch_faq(faq_id: int, body: FaqPatch, who: Manager, dash: Dash) -> Any:
    row, _ = await dash.admin.update(
        FAQ,
        faq_id,
        body.model_dump(exclude_unset=True),
        who.staff.id,
        must=("question", "answer", "tags"),
    )
    return faq_json(row)


@router.delete("/faq/{faq_id}", status_code=204)
async def delete_faq(faq_id: int, who: Manager, dash: Dash) -> Response:
    await dash.admin.delete(FAQ, faq_id, who.staff.id)
    return no_content()
