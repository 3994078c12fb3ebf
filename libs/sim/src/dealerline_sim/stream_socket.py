"""One Media Stream's connection, from Twilio's end: the WebSocket and the tasks around it.

:class:`StreamSocket` does the signed handshake and the sends: every message after
``connected`` carries the next ``sequenceNumber`` (from "1", shared by every message type on
the socket), and each message sent is appended to the call's ``sent`` log.
:class:`StreamTasks` starts and stops the three tasks that run while the stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from dealerline_sim.media_stream import TWILIO_WS_USER_AGENT

__all__ = ["StreamSocket", "StreamTasks"]


class StreamSocket:
    """A connected stream socket; ``sent`` is the log every message sent is added to."""

    def __init__(self, ws: ClientConnection, sent: list[dict[str, Any]]) -> None:
        self.ws = ws
        self._sent = sent
        self._lock = asyncio.Lock()
        self._seq = itertools.count(1)

    @classmethod
    async def connect(
        cls, local_url: str, signed: Mapping[str, str], sent: list[dict[str, Any]]
    ) -> StreamSocket:
        """Open the WebSocket as Twilio does (its user agent, the signature headers
        ``signed`` (``X-Twilio-Signature`` …) when given, no compression); raises whatever
        the connection attempt raised."""
        ws = await connect(
            local_url,
            additional_headers=dict(signed),
            user_agent_header=TWILIO_WS_USER_AGENT,
            compression=None,
            proxy=None,
            open_timeout=10,
        )
        return cls(ws, sent)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    @property
    def close_reason(self) -> str | None:
        return self.ws.close_reason

    async def send_raw(self, msg: dict[str, Any]) -> bool:
        """Send ``msg`` as it is (no sequence number); False once the socket is closed."""
        async with self._lock:
            return await self._send_locked(msg)

    async def send(self, build: Callable[[str], dict[str, Any]]) -> bool:
        """Send ``build(next sequenceNumber)``; False once the socket is closed."""
        async with self._lock:
            return await self._send_locked(build(str(next(self._seq))))

    async def _send_locked(self, msg: dict[str, Any]) -> bool:
        try:
            await self.ws.send(json.dumps(msg))
        except ConnectionClosed:
            return False
        self._sent.append(msg)
        return True

    async def close(self) -> None:
        await self.ws.close()


class StreamTasks:
    """The tasks that run while a stream is open: the receiver (server → caller), the
    playout clock and the caller's line (caller → server)."""

    def __init__(self) -> None:
        self.receiver: asyncio.Task[None] | None = None
        self.playout: asyncio.Task[None] | None = None
        self.sender: asyncio.Task[None] | None = None

    def start(
        self,
        receiver: Coroutine[Any, Any, None],
        playout: Coroutine[Any, Any, None],
        sender: Coroutine[Any, Any, None],
    ) -> None:
        self.receiver = asyncio.create_task(receiver, name="phone-sim-receiver")
        self.playout = asyncio.create_task(playout, name="phone-sim-playout")
        self.sender = asyncio.create_task(sender, name="phone-sim-sender")

    async def stop_workers(self) -> None:
        """Cancel the sender and the playout and wait for them (not from inside either)."""
        tasks = [t for t in (self.sender, self.playout) if t is not None]
        current = asyncio.current_task()
        for t in tasks:
            if t is not current:
                t.cancel()
        for t in tasks:
            if t is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def join_receiver(self) -> None:
        """Wait up to 5 s for the receiver to see the socket close, else cancel it."""
        task = self.receiver
        if task is None or task is asyncio.current_task():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:
            pass
