"""The gateway process on the fleet's shared :class:`~dealerline_common.service.BusService`
lifecycle: its HTTP port serves the gateway app (webhooks, media streams, ops routes);
start connects the bus, ensures the streams, opens the token and hand-off buckets and
then reports ready; SIGTERM drains (no new calls, calls in progress finish until the
drain deadline, those still open then are closed), then HTTP stops (which waits for the
media sockets' handlers, so each call's end is published while the bus is still up), then
the bus closes."""

from __future__ import annotations

from dealerline_common.logs import get_logger
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer
from dealerline_common.service import BusService

from .app import create_app
from .gateway import Gateway
from .settings import GatewaySettings
from .ws_protocol import GatewayWebSocketProtocol

log = get_logger(__name__)


def streams_budget_s(drain_timeout_s: float) -> float:
    """The part of the drain timeout the calls in progress get before those still open are
    closed: what BusService keeps for closing the connection (a quarter, at most 2 s) is
    left to it (closing the streams left at that point can take a few seconds more)."""
    return drain_timeout_s - min(2.0, drain_timeout_s * 0.25)


class GatewayService(BusService):
    name = "gateway"

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.gw_settings = settings
        self.app = create_app(settings, self.bus, self.metrics, self.health)
        self.gateway: Gateway = self.app.state.gateway
        self.http = HttpServer(
            self.app,
            settings.http_host,
            settings.http_port,
            ws_max_size=settings.ws_max_message_bytes,
            ws_protocol=GatewayWebSocketProtocol,
        )

    async def on_start(self) -> None:
        await self.gateway.start()
        log.info("gateway listening", port=self.http.port, public_url=self.gw_settings.public_url)

    async def on_drain(self) -> None:
        await self.gateway.drain(streams_budget_s(self.settings.drain_timeout_s))
        # A socket closed at the deadline still publishes its call's end from its handler:
        # HTTP stops (and waits for those handlers) before BusService closes the bus.
        await self.http.stop()
