"""CPU and memory of the fleet's processes, sampled with psutil (``make load``, ``make soak``).

A :class:`Snapshot` holds each named process's CPU seconds so far and its resident set
size; :func:`cpu_percent` turns two snapshots into CPU % per process over the time between
them (100 % = one core). :class:`Sampler` takes a snapshot every ``interval_s`` in the
background, for RSS over a long run (:func:`rss_growth`). Processes are named as the fleet
names them (``gateway``, ``stt``, … plus ``nats``); a process restarted in between is
looked up afresh by its name each time, and one that is gone is left out of that snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

import psutil

from dealerline_cli.fleet import Fleet

__all__ = [
    "Growth",
    "Sampler",
    "Snapshot",
    "cpu_percent",
    "fleet_pids",
    "rss_growth",
    "snapshot",
]

Pids = Callable[[], Mapping[str, int]]


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    cpu_s: dict[str, float]
    rss: dict[str, int]  # bytes


def fleet_pids(fleet: Fleet) -> Callable[[], dict[str, int]]:
    """The pids of a fleet's processes, NATS included (when the fleet started it), read
    afresh on every call (a restarted process has a new one)."""

    def pids() -> dict[str, int]:
        out = {name: p.process.pid for name, p in fleet.procs.items()}
        if fleet.nats is not None and fleet.nats.proc is not None:
            out["nats"] = fleet.nats.proc.pid
        return out

    return pids


def snapshot(pids: Mapping[str, int]) -> Snapshot:
    cpu: dict[str, float] = {}
    rss: dict[str, int] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                times = proc.cpu_times()
                cpu[name] = times.user + times.system
                rss[name] = proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return Snapshot(time.monotonic(), cpu, rss)


def cpu_percent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU % of each process between two snapshots (100 = one core busy all along)."""
    span = after.at - before.at
    if span <= 0:
        return {}
    return {
        name: max(0.0, (after.cpu_s[name] - before.cpu_s[name]) / span * 100.0)
        for name in after.cpu_s
        if name in before.cpu_s
    }


@dataclass(frozen=True)
class Growth:
    """RSS of one process over a window: at its start, at its end, the peak, in bytes."""

    first: int
    last: int
    peak: int

    @property
    def percent(self) -> float:
        return (self.last - self.first) / self.first * 100.0 if self.first else 0.0


def rss_growth(series: list[Snapshot], since: float) -> dict[str, Growth]:
    """Each process's RSS from the first snapshot at or after ``since`` (monotonic time)
    to the last one."""
    window = [s for s in series if s.at >= since]
    out: dict[str, Growth] = {}
    if not window:
        return out
    for name in window[-1].rss:
        values = [s.rss[name] for s in window if name in s.rss]
        out[name] = Growth(values[0], values[-1], max(values))
    return out


@dataclass
class Sampler:
    """``async with Sampler(pids, 5.0) as s:`` snapshots every ``interval_s`` into
    ``s.series`` (and once more on the way out)."""

    pids: Pids
    interval_s: float = 5.0
    series: list[Snapshot] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def take(self) -> Snapshot:
        snap = snapshot(self.pids())
        self.series.append(snap)
        return snap

    async def _run(self) -> None:
        while True:
            await asyncio.to_thread(self.take)
            await asyncio.sleep(self.interval_s)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run(), name="procstats-sampler")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.take()
