"""Logging in (with the per-email failure limit) and who the token belongs to."""

from typing import Any

from fastapi import APIRouter, status
from fastapi.responses import JSONResponse

from dealerline_common.logs import get_logger

from ..accounts import normalize_email
from ..auth import verify_password
from ..schemas import LoginIn, LoginOut, Problem, StaffOut
from ..store import Viewer, staff_json
from .deps import Dash, Who, unauthorized

log = get_logger(__name__)

router = APIRouter(tags=["auth"])


@router.post(
    "/api/auth/login",
    response_model=LoginOut,
    responses={429: {"model": Problem, "description": "too many failed logins"}},
)
async def login(body: LoginIn, dash: Dash) -> Any:
    """Exchange a staff email and password for a signed token."""
    email = normalize_email(body.email)
    wait = dash.limiter.retry_after(email)
    if wait is not None:
        dash.login_failures.labels("locked_out").inc()
        return JSONResponse(
            {"detail": "too many failed logins; try again later"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(int(wait + 0.999))},
        )
    staff = await dash.store.staff_by_email(email)
    ok = await verify_password(body.password, staff.password_hash if staff else None)
    if staff is None or not ok:
        dash.limiter.failed(email)
        dash.login_failures.labels("bad_credentials").inc()
        log.info("login refused", known=staff is not None)
        raise unauthorized("wrong email or password")
    dash.limiter.succeeded(email)
    claims = dash.tokens.issue(staff.id, staff.role, staff.name)
    viewer = Viewer(staff.id, staff.role, dash.full_numbers(staff.role))
    log.info("staff logged in", staff_id=staff.id, role=staff.role)
    return {
        "access_token": dash.tokens.encode(claims),
        "token_type": "bearer",
        "expires_at": int(claims.expires_at),
        "staff": staff_json(staff, viewer),
    }


@router.get("/api/me", response_model=StaffOut)
async def me(who: Who) -> Any:
    """The staff member the token belongs to."""
    return staff_json(who.staff, who.viewer)
