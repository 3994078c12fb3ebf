"""A work job's lease: confirmed in-progress heartbeats, and what a worker must do when
it can no longer be sure it still owns the job.

JetStream gives a delivered job to another member of the group ``ack_wait`` after it last
heard of it. :class:`Lease` sends an in-progress ack (``+WPI``) every ``ack_wait / 4`` as a
request, which the server answers: a heartbeat counts only once answered. nats-py's
``msg.in_progress()`` is a plain publish, and while disconnected it only goes into the
reconnect buffer, so it proves nothing. While the connection is down no heartbeat is tried;
the first goes out as soon as it is back (after a server restart, file storage: the server
redelivers pending jobs ``ack_wait`` after it restarted, so heartbeats must resume at once).

The lease is lost when no heartbeat sent in the last ``3/4 ack_wait`` was answered: the
server may redeliver the job ``ack_wait`` after it received the last answered one, which
is no earlier than when it was sent, so the old owner stops a quarter of ``ack_wait``
before the new one can start. The owner task is then cancelled; the job is neither acked
nor handed back (it belongs to another replica now).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

__all__ = ["Lease"]

_PROGRESS = b"+WPI"


class Lease:
    """The heartbeats of one job; :meth:`keep` runs beside the handler."""

    def __init__(
        self,
        msg: Msg,
        nc: Client,
        connected: asyncio.Event,
        ack_wait_s: float,
        owner: asyncio.Task[None] | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.msg = msg
        self.nc = nc
        self.connected = connected
        self.interval_s = ack_wait_s / 4
        self.lease_s = ack_wait_s - self.interval_s
        self.owner = owner
        self.clock = clock
        self.confirmed_at = clock()  # the job was received: the server's clock started before
        self.lost = False
        self.beats = 0
        self._stopped = False

    @property
    def expires_in(self) -> float:
        return self.confirmed_at + self.lease_s - self.clock()

    async def keep(self) -> None:
        """Heartbeat until cancelled; on expiry mark the lease lost and cancel the owner
        (the task running the job's handler)."""
        while not self._stopped:
            remaining = self.expires_in
            if remaining <= 0:
                self.lost = True
                if self.owner is not None:
                    self.owner.cancel()
                return
            if not self.nc.is_connected:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), min(remaining, self.interval_s))
                continue
            sent = self.clock()
            if await self._beat(min(remaining, self.interval_s)):
                self.confirmed_at = sent
                self.beats += 1
            await asyncio.sleep(
                max(0.0, min(sent + self.interval_s, self._expiry()) - self.clock())
            )

    def stop(self) -> None:
        """End :meth:`keep` at its next step, even if a cancel of it was lost (nats-py's
        request waits with ``asyncio.wait_for``, which on Python 3.11 can swallow a cancel
        that lands as the reply arrives)."""
        self._stopped = True

    def _expiry(self) -> float:
        return self.confirmed_at + self.lease_s

    async def _beat(self, timeout_s: float) -> bool:
        if not self.msg.reply:
            return True  # not a JetStream message (tests): nothing to keep alive
        try:
            await self.nc.request(self.msg.reply, _PROGRESS, timeout=max(timeout_s, 0.05))
        except Exception:  # timeout, disconnect, closed: not confirmed
            return False
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return True
