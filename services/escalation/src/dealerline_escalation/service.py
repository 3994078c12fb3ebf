"""The escalation service process: the human-leg webhooks on its HTTP port, the
``escalation.request`` work consumer, and one :class:`~.run.EscalationRun` per
escalation it owns.

Requests are consumed from JetStream with explicit ack, ``max_concurrent`` at a time; a
request is acknowledged only once its escalation is over, so a replica that dies (or drains)
mid-escalation loses nothing: the request comes back to another replica, which resumes
from the conversation state instead of ringing anyone again.
"""

from __future__ import annotations

from starlette.applications import Starlette

from dealerline_common import subjects
from dealerline_common.db import database_url_from_env
from dealerline_common.logs import get_logger
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer, ops_routes
from dealerline_common.service import BusService
from dealerline_common.state_store import StateStore, state_store_from_url

from .escalator import Clock, Escalator
from .settings import EscalationSettings
from .staff_check import DbStaffDirectory, StaffDirectory
from .twilio_client import CallControl, NoTwilio, TwilioCalls
from .webhooks import Webhooks

log = get_logger(__name__)


class Service(BusService):
    name = "escalation"

    def __init__(
        self,
        settings: EscalationSettings,
        *,
        store: StateStore | None = None,
        calls: CallControl | None = None,
        staff: StaffDirectory | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.esc_settings = settings
        self._owns_store = store is None
        self.store = store or state_store_from_url(
            settings.state_url,
            namespace=settings.state_namespace,
            ttl_s=settings.state_ttl_s,
            conflict_deadline_s=settings.state_conflict_deadline_s,
            unavailable_deadline_s=settings.state_unavailable_deadline_s,
        )
        self.calls: CallControl = calls or self._twilio(settings)
        # Who may be rung: the dealership database's staff, never the bus's word alone.
        self._owns_staff = staff is None
        self.staff: StaffDirectory = staff or DbStaffDirectory(
            settings.database_url or database_url_from_env()
        )
        extra = {"clock": clock} if clock is not None else {}
        self.escalator = Escalator(
            settings, self.bus, self.store, self.calls, self.metrics, self.staff, **extra
        )
        esc = self.escalator
        self.webhooks = Webhooks(esc.facts, esc.urls, esc.m, settings)
        self.http = HttpServer(
            Starlette(routes=[*ops_routes(self.health, self.metrics), *self.webhooks.routes()]),
            settings.http_host,
            settings.http_port,
        )

    @staticmethod
    def _twilio(settings: EscalationSettings) -> CallControl:
        if settings.missing:
            log.error(
                "escalation cannot ring anyone: Twilio is not configured; every escalation "
                "will fail at once",
                missing=settings.missing,
            )
            return NoTwilio(settings.missing)
        assert settings.twilio_account_sid
        assert settings.twilio_auth_token
        return TwilioCalls(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            api_base_url=settings.twilio_api_base_url,
            request_timeout_s=settings.twilio_request_timeout_s,
        )

    async def on_start(self) -> None:
        s = self.esc_settings
        await self.bus.work(
            subjects.ESCALATION_REQUEST,
            stream=subjects.STREAM_ESCALATIONS,
            durable=subjects.GROUP_ESCALATION,
            handler=self.escalator.handle_request,
            concurrency=s.max_concurrent,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
        )
        log.info(
            "escalation webhooks ready",
            public_url=s.public_url,
            gateway_public_url=s.gateway_public_url,
        )

    async def drain(self) -> None:
        """Stop taking requests; escalations still running at the drain deadline are
        handed back to another replica (which resumes them from the state)."""
        await super().drain()
        await self._close_clients()

    async def kill(self) -> None:
        await super().kill()
        await self._close_clients()

    async def _close_clients(self) -> None:
        await self.calls.close()
        if self._owns_staff:
            await self.staff.close()
        if self._owns_store:
            await self.store.close()
