"""The dashboard-api service's HTTP app and lifecycle.

In this release the service joins the bus and answers health and metrics; its own work
arrives in later releases (see the project issues).
"""

from __future__ import annotations

from starlette.applications import Starlette

from dealerline_common.bus import Bus
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer, ops_routes

from .settings import DashboardSettings


class Service:
    def __init__(self, settings: DashboardSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health()
        self.bus = Bus(
            settings.nats_url, "dashboard-api", self.metrics, file_storage=settings.js_file_storage
        )
        self.health.add_check("bus", lambda: self.bus.is_connected)
        self.app = Starlette(routes=ops_routes(self.health, self.metrics))
        self.http = HttpServer(self.app, settings.http_host, settings.http_port)

    async def start(self) -> None:
        await self.bus.connect()
        await self.bus.ensure_streams()
        await self.http.start()
        self.health.ready = True

    async def drain(self) -> None:
        self.health.ready = False
        await self.bus.close()
        await self.http.stop()
