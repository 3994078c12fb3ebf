"""Health and metrics endpoints (``/livez``, ``/readyz``, ``/metrics``) and the
process lifecycle every service shares: start, serve, drain on SIGTERM, stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import weakref
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from prometheus_client import Gauge
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import tracing
from .logs import get_logger
from .metrics import CONTENT_TYPE, Metrics

log = get_logger(__name__)

_task_gauges: weakref.WeakKeyDictionary[Metrics, Gauge] = weakref.WeakKeyDictionary()


def _task_gauge(metrics: Metrics) -> Gauge:
    """``asyncio_tasks``: the tasks alive in the service's event loop when ``/metrics`` is
    read (a soak compares it at the start and the end: tasks that only grow leaked). One
    per registry, however many times the routes are built on it."""
    gauge = _task_gauges.get(metrics)
    if gauge is None:
        gauge = metrics.gauge("asyncio_tasks", "asyncio tasks alive in the service's event loop")
        _task_gauges[metrics] = gauge
    return gauge


class Health:
    """Liveness is "the process loop runs"; readiness is set by the service once its
    model is loaded and the bus is up, and cleared again while draining."""

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.checks: dict[str, Callable[[], bool]] = {}

    def add_check(self, name: str, check: Callable[[], bool]) -> None:
        self.checks[name] = check

    def status(self) -> tuple[bool, dict[str, bool]]:
        results = {name: bool(check()) for name, check in self.checks.items()}
        ok = self.ready and not self.draining and all(results.values())
        return ok, results


def ops_routes(health: Health, metrics: Metrics) -> list[BaseRoute]:
    tasks = _task_gauge(metrics)

    async def livez(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok, results = health.status()
        body = {
            "status": "ready" if ok else "not ready",
            "draining": health.draining,
            "checks": results,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_endpoint(_: Request) -> Response:
        tasks.set(len(asyncio.all_tasks()))
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return [
        Route("/livez", livez),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would take SIGTERM for itself and shut down at once, closing every
        # connection (the gateway's calls among them) before the drain began; the
        # process's drain decides when the server stops (:meth:`HttpServer.stop`).
        yield


class HttpServer:
    """uvicorn inside the service's own event loop; signals are left to the service."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        *,
        ws_max_size: int = 16 * 1024 * 1024,
        proxy_headers: bool = True,
        ws_protocol: type[asyncio.Protocol] | str = "auto",
    ) -> None:
        """``ws_max_size``: the largest WebSocket message; uvicorn closes a socket that
        sends a larger one (1009) before reading it into memory. ``proxy_headers=False``:
        uvicorn leaves the peer address alone (it otherwise believes X-Forwarded-For from
        127.0.0.1), for a service that decides itself which proxies to trust.
        ``ws_protocol``: uvicorn's WebSocket implementation (a name or a protocol class)."""
        self.server = _Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                ws_ping_interval=20,
                ws_ping_timeout=20,
                ws_max_size=ws_max_size,
                proxy_headers=proxy_headers,
                ws=ws_protocol,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(), name="http-server")
        while not self.server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise RuntimeError("server is not listening")

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def run_until_signalled(
    start: Callable[[], Awaitable[None]],
    drain: Callable[[], Awaitable[None]],
    health: Health,
) -> None:
    """Start the service, wait for SIGTERM/SIGINT, then drain: readiness goes false at
    once (the load balancer stops sending work), jobs in flight finish, then exit.

    A SIGTERM that lands during start-up (a model still loading) drains as soon as the
    start is done; the spans still buffered are exported before returning."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            # Readiness goes false now, not once the drain coroutine gets to run.
            health.draining = True
            log.info("signal received; draining", signal=sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await start()
        await stop.wait()
        health.draining = True
        await drain()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await asyncio.to_thread(tracing.shutdown_tracing)
    log.info("stopped")
