"""What the routes share, as FastAPI dependencies: the running :class:`Dashboard` (kept on
``app.state.dash``), the caller's staff row read from their token on every request (and
recorded for the response masking), and the manager-only check; also the errors every
protected route may answer."""

from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from dealerline_common.db.models import Staff
from dealerline_common.messages import StaffContact

from ..auth import InvalidToken, TokenClaims
from ..dashboard import Dashboard
from ..response_masking import set_viewer
from ..schemas import Problem
from ..store import Viewer

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, expired or forged token"}
}

bearer = HTTPBearer(auto_error=False, description="the token from POST /api/auth/login")


@dataclass(frozen=True)
class Principal:
    staff: Staff
    viewer: Viewer
    claims: TokenClaims

    def contact(self) -> StaffContact:
        return StaffContact(
            name=self.staff.name,
            phone=self.staff.phone,
            role=self.staff.role,
            staff_id=self.staff.id,
        )


def unauthorized(detail: str = "not authenticated") -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def dashboard_of(conn: HTTPConnection) -> Dashboard:
    """The app's running dashboard (a request's or a socket's)."""
    return cast(Dashboard, conn.app.state.dash)


Dash = Annotated[Dashboard, Depends(dashboard_of)]


def viewer_of(dash: Dashboard, staff: Staff) -> Viewer:
    return Viewer(staff.id, staff.role, dash.full_numbers(staff.role), own_phone=staff.phone)


async def principal_of(dash: Dashboard, token: str | None) -> Principal:
    """The staff member ``token`` belongs to, read now (401 if none, or if their login
    was disabled: no password any more)."""
    try:
        claims = dash.tokens.decode(token)
    except InvalidToken:
        raise unauthorized("invalid or expired token") from None
    staff = await dash.store.staff_by_id(claims.staff_id)
    if staff is None:
        raise unauthorized("this account no longer exists")
    if staff.password_hash is None:
        raise unauthorized("this login is disabled")
    return Principal(staff, viewer_of(dash, staff), claims)


async def current(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    dash: Dash,
) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise unauthorized()
    who = await principal_of(dash, creds.credentials)
    set_viewer(request, who.viewer)  # what the response masking goes by
    return who


Who = Annotated[Principal, Depends(current)]


async def manager(who: Who) -> Principal:
    if who.staff.role != "manager":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "only a manager may do this")
    return who


Manager = Annotated[Principal, Depends(manager)]
