"""``dealerline-gateway``: serve Twilio webhooks and media streams until SIGTERM."""

from __future__ import annotations

import asyncio
import sys

from dealerline_common.bus import Bus
from dealerline_common.logs import configure_logging, get_logger
from dealerline_common.metrics import Metrics
from dealerline_common.ops import Health, HttpServer, run_until_signalled
from dealerline_common.settings import SettingsError, load_settings

from .app import create_app
from .settings import GatewaySettings

log = get_logger("dealerline_gateway")


async def serve(settings: GatewaySettings) -> None:
    metrics = Metrics()
    health = Health()
    bus = Bus(settings.nats_url, "gateway", metrics, file_storage=settings.js_file_storage)
    app = create_app(settings, bus, metrics, health)
    gateway = app.state.gateway
    http = HttpServer(app, settings.http_host, settings.http_port)

    async def start() -> None:
        await bus.connect()
        await bus.ensure_streams()
        await gateway.start()
        await http.start()
        log.info("gateway listening", port=http.port, public_url=settings.public_url)

    async def drain() -> None:
        await gateway.drain(settings.drain_timeout_s)
        await http.stop()
        await bus.close()

    await run_until_signalled(start, drain, health)


def main() -> None:
    configure_logging("gateway")
    try:
        settings = load_settings(GatewaySettings)
    except SettingsError as exc:
        log.error("bad configuration", error=str(exc))
        sys.exit(2)
    configure_logging("gateway", settings.log_level, settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
