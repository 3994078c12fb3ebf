"""The two ways out: email over SMTP (``aiosmtplib``) and texts through Twilio's Messages
API (the official ``twilio`` client, async HTTP).

Every failure is sorted into one of two errors, because the notifier treats them apart:

- :class:`TransientSendError` - the server could not be reached, timed out, or answered
  "try later" (SMTP 4xx, HTTP 429/5xx): the job is retried with backoff;
- :class:`PermanentSendError` - the provider refused the message for good (SMTP 5xx such
  as an unknown recipient, Twilio 4xx such as an invalid number) or the channel is not
  configured: retrying cannot help, the job is dead-lettered at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, parseaddr
from typing import Protocol, TypeVar

import aiohttp
import aiosmtplib
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dealerline_common.logs import get_logger
from dealerline_common.messages import NotificationJob

from ..settings import AftercallSettings

log = get_logger(__name__)

T = TypeVar("T")

_CLOCK_SLACK_S = 60.0


class SendError(RuntimeError):
    """Base of what a sender raises."""


class TransientSendError(SendError):
    """Nothing was sent, or nothing is known; the same send may succeed later."""


class PermanentSendError(SendError):
    """The provider will never accept this message as it is."""


class Sender(Protocol):
    channel: str

    @property
    def missing(self) -> list[str]:
        """Settings that must be set before this channel can send (empty: configured)."""
        ...

    async def send(self, job: NotificationJob) -> str:
        """Send ``job``; returns the provider's id of the message."""
        ...

    async def close(self) -> None: ...


def message_id(key: str, mail_from: str) -> str:
    """The ``Message-ID`` of the email for idempotency key ``key``: the same on every
    attempt, so a copy sent twice (the one window the ledger cannot close) is recognisable
    as one message by the desk's mail system."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "dealerline.invalid"
    return f"<{digest}.notify@{domain}>"


class EmailSender:
    channel = "email"

    def __init__(self, settings: AftercallSettings) -> None:
        self.settings = settings

    @property
    def missing(self) -> list[str]:
        return [] if self.settings.smtp_host else ["AFTERCALL_SMTP_HOST"]

    def build(self, job: NotificationJob, *, now: datetime | None = None) -> EmailMessage:
        s = self.settings
        recipients = [addr for _, addr in getaddresses([job.to]) if "@" in addr]
        if not recipients:
            raise PermanentSendError(f"not an email address: {job.to!r}")
        msg = EmailMessage()
        msg["From"] = s.mail_from
        msg["To"] = ", ".join(str(Address(addr_spec=a)) for a in recipients)
        msg["Subject"] = job.subject or "dealerline"
        msg["Message-ID"] = message_id(job.key, s.mail_from)
        msg["Date"] = format_datetime(now or datetime.now().astimezone())
        msg["X-Dealerline-Key"] = job.key
        msg.set_content(job.body)
        return msg

    async def send(self, job: NotificationJob) -> str:
        s = self.settings
        if not s.smtp_host:
            raise PermanentSendError("email not configured: set AFTERCALL_SMTP_HOST")
        msg = self.build(job)
        try:
            await aiosmtplib.send(
                msg,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                start_tls=s.smtp_starttls,
                cert_bundle=s.smtp_ca_file,
                timeout=s.smtp_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if codes and all(400 <= c < 500 for c in codes):
                raise TransientSendError(f"SMTP recipients deferred: {codes}") from exc
            raise PermanentSendError(f"SMTP recipients refused: {codes}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermanentSendError(f"SMTP login refused: {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            error = f"SMTP {exc.code} {exc.message}"
            if 500 <= exc.code < 600:
                raise PermanentSendError(error) from exc
            raise TransientSendError(error) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Connect errors, disconnects, timeouts, and STARTTLS that is not offered.
            raise TransientSendError(f"SMTP {s.smtp_host}:{s.smtp_port}: {exc!r}") from exc
        return str(msg["Message-ID"])

    async def close(self) -> None:
        pass


class SmsSender:
    """Texts through ``client.messages.create_async``; ``twilio_api_base_url`` points the
    client at another API root (the phone simulator in tests): twilio-python has no
    base-URL option, so ``client.api.base_url`` is set (docs/twilio.md)."""

    channel = "sms"

    def __init__(self, settings: AftercallSettings) -> None:
        self.settings = settings
        self._client: Client | None = None
        self._http: AsyncTwilioHttpClient | None = None

    @property
    def missing(self) -> list[str]:
        s = self.settings
        return [
            name
            for name, value in (
                ("AFTERCALL_TWILIO_ACCOUNT_SID", s.twilio_account_sid),
                ("AFTERCALL_TWILIO_AUTH_TOKEN", s.twilio_auth_token),
                ("AFTERCALL_TWILIO_FROM_NUMBER", s.twilio_from_number),
            )
            if not value
        ]

    @property
    def client(self) -> Client:
        """Built on first use (aiohttp's session must be made inside the event loop)."""
        if self._client is None:
            s = self.settings
            assert s.twilio_account_sid is not None  # both checked by `missing`
            assert s.twilio_auth_token is not None
            self._http = AsyncTwilioHttpClient(timeout=s.twilio_timeout_s)
            self._client = Client(
                s.twilio_account_sid,
                s.twilio_auth_token.get_secret_value(),
                http_client=self._http,
            )
            if s.twilio_api_base_url:
                self._client.api.base_url = s.twilio_api_base_url.rstrip("/")
        return self._client

    async def send(self, job: NotificationJob) -> str:
        missing = self.missing
        if missing:
            raise PermanentSendError("sms not configured: set " + ", ".join(missing))

        async def create() -> str:
            message = await self.client.messages.create_async(
                to=job.to, from_=self.settings.twilio_from_number, body=job.body
            )
            return str(message.sid)

        return await self._request("send text", create)

    async def find_sent(self, job: NotificationJob, since: datetime) -> str | None:
        """The SID of a message Twilio already took for this job (same recipient and
        body, created since the job was first claimed), or None.

        Asked before a retry of a job whose earlier attempt may have reached Twilio (the
        process died, or the answer was lost, after Twilio accepted it): the one window
        where the ledger alone would send the text twice."""

        # Twilio's dates have whole seconds, and the claim's clock is the database's.
        earliest = since - timedelta(seconds=_CLOCK_SLACK_S)

        async def look() -> str | None:
            messages = await self.client.messages.list_async(
                to=job.to, from_=self.settings.twilio_from_number, limit=50
            )
            for message in messages:
                created = message.date_created
                if message.body == job.body and (created is None or created >= earliest):
                    return str(message.sid)
            return None

        return await self._request("list texts", look)

    async def _request(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One REST request with a deadline, its errors sorted (see the module)."""
        try:
            return await asyncio.wait_for(fn(), self.settings.twilio_timeout_s)
        except TwilioRestException as exc:
            error = f"{what}: HTTP {exc.status} code={exc.code} {exc.msg}"
            if exc.status == 429 or exc.status >= 500:
                raise TransientSendError(error) from exc
            raise PermanentSendError(error) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientSendError(f"{what}: {exc!r}") from exc

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None
        self._client = None
