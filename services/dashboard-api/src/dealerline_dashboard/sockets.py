"""WebSocket clients with a bounded send queue: the slow-client policy.

Each socket has its own queue and sender task. Whoever produces frames (the event feed
for the sales socket, the call's own reader for a per-call socket) never waits on a
socket: when a queue is full the client is marked too slow and closed with ``4008``, and
everyone else goes on. A replay (the events of a call so far) is the one producer that
waits for room, so a long call replays at the client's own pace instead of tripping the
policy; once caught up, live events are never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from dealerline_common.logs import get_logger

from .events import Frame

log = get_logger(__name__)

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4008
CLOSE_BAD_REQUEST = 4400
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
# A client behind on reading gets this long to take in what it was sent and the close.
CLOSE_TIMEOUT_S = 10.0


class WsClient:
    def __init__(
        self,
        ws: WebSocket,
        *,
        kind: str,
        staff_id: int,
        full_numbers: bool,
        queue_size: int,
        on_too_slow: Callable[[WsClient], None] | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.ws = ws
        # The token's end: no frame is queued after it (the guard closes the socket then).
        self.expires_at = expires_at
        # Set when the staff member's row may have changed: the guard re-reads it now.
        self.recheck = asyncio.Event()
        self.on_too_slow = on_too_slow
        self.kind = kind
        self.staff_id = staff_id
        self.full_numbers = full_numbers
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.too_slow = asyncio.Event()
        self._stop: tuple[int, str] | None = None
        self._stopped = asyncio.Event()

    # ------------------------------------------------------------------ producers

    def expired(self) -> bool:
        """Whether the token ran out (then the socket is stopped with 4401)."""
        if self.expires_at is not None and time.time() >= self.expires_at:
            self.stop(CLOSE_UNAUTHORIZED, "token expired")
            return True
        return False

    def offer(self, frame: Frame | str) -> bool:
        """Queue a frame without waiting; a full queue marks the client too slow."""
        if self.too_slow.is_set() or self._stopped.is_set() or self.expired():
            return False
        text = frame if isinstance(frame, str) else frame.text(self.full_numbers)
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.too_slow.set()
            if self.on_too_slow is not None:
                self.on_too_slow(self)
            return False
        return True

    async def put(self, frame: Frame | str) -> None:
        """Queue a frame, waiting for room (replay only)."""
        if self.expired():
            return
        text = frame if isinstance(frame, str) else frame.text(self.full_numbers)
        await self.queue.put(text)

    def stop(self, code: int, reason: str) -> None:
        """Close this socket soon with ``code`` (the service drains, for one)."""
        if self._stop is None:
            self._stop = (code, reason)
        self._stopped.set()

    # ------------------------------------------------------------------ the socket

    async def _send_loop(self) -> None:
        while True:
            text = await self.queue.get()
            await self.ws.send_text(text)

    async def _receive_loop(self) -> None:
        # Clients send nothing we act on; reading is how a disconnect is noticed.
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    async def serve(
        self,
        producer: Coroutine[Any, Any, None] | None = None,
        guard: Coroutine[Any, Any, None] | None = None,
    ) -> int | None:
        """Run the socket until the client leaves, is too slow, the producer ends, or
        :meth:`stop` (which ``guard``, running alongside, calls when the token or the
        account no longer allows it); returns the close code sent (None when the client
        left)."""
        tasks = [
            asyncio.create_task(self._send_loop(), name=f"ws-send:{self.kind}"),
            asyncio.create_task(self._receive_loop(), name=f"ws-recv:{self.kind}"),
            asyncio.create_task(self.too_slow.wait(), name=f"ws-slow:{self.kind}"),
            asyncio.create_task(self._stopped.wait(), name=f"ws-stop:{self.kind}"),
        ]
        if producer is not None:
            tasks.append(asyncio.create_task(producer, name=f"ws-produce:{self.kind}"))
        if guard is not None:
            tasks.append(asyncio.create_task(guard, name=f"ws-guard:{self.kind}"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        self._stopped.set()
        client_left = tasks[1] in done or any(
            isinstance(r, WebSocketDisconnect | ConnectionError) for r in results
        )
        if self.too_slow.is_set():
            code, reason = CLOSE_TOO_SLOW, "too slow"
        elif self._stop is not None:
            code, reason = self._stop
        elif client_left:
            return None
        else:
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                log.error("socket failed", kind=self.kind, error=repr(failed[0]))
            code, reason = (CLOSE_INTERNAL, "server error") if failed else (1000, "done")
        await close_socket(self.ws, code, reason)
        return code


async def close_socket(ws: WebSocket, code: int, reason: str) -> None:
    """Close without ever hanging: a client that reads nothing cannot hold us."""
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code=code, reason=reason), CLOSE_TIMEOUT_S)


class Hub:
    """The sales sockets; every live frame goes to each of them."""

    def __init__(self) -> None:
        self.clients: set[WsClient] = set()

    def broadcast(self, frame: Frame) -> int:
        """Offer ``frame`` to every client; returns how many were found too slow."""
        slow = 0
        for client in list(self.clients):
            if not client.offer(frame) and client.too_slow.is_set():
                slow += 1
                self.clients.discard(client)
        return slow
