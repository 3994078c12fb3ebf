"""The REST API, the two WebSockets and the web UI, as one FastAPI app (API.md is the
contract with the web UI): the routers of :mod:`.routes`, in order, over the running
:class:`Dashboard` (``app.state.dash``).

Every route under ``/api`` (but login) and both sockets need a staff token; the staff row
is read on each request, so its current role decides what the caller may see and do.
"""

from fastapi import FastAPI
from starlette.routing import BaseRoute

from .dashboard import Dashboard
from .response_masking import MaskResponses
from .routes import (
    admin,
    admin_catalog,
    admin_staff,
    auth,
    callbacks,
    calls,
    escalations,
    sockets,
    staff,
    web,
)
from .routes.deps import AUTH_ERRORS

API_DESCRIPTION = """REST API of the dealerline sales dashboards (see `API.md`).

Log in with `POST /api/auth/login`, then send `Authorization: Bearer <access_token>`.
The WebSockets `/ws/sales` and `/ws/{session_id}` take the token as their first message,
`{"type": "auth", "token": "<access_token>"}` (never in the URL).
"""


def build_app(dash: Dashboard, ops: list[BaseRoute]) -> FastAPI:
    app = FastAPI(
        title="dealerline dashboard API",
        version="1",
        description=API_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # Every /api route but login needs a token (login answers 401 too).
        responses=AUTH_ERRORS,
    )
    # Phone numbers in any answer under /api are masked for roles that do not see them.
    app.add_middleware(MaskResponses)
    app.state.dash = dash
    app.state.web_dir = dash.settings.web_dir.resolve()
    areas = (auth, calls, escalations, staff, callbacks, admin, admin_catalog, admin_staff, sockets)
    for area in areas:
        app.include_router(area.router)
    app.router.routes.extend(ops)
    # Last: the web UI answers every path nothing above took.
    app.include_router(web.router)
    return app
