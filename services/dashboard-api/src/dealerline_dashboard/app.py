"""The dashboard-api service process: the REST API, the dashboards' WebSockets and the
web UI on one HTTP port (with ``/livez`` ``/readyz`` ``/metrics``), fed by the event
stream and the escalation and duty subjects (see :mod:`.dashboard`)."""

from __future__ import annotations

from dealerline_common.logs import get_logger
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer, ops_routes
from dealerline_common.service import BusService

from .api import build_app
from .dashboard import Dashboard
from .settings import DashboardSettings

log = get_logger(__name__)

WS_MAX_MESSAGE_BYTES = 64 * 1024


class Service(BusService):
    name = "dashboard-api"

    def __init__(
        self,
        settings: DashboardSettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.dash_settings = settings
        self.dashboard = Dashboard(settings, self.bus, self.metrics)
        self.app = build_app(self.dashboard, ops_routes(self.health, self.metrics))
        # The client address for the login limits is ours to read (trusted_proxies):
        # uvicorn must not rewrite it from X-Forwarded-For on its own.
        # Browsers send one small message (the token); a socket is accepted before it is
        # authorised, so the message size is capped well below uvicorn's 16 MiB.
        self.http = HttpServer(
            self.app,
            settings.http_host,
            settings.http_port,
            proxy_headers=False,
            ws_max_size=WS_MAX_MESSAGE_BYTES,
        )
        self.health.add_check("events_replayed", self.dashboard.caught_up.is_set)
        if not (settings.web_dir / "index.html").is_file():
            log.warning(
                "web UI not built; / answers 503 (run make setup)", web_dir=str(settings.web_dir)
            )

    async def on_start(self) -> None:
        await self.dashboard.start()

    async def on_drain(self) -> None:
        await self.dashboard.stop()

    async def kill(self) -> None:
        await self.dashboard.stop()
        await super().kill()
