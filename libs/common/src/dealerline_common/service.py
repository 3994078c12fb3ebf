"""The process lifecycle the fleet's services share.

:class:`BusService` is a service that joins the bus and serves ``/livez``, ``/readyz`` and
``/metrics``: start (HTTP, bus and streams, waiting for NATS and JetStream up to
``nats_start_timeout_s``, the service's own start-up, then ready), drain on
SIGTERM, and a hard ``kill`` for tests that play a crashed pod. :class:`ModelWorker` adds
what the speech workers share: a model loaded and warmed off the event loop, a JetStream
work consumer, and the gauges the autoscaler reads (jobs in flight, capacity).

Drain, within ``drain_timeout_s`` in all (the pod's termination grace period must be
longer): readiness goes false at once (the load balancer stops sending work), work
consumers stop pulling and queue groups are left, jobs in flight finish (those still
running at the deadline are handed back to the bus for another replica, not left to
``ack_wait``), then the connection drains and closes and the process exits 0.
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

from . import tracing
from .bus import Bus, NatsAuth, WorkConsumer, published_at
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
            auth=NatsAuth.from_settings(settings),
            publish_timeout_s=settings.nats_publish_timeout_s,
        )
        self.start_timeout_s = settings.nats_start_timeout_s
        self.http = HttpServer(
            Starlette(routes=ops_routes(self.health, self.metrics)),
            settings.http_host,
            settings.http_port,
        )
        self.health.add_check("bus", lambda: self.bus.is_connected)

    async def start(self) -> None:
        await self.http.start()
        # NATS or its JetStream may come up after us: wait for them (start_timeout_s).
        await self.bus.start(self.start_timeout_s)
        await self.on_start()
        self.health.ready = True
        log.info(f"{self.name} ready")

    async def on_start(self) -> None:
        """The service's own start-up: the bus is up, readiness is still false."""

    async def on_drain(self) -> None:
        """The service's own "stop taking work", first thing on SIGTERM (readiness is
        already false); the bus's consumers and queue groups are stopped after it."""

    async def drain(self) -> None:
        """Stop taking work, finish what is in flight, close: all within the drain timeout
        (a share of it is kept for closing the connection)."""
        budget = self.settings.drain_timeout_s
        closing = min(2.0, budget * 0.25)
        self.health.draining = True
        self.metrics.draining.set(1)
        log.info(f"{self.name} draining", timeout_s=budget)
        await self.on_drain()
        await self.bus.stop_consuming(budget - closing)
        await self.bus.close(closing)
        await self.http.stop()
        log.info(f"{self.name} drained")

    async def kill(self) -> None:
        """Die like a crashed pod: jobs in flight are neither acked nor finished (tests)."""
        self.health.ready = False
        await self.bus.stop_consuming(0.0, hand_back=False)
        with contextlib.suppress(Exception):
            await self.bus.nc.close()
        await self.http.stop()


class WorkerSettings(ServiceSettings):
    """What every JetStream worker kind configures."""

    concurrency: int = Field(default=1, ge=1, le=64, description="jobs at once in this process")
    ack_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="a dead worker's job is redelivered after this (heartbeats keep a live "
        "one's job; unanswered for 3/4 of it, the job is cancelled and left to another)",
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
        kind = self.name.replace("-", "_")
        self.jobs_in_flight = self.metrics.gauge(
            f"{kind}_jobs_in_flight", "Jobs this worker holds (taken, not yet acked)"
        )
        self.worker_capacity = self.metrics.gauge(
            f"{kind}_worker_capacity",
            "Jobs this worker runs at once (0 until ready and while draining)",
        )
        self.queue_wait = self.metrics.histogram(
            f"{kind}_queue_wait_seconds", "Job stored in its stream to this worker starting it"
        )

    @abc.abstractmethod
    def create_engine(self) -> E:
        """Load the model (called in a thread)."""

    @abc.abstractmethod
    async def handle(self, msg: Msg) -> None:
        """One job; return to ack, raise ``Reject`` to drop it, raise anything else to retry."""

    async def _job(self, msg: Msg) -> None:
        stored = published_at(msg)
        if stored is not None:
            self.queue_wait.observe(max(0.0, time.time() - stored))
        self.jobs_in_flight.inc()
        try:
            await self.handle(msg)
        finally:
            self.jobs_in_flight.dec()

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
            handler=self._job,
            concurrency=s.concurrency,
            ack_wait_s=s.ack_wait_s,
            max_deliver=s.max_deliver,
        )
        self.worker_capacity.set(s.concurrency)

    async def on_drain(self) -> None:
        # A draining worker offers no capacity: the autoscaler must not count it.
        self.worker_capacity.set(0)

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
    something is missing), logging, tracing (from ``OTEL_*``), then run until SIGTERM
    and drain."""
    configure_logging(name)
    try:
        settings = load_settings(settings_cls)
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(name, settings.log_level, settings.log_json)
    try:
        tracing.setup_tracing(name)
    except tracing.TracingConfigError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    async def run() -> None:
        service = build(settings)
        await run_until_signalled(service.start, service.drain, service.health)

    asyncio.run(run())
