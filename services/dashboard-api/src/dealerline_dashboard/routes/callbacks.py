"""Callback requests the agent took: the list, and marking one done."""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException

from ..schemas import CallbackOut, Problem
from ..store import callback_json
from .deps import Dash, Who

router = APIRouter(tags=["callbacks"])


@router.get("/api/callbacks", response_model=list[CallbackOut])
async def callbacks(who: Who, dash: Dash, status: Literal["open", "done"] | None = None) -> Any:
    """Callback requests the agent took, newest first."""
    rows = await dash.store.callbacks(status)
    names = await dash.store.staff_names({r.done_by for r in rows if r.done_by is not None})
    return [callback_json(r, who.viewer, names) for r in rows]


@router.post(
    "/api/callbacks/{callback_id}/done",
    response_model=CallbackOut,
    responses={404: {"model": Problem}},
)
async def callback_done(callback_id: int, who: Who, dash: Dash) -> Any:
    """Mark a callback done (idempotent: the first who and when are kept)."""
    row = await dash.store.callback_done(callback_id, who.staff.id)
    if row is None:
        raise HTTPException(404, "no such callback request")
    names = await dash.store.staff_names({row.done_by} if row.done_by is not None else set())
    return callback_json(row, who.viewer, names)
