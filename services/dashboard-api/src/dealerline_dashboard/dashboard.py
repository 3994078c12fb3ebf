"""The dashboard's running parts: the database, the live view fed from the event stream
and the escalation/duty subjects, the sales-socket hub, tokens and the login limits.

The event feed is one ephemeral consumer over ``call.*.events`` that starts
``replay_window_s`` back in the stream: on start it replays (readiness waits for it), so a
restarted replica knows the calls that are still going and today's escalations, then it
goes on with live events. Every replica reads the whole stream (no queue group): each one
serves its own sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.db.engine import create_engine_from_url, database_url_from_env
from dealerline_common.db.engine import session_factory as make_sessions
from dealerline_common.logs import get_logger
from dealerline_common.messages import EscalationStatus, StaffDutyChanged, loads
from dealerline_common.metrics import Metrics

from .admin_store import AdminStore
from .auth import TokenIssuer
from .events import EventReader, Frame, event_frame
from .limits import LoginLimits, counters_from_url, parse_networks
from .live import LiveView
from .settings import DashboardSettings
from .sockets import CLOSE_GOING_AWAY, Hub, WsClient
from .store import Store, Viewer, staff_json

log = get_logger(__name__)

PRUNE_EVERY_S = 30.0


class Dashboard:
    def __init__(self, settings: DashboardSettings, bus: Bus, metrics: Metrics) -> None:
        self.settings = settings
        self.bus = bus
        self.database_url = settings.database_url or database_url_from_env()
        self.engine = create_engine_from_url(self.database_url)
        self.store = Store(make_sessions(self.engine), settings.dealership_timezone)
        self.admin = AdminStore(self.store.sessions)
        self.view = LiveView(stale_call_s=settings.stale_call_s, window_s=settings.replay_window_s)
        self.hub = Hub()
        self.call_clients: set[WsClient] = set()
        self.tokens = TokenIssuer(settings.auth_secret.get_secret_value(), settings.token_ttl_s)
        self.login_limits = LoginLimits(
            counters_from_url(settings.state_url, settings.state_namespace),
            ip_max_attempts=settings.login_ip_max_attempts,
            ip_window_s=settings.login_ip_window_s,
            max_failures=settings.login_max_failures,
            lockout_s=settings.login_lockout_s,
        )
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        # argon2id takes 64 MiB a check: a few at once, no queue (see routes/auth.py).
        self.password_checks = asyncio.Semaphore(settings.login_max_concurrent)
        self.caught_up = asyncio.Event()
        self.reader: EventReader | None = None
        self._feed_task: asyncio.Task[None] | None = None
        self._subs: list[Subscription] = []

        self.ws_clients = metrics.gauge(
            "dashboard_ws_clients", "WebSocket clients connected", ["socket"]
        )
        self.slow_drops = metrics.counter(
            "dashboard_ws_slow_drops_total",
            "WebSocket clients closed with 4008 because their send queue was full",
            ["socket"],
        )
        self.login_failures = metrics.counter(
            "dashboard_login_failures_total",
            "Refused logins (bad_credentials, locked_out, rate_limited, busy)",
            ["reason"],
        )
        self.events_read = metrics.counter(
            "dashboard_events_total", "Dashboard events read from the stream by the live feed"
        )

    def full_numbers(self, role: str) -> bool:
        return role in self.settings.full_number_roles

    def recheck_sockets(self, staff_id: int) -> None:
        """``staff_id``'s row changed: their sockets' guards re-read it now."""
        for client in [*self.hub.clients, *self.call_clients]:
            if client.staff_id == staff_id:
                client.recheck.set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._subs = [
            await self.bus.subscribe(subjects.ALL_ESCALATION, self._on_escalation),
            await self.bus.subscribe(subjects.STAFF_DUTY, self._on_duty),
        ]
        since = datetime.now(UTC) - timedelta(seconds=self.settings.replay_window_s)
        self.reader = EventReader(
            self.bus.js, subjects.ALL_EVENTS, start_time=since, batch=self.settings.events_batch
        )
        pending = await self.reader.open()
        log.info(
            "replaying dashboard events", events=pending, window_s=self.settings.replay_window_s
        )
        if pending == 0:
            self.caught_up.set()
        self._feed_task = asyncio.create_task(self._feed(), name="dashboard-feed")
        try:
            await asyncio.wait_for(self.caught_up.wait(), self.settings.replay_timeout_s)
        except TimeoutError:
            log.warning(
                "event replay not finished in time; serving what is known so far",
                timeout_s=self.settings.replay_timeout_s,
            )
            self.caught_up.set()
        log.info("live view ready", live_calls=len(self.view.calls))

    async def stop(self) -> None:
        """Close every socket (1001: a client reconnects to another replica) and stop."""
        for client in [*self.hub.clients, *self.call_clients]:
            client.stop(CLOSE_GOING_AWAY, "server restarting")
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs = []
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
            self._feed_task = None
        if self.reader is not None:
            await self.reader.close()
        await self.login_limits.counters.close()
        await self.engine.dispose()

    # ------------------------------------------------------------------ the feed

    async def _feed(self) -> None:
        assert self.reader is not None
        reader = self.reader
        last_prune = time.monotonic()
        while True:
            try:
                got = await reader.fetch(timeout_s=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.bus.is_connected:
                    await self.bus.connected.wait()
                else:
                    log.warning("event feed fetch failed", error=repr(exc))
                    await asyncio.sleep(0.5)
                continue
            for stored in got:
                self.events_read.inc()
                try:
                    changed = self.view.apply(stored.seq, stored.event)
                except Exception:
                    log.exception("event not applied", seq=stored.seq)
                    continue
                self._broadcast(event_frame(stored.seq, stored.event))
                if changed:
                    self._broadcast_escalation(stored.event.session_id)
            if not got or reader.pending == 0:
                self.caught_up.set()
            if time.monotonic() - last_prune > PRUNE_EVERY_S:
                self.view.prune()
                last_prune = time.monotonic()

    def _broadcast(self, frame: Frame) -> None:
        self.hub.broadcast(frame)

    def _broadcast_escalation(self, session_id: str) -> None:
        esc = self.view.escalations.get(session_id)
        if esc is None:
            return
        body = self.view.escalation_json(esc)
        self._broadcast(
            Frame(
                {
                    "type": "escalation",
                    "session_id": session_id,
                    "at": esc.updated_at,
                    "data": body,
                }
            )
        )

    async def _on_escalation(self, msg: Msg) -> None:
        try:
            status = loads(EscalationStatus, msg.data)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable escalation status skipped", subject=msg.subject, error=str(exc))
            return
        if self.view.apply_escalation(status):
            self._broadcast_escalation(status.session_id)

    async def _on_duty(self, msg: Msg) -> None:
        try:
            change = loads(StaffDutyChanged, msg.data)
        except (ValidationError, ValueError) as exc:
            log.warning("unreadable duty change skipped", error=str(exc))
            return
        self.recheck_sockets(change.staff_id)
        staff = await self.store.staff_by_id(change.staff_id)
        if staff is None:
            return
        for client in list(self.hub.clients):
            viewer = Viewer(client.staff_id, "", client.full_numbers)
            text = json.dumps(
                {"type": "staff_duty", "at": change.at, "data": staff_json(staff, viewer)},
                separators=(",", ":"),
            )
            if not client.offer(text) and client.too_slow.is_set():
                self.hub.clients.discard(client)

    # ------------------------------------------------------------------ views

    def snapshot(self, staff: list[dict[str, object]], day_start: float) -> dict[str, object]:
        return {
            "type": "snapshot",
            "at": time.time(),
            "data": {
                "live_calls": self.view.live_calls(),
                "escalations": self.view.escalation_list(day_start),
                "staff": staff,
            },
        }
