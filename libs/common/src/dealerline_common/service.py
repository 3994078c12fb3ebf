"""The process lifecycle the fleet's services share.

:class:`BusService` is a service that joins the bus and serves ``/livez``, ``/readyz`` and
``/metrics``: start (HTTP, bus, streams, the service's own start-up, then ready), drain on
SIGTERM (not ready, stop taking work, finish jobs in flight, close), and a hard ``kill``
for tests that play a crashed pod. :class:`ModelWorker` adds what the speech workers share:
a model loaded and warmed off the event loop, and a JetStream work consumer.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import ClassVar, Generic, TypeVar

from nats.aio.msg import Msg
from pydantic import Field
from starlette.applications import Starlette

from .bus import Bus, WorkConsumer
from .logs import configure_logging, get_logger
from .metrics import Metrics
from .ops import Health, HttpServer, ops_routes, run_until_signalled
from .settings import ServiceSettings, SettingsError, load_settings

log = get_logger(__name__)


class BusService:
    """A service process on the bus with health and metrics endpoints."""

    name: ClassVar[str] = "service"

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.health = health or Health()
        self.bus = Bus(
            settings.nats_url,
            self.name,
            self.metrics,
            file_storage=settings.js_file_storage,
        )
        self.http = HttpServer(
            Starlette(routes=ops_routes(self.health, self.metrics)),
            settings.http_host,
            settings.http_port,
        )
        self.health.add_check("bus", lambda: self.bus.is_connected)

    async def start(self) -> None:
        await self.http.start()
        await self.bus.connect()
        await self.bus.ensure_streams()
        await self.on_start()
        self.health.ready = True
        log.info(f"{self.name} ready")

    async def on_start(self) -> None:
        """The service's own start-up: the bus is up, readiness is still false."""

    async def drain(self) -> None:
        """Stop taking work, finish what is in flight (up to the drain timeout), close."""
        self.health.draining = True
        await self.bus.stop_consuming(self.settings.drain_timeout_s)
        await self.bus.close()
        await self.http.stop()

    async def kill(self) -> None:
        """Die like a crashed pod: jobs in flight are neither acked nor finished (tests)."""
        self.health.ready = False
        await self.bus.stop_consuming(0.0)
        with contextlib.suppress(Exception):
            await self.bus.nc.close()
        await self.http.stop()


class WorkerSettings(ServiceSettings):
    """What every JetStream worker kind configures."""

    concurrency: int = Field(default=1, ge=1, le=64, description="jobs at once in this process")
    ack_wait_s: float = Field(
        default=15.0, gt=0, description="a dead worker's job is redelivered after this"
    )
    max_deliver: int = Field(default=3, ge=1, description="attempts before a job is dropped")


E = TypeVar("E")


class ModelWorker(BusService, Generic[E], abc.ABC):
    """A stateless worker that runs one model over the jobs of one work queue."""

    subject: ClassVar[str]
    stream: ClassVar[str]
    group: ClassVar[str]

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        engine: E | None = None,
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        super().__init__(settings, metrics=metrics, health=health)
        self.worker_settings = settings
        self.engine: E | None = engine
        self.consumer: WorkConsumer | None = None
        self.health.add_check("model", lambda: self.engine is not None)

    @abc.abstractmethod
    def create_engine(self) -> E:
        """Load the model (called in a thread)."""

    @abc.abstractmethod
    async def handle(self, msg: Msg) -> None:
        """One job; return to ack, raise ``Reject`` to drop it, raise anything else to retry."""

    async def before_consuming(self) -> None:
        """Subscriptions that must exist before the first job arrives."""

    async def on_start(self) -> None:
        await self.load_model()
        await self.before_consuming()
        s = self.worker_settings
        self.consumer = await self.bus.work(
            self.subject,
            stream=self.stream,
            durable=self.group,
            handler=self.handle,
            concurrency=s.concurrency,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
        )

    async def load_model(self) -> None:
        """Load (unless injected) and warm up the model, off the event loop."""
        started = time.perf_counter()
        engine = self.engine or await asyncio.to_thread(self.create_engine)
        warm_up = getattr(engine, "warm_up", None)
        if callable(warm_up):
            await asyncio.to_thread(warm_up)
        self.engine = engine
        log.info(f"{self.name} model warm", seconds=round(time.perf_counter() - started, 2))


S = TypeVar("S", bound=ServiceSettings)


def service_main(name: str, settings_cls: type[S], build: Callable[[S], BusService]) -> None:
    """The body of a service's ``main()``: settings (one clear line and exit 2 when
    something is missing), logging, then run until SIGTERM and drain."""
    configure_logging(name)
    try:
        settings = load_settings(settings_cls)
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level, settings.log_json)

    async def run() -> None:
        service = build(settings)
        await run_until_signalled(service.start, service.drain, service.health)

    asyncio.run(run())
