"""Logging in (behind the login limits of :mod:`..limits` and the cap on password checks
running at once) and who the token belongs to."""

from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse

from dealerline_common.logs import get_logger

from ..accounts import normalize_email
from ..auth import verify_password
from ..dashboard import Dashboard
from ..limits import client_ip
from ..response_masking import set_viewer
from ..schemas import LoginIn, LoginOut, Problem, StaffOut
from ..store import staff_json
from .deps import Dash, Who, unauthorized, viewer_of

log = get_logger(__name__)

router = APIRouter(tags=["auth"])

BUSY_RETRY_AFTER_S = 1


def refused(
    dash: Dashboard, reason: str, code: int, detail: str, retry_after_s: float
) -> JSONResponse:
    dash.login_failures.labels(reason).inc()
    return JSONResponse(
        {"detail": detail},
        status_code=code,
        headers={"Retry-After": str(max(1, int(retry_after_s + 0.999)))},
    )


@router.post(
    "/api/auth/login",
    response_model=LoginOut,
    responses={
        429: {
            "model": Problem,
            "description": "too many logins from this address, or "
            "too many failed ones for this email from it",
        },
        503: {"model": Problem, "description": "too many password checks running; retry"},
    },
)
async def login(body: LoginIn, request: Request, dash: Dash) -> Any:
    """Exchange a staff email and password for a signed token."""
    email = normalize_email(body.email)
    ip = client_ip(request, dash.trusted_proxies)
    refusal = await dash.login_limits.check(ip, email)
    if refusal is not None:
        log.info("login refused", reason=refusal.reason)
        return refused(
            dash,
            refusal.reason,
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many login attempts; try again later",
            refusal.retry_after_s,
        )
    if dash.password_checks.locked():  # answer now: no queue of 64 MiB checks
        return refused(
            dash,
            "busy",
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "too many logins at once; try again in a moment",
            BUSY_RETRY_AFTER_S,
        )
    async with dash.password_checks:
        staff = await dash.store.staff_by_email(email)
        ok = await verify_password(body.password, staff.password_hash if staff else None)
    if staff is None or not ok:
        await dash.login_limits.failed(ip, email)
        dash.login_failures.labels("bad_credentials").inc()
        log.info("login refused", reason="bad_credentials", known=staff is not None)
        raise unauthorized("wrong email or password")
    await dash.login_limits.succeeded(ip, email)
    claims = dash.tokens.issue(staff.id, staff.role, staff.name)
    viewer = viewer_of(dash, staff)
    set_viewer(request, viewer)
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
