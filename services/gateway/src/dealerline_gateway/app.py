"""The gateway's HTTP app: Twilio's webhooks (:mod:`.webhooks`), the media-stream
WebSocket (:mod:`.media_socket`) and the common ops routes (``/livez``, ``/readyz``,
``/metrics``)."""

from __future__ import annotations

from fastapi import FastAPI

from dealerline_common.bus import Bus
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, ops_routes

from . import media_socket, webhooks
from .gateway import Gateway
from .settings import GatewaySettings


def create_app(
    settings: GatewaySettings,
    bus: Bus,
    metrics: Metrics | None = None,
    health: Health | None = None,
) -> FastAPI:
    """The gateway app; ``app.state.gateway`` is its :class:`~.gateway.Gateway` (await
    its ``start()`` once the bus is connected, and ``drain()`` on shutdown)."""
    metrics = metrics or Metrics()
    health = health or Health()
    app = FastAPI(title="dealerline gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.gateway = Gateway(settings, bus, metrics, health)
    app.router.routes.extend(ops_routes(health, metrics))
    app.include_router(webhooks.router)
    app.include_router(media_socket.router)
    return app
