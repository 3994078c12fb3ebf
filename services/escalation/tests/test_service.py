"""The service starts, joins a real bus, answers health and metrics, and drains."""

import httpx

from dealerline_escalation.app import Service
from dealerline_escalation.settings import EscalationSettings
from dealerline_sim.nats_server import NatsServer


async def test_service_joins_the_bus_and_reports_health(nats_server: NatsServer) -> None:
    settings = EscalationSettings(nats_url=nats_server.url, http_port=0, http_host="127.0.0.1")
    service = Service(settings)
    await service.start()
    base = f"http://127.0.0.1:{service.http.port}"
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/livez")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"bus": True}
        assert b"dealerline_bus_reconnects_total" in (await client.get("/metrics")).content
        service.health.draining = True
        assert (await client.get("/readyz")).status_code == 503
    await service.drain()
    assert not service.bus.is_connected
