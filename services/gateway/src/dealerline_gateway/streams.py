"""The media streams one gateway process holds, and what each stream is given by it.

:class:`Streams` registers a stream once it is admitted and forgets it when it ends, so
that shutdown can wait for the calls in progress (and close those still open at the
drain deadline). :class:`StreamDeps` is the handful of process-wide collaborators a media
session uses: settings, bus, metrics, stream tokens, hand-off markers, this registry,
the greeting prefetches and the turn model (loaded once per process,
:func:`~.speculate.load_turn_model`; None: turns end on the silence rule).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Protocol

from dealerline_common.bus import Bus
from dealerline_common.logs import get_logger
from dealerline_common.ops import Health

from .handoff import Handoffs
from .prefetch import Prefetches
from .settings import GatewaySettings
from .telemetry import GatewayMetrics
from .tokens import TokenStore
from .turn_model import TurnModel

log = get_logger(__name__)

_CLOSE_WAIT_S = 5.0


class OpenStream(Protocol):
    """A media stream as the registry sees it."""

    done: asyncio.Event

    async def close(self, code: int = 1001) -> None: ...


class Streams:
    def __init__(self, health: Health) -> None:
        self.health = health
        self.open: dict[int, OpenStream] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        """No new streams are admitted (the process is shutting down)."""
        return self.health.draining

    def register(self, stream: OpenStream) -> None:
        self.open[id(stream)] = stream
        self._idle.clear()

    def unregister(self, stream: OpenStream) -> None:
        self.open.pop(id(stream), None)
        if not self.open:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until no media stream is open."""
        await self._idle.wait()

    async def drain(self, timeout_s: float) -> None:
        """Take no new calls; wait for the streams in progress, then close what is left."""
        self.health.draining = True
        log.info("draining", active_streams=len(self.open))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        left = list(self.open.values())
        if left:
            log.warning("closing streams still open at the drain deadline", count=len(left))
            await asyncio.gather(*(s.close() for s in left), return_exceptions=True)
            await asyncio.gather(
                *(asyncio.wait_for(s.done.wait(), _CLOSE_WAIT_S) for s in left),
                return_exceptions=True,
            )


@dataclass(frozen=True)
class StreamDeps:
    settings: GatewaySettings
    bus: Bus
    gm: GatewayMetrics
    tokens: TokenStore
    handoffs: Handoffs
    streams: Streams
    prefetches: Prefetches  # the greetings held since their incoming webhook
    turn_model: TurnModel | None = None  # end_of_turn=smart: shared by the process's calls
