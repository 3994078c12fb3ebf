"""A real SMTP server on localhost that keeps what it receives (aiosmtpd), for the demo
and the tests: the dealership's service desk as the aftercall service sees it.

It can be stopped and started again on the same port, to play an SMTP outage.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from dealerline_common.net import free_port


class _Keeper:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, _server: SMTP, _session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.box.received.append((list(envelope.rcpt_tos), message))
        self.box.arrived.set()
        return "250 Message accepted for delivery"


class Mailbox:
    """``start()`` / ``stop()`` an SMTP server on ``127.0.0.1:port`` (no TLS, no auth);
    ``received`` holds (recipients, message) in arrival order."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.arrived = asyncio.Event()
        self._controller: Controller | None = None

    def start(self) -> Mailbox:
        if self._controller is None:
            self._controller = Controller(_Keeper(self), hostname=self.host, port=self.port)
            self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def env(self, prefix: str = "AFTERCALL_") -> dict[str, str]:
        """Settings that point the aftercall service at this server."""
        return {
            f"{prefix}SMTP_HOST": self.host,
            f"{prefix}SMTP_PORT": str(self.port),
            f"{prefix}SMTP_STARTTLS": "false",
        }

    async def wait_for(self, count: int, timeout_s: float) -> list[tuple[list[str], EmailMessage]]:
        """Until ``count`` messages arrived (TimeoutError after ``timeout_s``)."""
        async with asyncio.timeout(timeout_s):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.received

    def __enter__(self) -> Mailbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
