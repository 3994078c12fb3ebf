"""The notifier end to end: jobs on the real ``DL_NOTIFY`` work queue (real NATS), the
``deliveries`` ledger in a migrated SQLite database, emails to a real SMTP server
(``aiosmtpd``) started here, texts to the Twilio simulator over HTTP, and confirmation
texts built from ``AppointmentEvent``\\ s on ``DL_EVENTS``."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from dealerline_aftercall.notify import Notifier, Outcome
from dealerline_aftercall.notify.ledger import WITHHELD
from dealerline_aftercall.notify.senders import message_id
from dealerline_aftercall.settings import AftercallSettings
from dealerline_common import subjects
from dealerline_common.bus import Bus
from dealerline_common.db.engine import create_engine_from_url, session_factory
from dealerline_common.db.models import (
    Appointment,
    Customer,
    DealershipProfile,
    Delivery,
    ServiceBay,
    ServiceType,
)
from dealerline_common.db.testing import migrated_db_url_fixture  # noqa: F401
from dealerline_common.local_nats import NatsServer
from dealerline_common.messages import AppointmentEvent, NotificationJob, TranscriptEvent
from dealerline_common.metrics import Metrics
from dealerline_common.state import ConversationState
from dealerline_common.state_store import MemoryStateStore
from dealerline_sim.twilio_rest import TwilioSim

DEALER_NUMBER = "+14155550199"
CALLER = "+14155550142"
ON_FILE = "+14155550177"
DESK = "desk@sunrise-motors.example"


# ------------------------------------------------------------------- the real parts


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every message it accepted."""

    received: list[tuple[list[str], Message]] = field(default_factory=list)
    sessions: list[tuple[bool, bytes | None]] = field(default_factory=list)  # (tls, login)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        login = session.auth_data.login if isinstance(session.auth_data, LoginPassword) else None
        self.sessions.append((session.ssl is not None, login))
        return "250 Message accepted for delivery"


class Smtp:
    """A real SMTP server on a fixed port that the test can take down and bring back;
    ``secure`` demands STARTTLS and a login (``desk`` / ``s3cret``)."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.inbox = Inbox()
        self._controller: Controller | None = None

    def start(self, *, secure: ssl.SSLContext | None = None) -> None:
        kwargs: dict[str, Any] = {}
        if secure is not None:
            kwargs = {
                "tls_context": secure,
                "require_starttls": True,
                "auth_required": True,
                "auth_require_tls": True,
                "authenticator": _authenticate,
            }
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"desk",
        b"s3cret",
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl CLI) and the
    server's TLS context; the certificate is the client's CA bundle."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


@pytest.fixture
def smtp() -> Any:
    server = Smtp()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def sessions(migrated_db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine_from_url(migrated_db_url)
    factory = session_factory(engine)
    async with factory() as s, s.begin():
        s.add(
            DealershipProfile(
                name="Sunrise Motors", timezone="America/Los_Angeles", service_desk_email=DESK
            )
        )
    yield factory
    await engine.dispose()


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioSim]:
    async with TwilioSim(owned_numbers=[DEALER_NUMBER]) as sim:
        yield sim


@dataclass
class Running:
    notifier: Notifier
    bus: Bus
    metrics: Metrics
    sessions: async_sessionmaker[AsyncSession]

    def count(self, what: str, channel: str) -> float:
        value = self.metrics.registry.get_sample_value(
            f"dealerline_aftercall_notifications_{what}_total", {"channel": channel}
        )
        return value or 0.0

    async def row(self, key: str) -> Delivery | None:
        async with self.sessions() as s:
            row: Delivery | None = await s.scalar(select(Delivery).where(Delivery.key == key))
            return row

    async def wait_row(self, key: str, status: str, timeout_s: float = 15.0) -> Delivery:
        async def check() -> Delivery:
            while True:
                row = await self.row(key)
                if row is not None and row.status == status:
                    return row
                await asyncio.sleep(0.05)

        return await asyncio.wait_for(check(), timeout_s)


@pytest.fixture
async def run_notifier(
    nats_server: NatsServer,
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
    smtp: Smtp,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[Running] = []

    async def start(*, store: MemoryStateStore | None = None, **overrides: Any) -> Running:
        values: dict[str, Any] = {
            "nats_url": nats_server.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_starttls": False,
            "smtp_timeout_s": 2.0,
            "mail_from": "Dealerline <no-reply@dealerline.example>",
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_from_number": DEALER_NUMBER,
            "twilio_api_base_url": twilio.rest_url,
            "notify_max_attempts": 5,
            "notify_backoff_base_s": 0.2,
            "notify_backoff_max_s": 0.5,
        }
        values.update(overrides)
        settings = AftercallSettings(**values)
        metrics = Metrics()
        bus = Bus(nats_server.url, "aftercall", metrics, file_storage=False)
        await bus.connect()
        await bus.ensure_streams()
        notifier = Notifier(settings, bus, sessions, metrics, store)
        await notifier.start()
        running = Running(notifier, bus, metrics, sessions)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.notifier.stop()
        await running.bus.close()


def email_job(key: str = "s1:email:desk") -> NotificationJob:
    return NotificationJob(
        key=key,
        channel="email",
        session_id="s1",
        to=DESK,
        subject="Call from Jane Doe: oil change booked",
        body="Jane Doe booked a Conventional Oil Change for Tue Dec 1 at 9:00 AM.",
    )


# ------------------------------------------------------------------- email


async def test_email_reaches_the_smtp_server_with_recipient_subject_and_body(
    run_notifier: Callable[..., Any], smtp: Smtp
) -> None:
    smtp.start()
    app: Running = await run_notifier()
    job = email_job()
    await app.notifier.enqueue(job)

    row = await app.wait_row(job.key, "sent")
    assert len(smtp.inbox.received) == 1
    rcpts, msg = smtp.inbox.received[0]
    assert rcpts == [DESK]
    assert msg["To"] == DESK
    assert msg["Subject"] == job.subject
    assert msg["From"] == "Dealerline <no-reply@dealerline.example>"
    assert msg.get_payload(decode=True).decode().strip() == job.body
    # The Message-ID comes from the key, and the ledger keeps it as the provider id.
    assert msg["Message-ID"] == message_id(job.key, "no-reply@dealerline.example")
    assert row.provider_id == msg["Message-ID"]
    assert row.attempts == 1 and row.sent_at is not None
    assert app.count("sent", "email") == 1


async def test_email_uses_starttls_and_logs_in(
    run_notifier: Callable[..., Any], smtp: Smtp, certificate: tuple[Path, ssl.SSLContext]
) -> None:
    cert, server_tls = certificate
    smtp.start(secure=server_tls)
    secure = {"smtp_starttls": True, "smtp_ca_file": str(cert), "smtp_username": "desk"}
    app: Running = await run_notifier(**secure, smtp_password="s3cret")
    job = email_job("s6:email:desk")
    await app.notifier.enqueue(job)
    await app.wait_row(job.key, "sent")
    assert smtp.inbox.sessions == [(True, b"desk")]
    assert smtp.inbox.received[0][1]["Subject"] == job.subject
    await app.notifier.stop()

    # A wrong password is refused for good (535): dead-lettered at once, not retried.
    other: Running = await run_notifier(**secure, smtp_password="wrong")
    bad = email_job("s7:email:desk")
    assert await other.notifier.deliver(bad) is Outcome.DEAD
    row = await other.row(bad.key)
    assert row is not None and "535" in (row.last_error or "")
    assert other.count("retried", "email") == 0 and other.count("failed", "email") == 1
    assert len(smtp.inbox.received) == 1


async def test_smtp_down_then_back_sends_the_email_once(
    run_notifier: Callable[..., Any], smtp: Smtp
) -> None:
    app: Running = await run_notifier()  # the SMTP server is not running yet
    job = email_job("s2:email:desk")
    await app.notifier.enqueue(job)

    async def retried() -> None:
        while app.count("retried", "email") < 2:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(retried(), 10)
    pending = await app.row(job.key)
    assert pending is not None and pending.status == "pending"
    assert "127.0.0.1" in (pending.last_error or "")
    assert smtp.inbox.received == []

    smtp.start()
    row = await app.wait_row(job.key, "sent")
    await asyncio.sleep(1.0)  # a second send, if any, would land within the backoff
    assert len(smtp.inbox.received) == 1
    assert row.attempts >= 3
    assert app.count("sent", "email") == 1
    assert app.count("failed", "email") == 0


async def test_redelivered_email_job_sends_nothing_more(
    run_notifier: Callable[..., Any], smtp: Smtp
) -> None:
    smtp.start()
    app: Running = await run_notifier()
    job = email_job("s3:email:desk")
    await app.notifier.enqueue(job)
    await app.wait_row(job.key, "sent")

    # The same job again after the stream's dedupe window (a new Nats-Msg-Id), and the
    # same job handled again in-process (a redelivery after a lost ack).
    await app.bus.publish_durable(subjects.NOTIFY_EMAIL, job, msg_id=job.key + ":again")

    async def duplicate_seen() -> None:
        while app.count("duplicates", "email") < 1:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(duplicate_seen(), 10)
    assert await app.notifier.deliver(job, attempt=2) is Outcome.DUPLICATE
    assert len(smtp.inbox.received) == 1
    assert app.count("sent", "email") == 1
    assert app.count("duplicates", "email") == 2


async def test_email_dead_lettered_after_the_last_retry(
    run_notifier: Callable[..., Any], smtp: Smtp
) -> None:
    app: Running = await run_notifier(notify_max_attempts=3, notify_backoff_base_s=0.05)
    job = email_job("s4:email:desk")
    await app.notifier.enqueue(job)

    row = await app.wait_row(job.key, "dead")
    assert row.attempts == 3
    assert "gave up after 3 attempts" in (row.last_error or "")
    assert app.count("retried", "email") == 2
    assert app.count("failed", "email") == 1
    assert app.count("sent", "email") == 0
    # The server comes back: the dead job is not sent behind the operator's back.
    smtp.start()
    assert await app.notifier.deliver(job, attempt=4) is Outcome.DEAD
    assert smtp.inbox.received == []


async def test_unconfigured_channels_dead_letter_at_once(
    run_notifier: Callable[..., Any], twilio: TwilioSim
) -> None:
    app: Running = await run_notifier(smtp_host=None, twilio_from_number=None)
    await app.notifier.enqueue(email_job("s5:email:desk"))
    text = NotificationJob(key="s5:sms:1:booked", channel="sms", to=CALLER, body="hi")
    await app.notifier.enqueue(text)

    email_row = await app.wait_row("s5:email:desk", "dead")
    sms_row = await app.wait_row(text.key, "dead")
    assert "not configured" in (email_row.last_error or "")
    assert "AFTERCALL_SMTP_HOST" in (email_row.last_error or "")
    assert "AFTERCALL_TWILIO_FROM_NUMBER" in (sms_row.last_error or "")
    assert email_row.attempts == 0 and sms_row.attempts == 0  # never tried, never looped
    assert app.count("failed", "email") == 1 and app.count("failed", "sms") == 1
    assert app.count("retried", "email") == 0 and twilio.messages == []


# ------------------------------------------------------------------- confirmation texts


async def _appointment(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as s, s.begin():
        customer = Customer(name="Jane Doe", phone=ON_FILE)
        service = ServiceType(
            name="Conventional Oil Change",
            duration_minutes=45,
            price_min_cents=4999,
            price_max_cents=6999,
        )
        bay = ServiceBay(name="Bay 1")
        s.add_all([customer, service, bay])
        await s.flush()
        appt = Appointment(
            customer_id=customer.id,
            service_type_id=service.id,
            bay_id=bay.id,
            start_at=datetime(2026, 12, 1, 17, 0, tzinfo=UTC),  # 9:00 AM in Los Angeles
            end_at=datetime(2026, 12, 1, 17, 45, tzinfo=UTC),
        )
        s.add(appt)
        await s.flush()
        return appt.id


def event(session_id: str, appointment_id: int, action: str, start: str) -> AppointmentEvent:
    return AppointmentEvent(
        session_id=session_id,
        action=action,  # type: ignore[arg-type]
        appointment_id=appointment_id,
        service="Conventional Oil Change",
        start=start,
        vehicle="2019 Honda Civic",
        customer_name="Jane Doe",
    )


async def test_confirmation_texts_for_booking_rescheduling_and_cancelling(
    run_notifier: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
) -> None:
    store = MemoryStateStore()
    assert await store.set_state_if_version(
        ConversationState(session_id="call1", caller_phone=CALLER), 0
    )
    appt = await _appointment(sessions)
    app: Running = await run_notifier(store=store)

    # Other events on the same stream are skipped.
    await app.bus.publish_durable(
        subjects.events("call1"), TranscriptEvent(session_id="call1", role="user", text="hi")
    )
    for action, start in (
        ("booked", "2026-12-01T09:00:00-08:00"),
        ("rescheduled", "2026-12-03T19:30:00+00:00"),  # 11:30 AM in Los Angeles
        ("cancelled", "2026-12-03T11:30:00-08:00"),
    ):
        await app.bus.publish_durable(subjects.events("call1"), event("call1", appt, action, start))

    texts = await twilio.wait_for_messages(3, to=CALLER)
    assert [m.body for m in texts] == [
        "Sunrise Motors: your Conventional Oil Change is booked for Tue Dec 1 at 9:00 AM. "
        "Reply or call us to change it.",
        "Sunrise Motors: your Conventional Oil Change has been moved to Thu Dec 3 at 11:30 AM. "
        "Reply or call us to change it.",
        "Sunrise Motors: your Conventional Oil Change on Thu Dec 3 at 11:30 AM is cancelled. "
        "Call us any time to book again.",
    ]
    assert {m.from_ for m in texts} == {DEALER_NUMBER}
    for action, sms in zip(("booked", "rescheduled", "cancelled"), texts, strict=True):
        row = await app.wait_row(f"call1:sms:{appt}:{action}", "sent")
        assert row.provider_id == sms.sid
    assert app.count("sent", "sms") == 3


async def test_texts_use_the_profile_as_it_is_now(
    run_notifier: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
) -> None:
    """A manager renames the dealership and moves its timezone: the next text says the new
    name and the new local time, with no restart."""
    store = MemoryStateStore()
    assert await store.set_state_if_version(
        ConversationState(session_id="call1", caller_phone=CALLER), 0
    )
    appt = await _appointment(sessions)
    app: Running = await run_notifier(store=store)
    start = "2026-12-01T17:00:00+00:00"
    await app.bus.publish_durable(subjects.events("call1"), event("call1", appt, "booked", start))
    await twilio.wait_for_messages(1, to=CALLER)
    async with sessions() as s, s.begin():
        profile = (await s.execute(select(DealershipProfile))).scalar_one()
        profile.name, profile.timezone = "Harbor Point Motors", "America/New_York"
    await app.bus.publish_durable(
        subjects.events("call1"), event("call1", appt, "cancelled", start)
    )
    texts = await twilio.wait_for_messages(2, to=CALLER)
    assert texts[0].body.startswith("Sunrise Motors: your Conventional Oil Change is booked")
    assert "Tue Dec 1 at 9:00 AM" in texts[0].body
    assert texts[1].body == (
        "Harbor Point Motors: your Conventional Oil Change on Tue Dec 1 at 12:00 PM is "
        "cancelled. Call us any time to book again."
    )


async def test_redelivered_appointment_event_sends_no_second_text(
    run_notifier: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
) -> None:
    appt = await _appointment(sessions)
    app: Running = await run_notifier(store=None)  # no state: the number on file is used
    booked = event("call2", appt, "booked", "2026-12-01T09:00:00-08:00")
    await app.bus.publish_durable(subjects.events("call2"), booked)
    [text] = await twilio.wait_for_messages(1, to=ON_FILE)
    key = f"call2:sms:{appt}:booked"
    await app.wait_row(key, "sent")

    # The event again (the agent re-published it) and the job again, past the dedupe window.
    await app.bus.publish_durable(subjects.events("call2"), booked)
    job = NotificationJob(key=key, channel="sms", session_id="call2", to=ON_FILE, body=text.body)
    await app.bus.publish_durable(subjects.NOTIFY_SMS, job, msg_id=key + ":again")

    async def duplicate_seen() -> None:
        while app.count("duplicates", "sms") < 1:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(duplicate_seen(), 10)
    await asyncio.sleep(0.5)
    assert await app.notifier.deliver(job, attempt=3) is Outcome.DUPLICATE
    assert len(twilio.messages) == 1
    assert app.count("sent", "sms") == 1


async def test_twilio_outage_is_retried_and_sends_one_text(
    run_notifier: Callable[..., Any], twilio: TwilioSim
) -> None:
    app: Running = await run_notifier()
    twilio.fail_messages()  # 503 until healed
    job = NotificationJob(key="call3:sms:7:booked", channel="sms", to=CALLER, body="Booked!")
    await app.notifier.enqueue(job)

    async def retried() -> None:
        while app.count("retried", "sms") < 2:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(retried(), 10)
    row = await app.row(job.key)
    assert row is not None and row.status == "pending" and "503" in (row.last_error or "")
    assert twilio.messages == []

    twilio.heal_messages()
    row = await app.wait_row(job.key, "sent")
    await asyncio.sleep(1.0)
    assert [m.body for m in twilio.messages] == ["Booked!"]
    assert row.provider_id == twilio.messages[0].sid
    assert app.count("sent", "sms") == 1


async def test_a_one_time_code_is_texted_but_never_kept(
    run_notifier: Callable[..., Any], twilio: TwilioSim
) -> None:
    app: Running = await run_notifier()
    body = "Sunrise Motors: your verification code is 482913."
    job = NotificationJob(key="verify:call5:n1", channel="sms", to=CALLER, body=body, secret=True)
    await app.notifier.enqueue(job)
    row = await app.wait_row(job.key, "sent")
    assert [m.body for m in twilio.messages] == [body]
    assert row.body == WITHHELD and "482913" not in (row.body or "")


async def test_text_accepted_before_a_crash_is_recorded_not_resent(
    run_notifier: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
) -> None:
    """The window between Twilio taking a text and the ledger saying so: an attempt that
    got no further leaves the row pending with one attempt; the retry finds the text in
    Twilio's list and records it instead of sending it again."""
    app: Running = await run_notifier()
    job = NotificationJob(key="call4:sms:8:booked", channel="sms", to=CALLER, body="Booked 8")
    await app.notifier.ledger.claim(job)
    await app.notifier.ledger.attempt(job.key)
    client = twilio.twilio_client(async_http=True)
    first = await client.messages.create_async(to=CALLER, from_=DEALER_NUMBER, body="Booked 8")

    assert await app.notifier.deliver(job, attempt=2) is Outcome.DUPLICATE
    row = await app.row(job.key)
    assert row is not None and (row.status, row.provider_id) == ("sent", first.sid)
    assert len(twilio.messages) == 1


async def test_history_and_stale_events_get_no_text_and_missing_facts_come_from_the_db(
    run_notifier: Callable[..., Any],
    sessions: async_sessionmaker[AsyncSession],
    twilio: TwilioSim,
    client: Bus,
    capsys: pytest.CaptureFixture[str],
) -> None:
    appt = await _appointment(sessions)
    # Already in DL_EVENTS when the service first starts: history, not news.
    await client.publish_durable(
        subjects.events("call5"), event("call5", appt, "booked", "2026-12-01T09:00:00-08:00")
    )
    store = MemoryStateStore()
    assert await store.set_state_if_version(
        ConversationState(session_id="call5", caller_phone=CALLER), 0
    )
    app: Running = await run_notifier(store=store, text_max_age_s=3600)
    stale = event("call5", appt, "rescheduled", "2026-12-02T09:00:00-08:00")
    stale.at -= 2 * 86400  # the service was down for two days
    await client.publish_durable(subjects.events("call5"), stale)
    # No service or start in the event: both come from the appointment row.
    bare = AppointmentEvent(session_id="call5", action="cancelled", appointment_id=appt)
    await client.publish_durable(subjects.events("call5"), bare)

    [text] = await twilio.wait_for_messages(1, to=CALLER)
    assert text.body == (
        "Sunrise Motors: your Conventional Oil Change on Tue Dec 1 at 9:00 AM is cancelled. "
        "Call us any time to book again."
    )
    await asyncio.sleep(0.5)
    assert len(twilio.messages) == 1
    assert await app.row(f"call5:sms:{appt}:booked") is None
    assert await app.row(f"call5:sms:{appt}:rescheduled") is None
    out = capsys.readouterr()
    assert CALLER not in out.out + out.err  # numbers are logged masked only
    assert "+1*******142" in out.out + out.err
