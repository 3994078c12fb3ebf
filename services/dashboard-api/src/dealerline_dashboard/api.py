"""The REST API, the two WebSockets and the web UI, as one FastAPI app (API.md is the
contract with the web UI).

Every route under ``/api`` (but login) and both sockets need a staff token; the staff row
is read on each request, so its current role decides what the caller may see and do.
"""

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import nats.errors
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.websockets import WebSocket

from dealerline_common import subjects
from dealerline_common.db.models import CallOutcome, Staff
from dealerline_common.logs import get_logger, mask_text
from dealerline_common.messages import (
    AppointmentEvent,
    CallEndedEvent,
    CallStartedEvent,
    HumanStatusEvent,
    LatencyEvent,
    StaffAction,
    StaffActionReply,
    StaffContact,
    StaffDutyChanged,
    StateUpdateEvent,
    TranscriptEvent,
)

from .accounts import normalize_email
from .auth import InvalidToken, verify_password
from .core import Dashboard
from .events import EventReader, event_frame, mask_data, read_all
from .schemas import (
    ActionOut,
    AppointmentOut,
    CallbackOut,
    CallDetail,
    CallPage,
    DutyIn,
    EscalationOut,
    LiveCallOut,
    LoginIn,
    LoginOut,
    Problem,
    StaffOut,
    StaffPatch,
)
from .sockets import CLOSE_BAD_REQUEST, CLOSE_TOO_SLOW, CLOSE_UNAUTHORIZED, WsClient, close_socket
from .store import Viewer, call_summary_json, callback_json, staff_json

log = get_logger(__name__)

API_DESCRIPTION = """REST API of the dealerline sales dashboards (see `API.md`).

Log in with `POST /api/auth/login`, then send `Authorization: Bearer <access_token>`.
The WebSockets `/ws/sales` and `/ws/{session_id}` take the token as `?token=`.
"""

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing, expired or forged token"}
}


@dataclass(frozen=True)
class Principal:
    staff: Staff
    viewer: Viewer

    def contact(self) -> StaffContact:
        return StaffContact(
            name=self.staff.name,
            phone=self.staff.phone,
            role=self.staff.role,
            staff_id=self.staff.id,
        )


def _unauthorized(detail: str = "not authenticated") -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def build_app(dash: Dashboard, ops: list[BaseRoute]) -> FastAPI:
    settings = dash.settings
    app = FastAPI(
        title="dealerline dashboard API",
        version="1",
        description=API_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # Every /api route but login needs a token (login answers 401 too).
        responses=_AUTH_ERRORS,
    )
    bearer = HTTPBearer(auto_error=False, description="the token from POST /api/auth/login")

    async def principal_of(token: str | None) -> Principal:
        try:
            claims = dash.tokens.decode(token)
        except InvalidToken:
            raise _unauthorized("invalid or expired token") from None
        staff = await dash.store.staff_by_id(claims.staff_id)
        if staff is None:
            raise _unauthorized("this account no longer exists")
        return Principal(staff, Viewer(staff.id, staff.role, dash.full_numbers(staff.role)))

    async def current(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            raise _unauthorized()
        return await principal_of(creds.credentials)

    async def manager(who: Annotated[Principal, Depends(current)]) -> Principal:
        if who.staff.role != "manager":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only a manager may do this")
        return who

    Who = Annotated[Principal, Depends(current)]

    # ------------------------------------------------------------------ auth

    @app.post(
        "/api/auth/login",
        response_model=LoginOut,
        tags=["auth"],
        responses={429: {"model": Problem, "description": "too many failed logins"}},
    )
    async def login(body: LoginIn) -> Any:
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
            raise _unauthorized("wrong email or password")
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

    @app.get("/api/me", response_model=StaffOut, tags=["auth"])
    async def me(who: Who) -> Any:
        """The staff member the token belongs to."""
        return staff_json(who.staff, who.viewer)

    # ------------------------------------------------------------------ calls

    @app.get("/api/calls/live", response_model=list[LiveCallOut], tags=["calls"])
    async def live_calls(who: Who) -> Any:
        """Calls going on now (and those ended in the last minute, as ``ended``)."""
        return dash.view.live_calls()

    @app.get("/api/calls", response_model=CallPage, tags=["calls"])
    async def calls(
        who: Who,
        q: Annotated[str | None, Query(max_length=200)] = None,
        outcome: CallOutcome | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Any:
        """The call log, newest first; ``q`` searches caller name, phone digits, summary
        and transcript text."""
        rows, total = await dash.store.search_calls(
            q, outcome.value if outcome else None, limit, offset
        )
        return {"items": [call_summary_json(c, who.viewer) for c in rows], "total": total}

    @app.get(
        "/api/calls/{session_id}",
        response_model=CallDetail,
        tags=["calls"],
        responses={404: {"model": Problem}},
    )
    async def call_detail(session_id: str, who: Who) -> Any:
        """One call: its record and transcript, or (while it is live, or before its record
        is written) what its events say so far."""
        try:
            subject = subjects.events(session_id)
        except ValueError:
            raise HTTPException(404, "no such call") from None
        live = session_id in dash.view.calls and dash.view.calls[session_id].ended_at is None
        row = await dash.store.call(session_id)
        if row is not None:
            body = call_summary_json(row, who.viewer)
            turns = [
                {
                    "role": t.role,
                    "text": t.text if who.viewer.full_numbers else mask_text(t.text),
                    "at": t.at.timestamp(),
                    "interrupted": t.interrupted,
                }
                for t in row.turns
            ]
            body.update(
                turns=turns,
                latency=row.latency or [],
                escalation=row.escalation or [],
                appointments=row.appointments or [],
                barge_ins=row.barge_ins,
                end_reason=row.end_reason,
                live=live,
            )
            return body
        stored = await read_all(dash.bus.js, subject, settings.events_batch)
        if not stored:
            raise HTTPException(404, "no such call")
        body = _detail_from_events(session_id, [s.event for s in stored], live)
        return body if who.viewer.full_numbers else mask_data(body)

    @app.get("/api/appointments/today", response_model=list[AppointmentOut], tags=["dealership"])
    async def appointments_today(who: Who) -> Any:
        """Every appointment of the dealership's today (its timezone), by start time."""
        return await dash.store.appointments_today()

    # ------------------------------------------------------------------ escalations

    @app.get("/api/escalations", response_model=list[EscalationOut], tags=["escalations"])
    async def escalations(who: Who) -> Any:
        """Running escalations first (oldest first), then today's finished ones."""
        start, _, _ = await dash.store.today_bounds()
        return dash.view.escalation_list(start.timestamp())

    async def staff_action(
        session_id: str, action: Literal["claim", "pass"], who: Principal
    ) -> Any:
        try:
            subject = subjects.staff_action(session_id)
        except ValueError:
            raise HTTPException(404, "no such call") from None
        request = StaffAction(session_id=session_id, action=action, staff=who.contact())
        try:
            msg = await dash.bus.nc.request(
                subject, request.dumps(), timeout=settings.staff_action_timeout_s
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
            raise HTTPException(
                status.HTTP_409_CONFLICT, "no escalation of this call is ringing"
            ) from None
        try:
            reply = StaffActionReply.model_validate_json(msg.data)
        except ValidationError:
            log.error("unreadable staff action reply", session_id=session_id)
            raise HTTPException(
                502, "the escalation service answered something unreadable"
            ) from None
        log.info(
            "staff action",
            session_id=session_id,
            action=action,
            staff_id=who.staff.id,
            accepted=reply.accepted,
        )
        return {"accepted": reply.accepted, "detail": reply.detail}

    _action_errors: dict[int | str, dict[str, Any]] = {
        409: {"model": Problem, "description": "no escalation of this call is ringing"}
    }

    @app.post(
        "/api/escalations/{session_id}/claim",
        response_model=ActionOut,
        tags=["escalations"],
        responses=_action_errors,
    )
    async def claim(session_id: str, who: Who) -> Any:
        """Take a ringing escalation: the escalation service rings you next."""
        return await staff_action(session_id, "claim", who)

    @app.post(
        "/api/escalations/{session_id}/pass",
        response_model=ActionOut,
        tags=["escalations"],
        responses=_action_errors,
    )
    async def pass_(session_id: str, who: Who) -> Any:
        """Pass on a ringing escalation: you are taken off its hunt list."""
        return await staff_action(session_id, "pass", who)

    # ------------------------------------------------------------------ staff

    @app.get("/api/staff", response_model=list[StaffOut], tags=["staff"])
    async def staff_list(who: Who) -> Any:
        """Everyone, in hunt order."""
        return [staff_json(s, who.viewer) for s in await dash.store.list_staff()]

    async def change_staff(
        staff_id: int,
        who: Principal,
        *,
        on_duty: bool | None = None,
        hunt_order: int | None = None,
        role: str | None = None,
    ) -> Any:
        result = await dash.store.update_staff(
            staff_id, on_duty=on_duty, hunt_order=hunt_order, role=role
        )
        if result is None:
            raise HTTPException(404, "no such staff member")
        staff, duty_changed = result
        log.info(
            "staff changed",
            staff_id=staff_id,
            by=who.staff.id,
            on_duty=on_duty,
            hunt_order=hunt_order,
            role=role,
        )
        if duty_changed:
            change = StaffDutyChanged(staff_id=staff.id, name=staff.name, on_duty=staff.on_duty)
            try:
                await dash.bus.publish(subjects.STAFF_DUTY, change)
            except Exception:
                # The database is the truth (the next hunt list reads it); running
                # escalations only hear of it through the bus.
                log.exception("duty change not published", staff_id=staff.id)
        return staff_json(staff, who.viewer)

    @app.put("/api/staff/me/duty", response_model=StaffOut, tags=["staff"])
    async def my_duty(body: DutyIn, who: Who) -> Any:
        """Go on or off duty (the escalation hunt list follows)."""
        return await change_staff(who.staff.id, who, on_duty=body.on_duty)

    @app.patch(
        "/api/staff/{staff_id}",
        response_model=StaffOut,
        tags=["staff"],
        responses={403: {"model": Problem}, 404: {"model": Problem}},
    )
    async def patch_staff(
        staff_id: int, body: StaffPatch, who: Annotated[Principal, Depends(manager)]
    ) -> Any:
        """Change someone's duty, hunt order or role (managers only)."""
        return await change_staff(
            staff_id, who, on_duty=body.on_duty, hunt_order=body.hunt_order, role=body.role
        )

    # ------------------------------------------------------------------ callbacks

    @app.get("/api/callbacks", response_model=list[CallbackOut], tags=["callbacks"])
    async def callbacks(who: Who, status: Literal["open", "done"] | None = None) -> Any:
        """Callback requests the agent took, newest first."""
        rows = await dash.store.callbacks(status)
        names = await dash.store.staff_names({r.done_by for r in rows if r.done_by is not None})
        return [callback_json(r, who.viewer, names) for r in rows]

    @app.post(
        "/api/callbacks/{callback_id}/done",
        response_model=CallbackOut,
        tags=["callbacks"],
        responses={404: {"model": Problem}},
    )
    async def callback_done(callback_id: int, who: Who) -> Any:
        """Mark a callback done (idempotent: the first who and when are kept)."""
        row = await dash.store.callback_done(callback_id, who.staff.id)
        if row is None:
            raise HTTPException(404, "no such callback request")
        names = await dash.store.staff_names({row.done_by} if row.done_by is not None else set())
        return callback_json(row, who.viewer, names)

    # ------------------------------------------------------------------ sockets

    async def ws_principal(ws: WebSocket) -> Principal | None:
        await ws.accept()
        try:
            return await principal_of(ws.query_params.get("token"))
        except HTTPException:
            await close_socket(ws, CLOSE_UNAUTHORIZED, "unauthorized")
            return None

    async def run_client(client: WsClient, kind: str, producer: Any = None) -> None:
        dash.ws_clients.labels(kind).inc()
        try:
            code = await client.serve(producer)
        finally:
            dash.ws_clients.labels(kind).dec()
        if code == CLOSE_TOO_SLOW:
            log.info("slow socket closed", socket=kind, staff_id=client.staff_id)

    def too_slow(client: WsClient) -> None:
        dash.slow_drops.labels(client.kind).inc()
        log.warning(
            "socket too slow; closing it with 4008",
            socket=client.kind,
            staff_id=client.staff_id,
            queued=client.queue.qsize(),
        )

    @app.websocket("/ws/sales")
    async def ws_sales(ws: WebSocket) -> None:
        who = await ws_principal(ws)
        if who is None:
            return
        client = WsClient(
            ws,
            kind="sales",
            staff_id=who.staff.id,
            full_numbers=who.viewer.full_numbers,
            queue_size=settings.ws_send_queue,
            on_too_slow=too_slow,
        )
        staff = [staff_json(s, who.viewer) for s in await dash.store.list_staff()]
        start, _, _ = await dash.store.today_bounds()
        # No await from the snapshot to joining the hub: every event after the snapshot
        # reaches this client, none before it.
        client.offer(json.dumps(dash.snapshot(staff, start.timestamp()), separators=(",", ":")))
        dash.hub.clients.add(client)
        try:
            await run_client(client, "sales")
        finally:
            dash.hub.clients.discard(client)

    @app.websocket("/ws/{session_id}")
    async def ws_call(ws: WebSocket, session_id: str) -> None:
        who = await ws_principal(ws)
        if who is None:
            return
        try:
            subject = subjects.events(session_id)
        except ValueError:
            await close_socket(ws, CLOSE_BAD_REQUEST, "invalid session id")
            return
        client = WsClient(
            ws,
            kind="call",
            staff_id=who.staff.id,
            full_numbers=who.viewer.full_numbers,
            queue_size=settings.ws_send_queue,
            on_too_slow=too_slow,
        )
        reader = EventReader(dash.bus.js, subject, batch=settings.events_batch)

        async def produce() -> None:
            # Replay at the client's pace (put waits for room), then live without waiting
            # (offer: a full queue closes the socket with 4008).
            try:
                caught_up = await reader.open() == 0
                while True:
                    got = await reader.fetch(timeout_s=1.0)
                    for stored in got:
                        frame = event_frame(stored.seq, stored.event)
                        if not caught_up:
                            await client.put(frame)
                        elif not client.offer(frame):
                            return
                    if not got or reader.pending == 0:
                        caught_up = True
            finally:
                await reader.close()

        dash.call_clients.add(client)
        try:
            await run_client(client, "call", produce())
        finally:
            dash.call_clients.discard(client)

    # ------------------------------------------------------------------ ops + web UI

    app.router.routes.extend(ops)
    web_dir = settings.web_dir.resolve()
    reserved = ("api", "ws", "docs", "openapi.json", "livez", "readyz", "metrics")

    @app.get("/{path:path}", include_in_schema=False)
    async def web_ui(path: str) -> Response:
        first = path.split("/", 1)[0]
        if first in reserved:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        index = web_dir / "index.html"
        if not index.is_file():
            return PlainTextResponse(
                f"web UI not built; run make setup (expected {web_dir}/index.html)",
                status_code=503,
            )
        if path:
            candidate = (web_dir / path).resolve()
            if candidate.is_relative_to(web_dir) and candidate.is_file():
                return FileResponse(candidate)
        # A client-side route (/calls/sess_…): the app's page, which routes itself.
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    return app


def _detail_from_events(session_id: str, events: list[Any], live: bool) -> dict[str, Any]:
    """A call's detail from its events alone (it is live, or its record is not written)."""
    started = ended = None
    caller = customer = end_reason = None
    turns: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    escalation: list[dict[str, Any]] = []
    appointments: list[dict[str, Any]] = []
    barge_ins = 0
    for ev in events:
        started = ev.at if started is None else min(started, ev.at)
        if isinstance(ev, CallStartedEvent):
            caller = ev.from_masked
        elif isinstance(ev, TranscriptEvent):
            role = "caller" if ev.role == "user" else "agent"
            turns.append(
                {"role": role, "text": ev.text, "at": ev.at, "interrupted": ev.interrupted}
            )
            barge_ins += int(ev.interrupted)
        elif isinstance(ev, LatencyEvent):
            latency.append({"turn_id": ev.turn_id, "at": ev.at, "stages_ms": ev.stages_ms})
        elif isinstance(ev, HumanStatusEvent):
            escalation.append(ev.model_dump(mode="json", exclude={"type", "session_id"}))
        elif isinstance(ev, AppointmentEvent):
            appointments.append(ev.model_dump(mode="json", exclude={"type", "session_id"}))
            customer = ev.customer_name or customer
        elif isinstance(ev, StateUpdateEvent):
            info = ev.state.get("customer")
            if isinstance(info, dict) and info.get("name"):
                customer = str(info["name"])
        elif isinstance(ev, CallEndedEvent):
            ended, end_reason = ev.at, ev.reason
    end = ended if ended is not None else time.time()
    return {
        "session_id": session_id,
        "caller": caller,
        "customer_name": customer,
        "started_at": started,
        "ended_at": ended,
        "duration_s": round(end - started, 1) if started is not None else None,
        "outcome": None,
        "summary": None,
        "turns": turns,
        "latency": latency,
        "escalation": escalation,
        "appointments": appointments,
        "barge_ins": barge_ins,
        "end_reason": end_reason,
        "live": live,
    }
