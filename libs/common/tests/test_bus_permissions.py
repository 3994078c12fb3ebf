"""NATS authorization (dealerline_common.bus.permissions) on a real nats-server: each
service's user can do what the fleet needs of it, and no more; anonymous clients and
wrong passwords are refused; the chart's copy is the generated one."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.msg import Msg

from dealerline_common import subjects
from dealerline_common.bus import Bus, BusConnectError, NatsAuth
from dealerline_common.bus.permissions import (
    HELM_FILE,
    PERMISSIONS,
    authorization_conf,
    main,
    password_variable,
)
from dealerline_common.bus.streams import STREAMS
from dealerline_common.local_nats import NatsServer
from dealerline_common.settings import ServiceSettings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[3]
# Letters and digits, as the chart's randAlphaNum makes them: nats-server parses a variable's
# value as a config token, so a password starting with "-" (token_urlsafe, 1 in 64 per
# user) or all digits stops the server at start.
PASSWORDS = {user: "p" + secrets.token_hex(16) for user in PERMISSIONS}
WAIT_S = 10.0


@pytest.fixture(scope="module")
def secured() -> Iterator[NatsServer]:
    """nats-server with the chart's very configuration: the checked-in file, its password
    variables set in the server's environment (as the chart sets them from the Secret)."""
    with pytest.MonkeyPatch.context() as m:
        for user, password in PASSWORDS.items():
            m.setenv(password_variable(user), password)
        server = NatsServer(config=(REPO / HELM_FILE).read_text())
        server.start()
    yield server
    server.cleanup()


@pytest.fixture
async def fleet(secured: NatsServer) -> AsyncIterator[dict[str, Bus]]:
    buses = {
        user: Bus(
            secured.url,
            user,
            file_storage=False,
            connect_timeout_s=10,
            auth=NatsAuth(user=user, password=PASSWORDS[user]),
        )
        for user in PERMISSIONS
    }
    for bus in buses.values():
        await bus.connect()
    yield buses
    for bus in buses.values():
        await bus.close()


class Inbox:
    def __init__(self) -> None:
        self.q: asyncio.Queue[Msg] = asyncio.Queue()

    async def __call__(self, msg: Msg) -> None:
        await self.q.put(msg)

    async def next(self) -> Msg:
        return await asyncio.wait_for(self.q.get(), WAIT_S)


async def _work_one(bus: Bus, subject: str, stream: str, durable: str) -> Inbox:
    inbox = Inbox()
    await bus.work(subject, stream=stream, durable=durable, handler=inbox)
    return inbox


def test_the_charts_copy_is_the_generated_one(tmp_path: Path) -> None:
    """deploy/k8s/files/nats-authorization.conf is exactly what this module writes (run
    `python -m dealerline_common.bus.permissions --helm` after changing permissions)."""
    assert (REPO / HELM_FILE).read_text() == authorization_conf()
    assert main(["--helm", "--root", str(tmp_path)]) == 0
    assert (tmp_path / HELM_FILE).read_text() == authorization_conf()
    for user in PERMISSIONS:
        assert f"password: ${password_variable(user)}" in authorization_conf()


async def test_anonymous_and_wrong_password_are_refused(secured: NatsServer) -> None:
    with pytest.raises(BusConnectError):
        await Bus(secured.url, "anonymous", connect_timeout_s=2).connect()
    wrong = NatsAuth(user="gateway", password="not-the-password")
    with pytest.raises(BusConnectError):
        await Bus(secured.url, "gateway", connect_timeout_s=2, auth=wrong).connect()


async def test_every_service_does_its_work_under_its_own_user(fleet: dict[str, Bus]) -> None:
    """The fleet's real flows, each service as its own user: streams created at start,
    durable work, core subjects, key-value buckets and request/reply."""
    for bus in fleet.values():
        await bus.ensure_streams()
    gw, stt, tts, agent = fleet["gateway"], fleet["stt"], fleet["tts"], fleet["agent"]
    esc, dash, after = fleet["escalation"], fleet["dashboard-api"], fleet["aftercall"]
    sid = "CAperm1"
    # Audio -> text -> reply -> speech, on the durable lane.
    utt = await _work_one(stt, subjects.ALL_UTTERANCES, subjects.STREAM_UTTERANCES, "stt")
    await gw.publish_durable(subjects.utterance(sid), b"ulaw")
    assert (await utt.next()).subject == subjects.utterance(sid)
    tr = await _work_one(agent, subjects.ALL_TRANSCRIPTS, subjects.STREAM_TRANSCRIPTS, "agent")
    await stt.publish_durable(subjects.transcript(sid), b"{}")
    assert (await tr.next()).data == b"{}"
    say = await _work_one(tts, subjects.ALL_SAY, subjects.STREAM_SAY, "tts")
    await agent.publish_durable(subjects.say(sid), b"hello")
    assert (await say.next()).data == b"hello"
    # Core lane: audio to the gateway, control to agent and tts, commands to the gateway.
    audio, control, tts_control, command = Inbox(), Inbox(), Inbox(), Inbox()
    await gw.subscribe(subjects.ALL_AUDIO, audio)
    await gw.subscribe(subjects.ALL_COMMAND, command)
    await agent.subscribe(subjects.ALL_CONTROL, control, queue="agent")
    await tts.subscribe(subjects.ALL_CONTROL, tts_control)
    for bus in fleet.values():
        await bus.nc.flush()
    await tts.publish(subjects.audio(sid), b"pcm")
    await gw.publish(subjects.control(sid), b"ctl")
    await agent.publish(subjects.command(sid), b"hangup")
    assert (await audio.next()).data == b"pcm"
    assert (await control.next()).data == b"ctl" and (await tts_control.next()).data == b"ctl"
    assert (await command.next()).data == b"hangup"
    # Escalation: the agent asks, escalation works it and reports; staff act from the
    # dashboard; duty changes reach escalation.
    req = await _work_one(
        esc, subjects.ESCALATION_REQUEST, subjects.STREAM_ESCALATIONS, "escalation"
    )
    await agent.publish_durable(subjects.ESCALATION_REQUEST, b"req")
    assert (await req.next()).data == b"req"
    statuses = [Inbox(), Inbox(), Inbox()]
    for bus, inbox in zip((agent, gw, dash), statuses, strict=True):
        await bus.subscribe(subjects.ALL_ESCALATION, inbox)
        await bus.nc.flush()
    await esc.publish(subjects.escalation(sid), b"ringing")
    for inbox in statuses:
        assert (await inbox.next()).data == b"ringing"

    async def answer(msg: Msg) -> None:
        await msg.respond(b"claimed")

    await esc.subscribe(subjects.staff_action(sid), answer)
    duty = Inbox()
    await esc.subscribe(subjects.STAFF_DUTY, duty)
    await esc.nc.flush()
    reply = await _request(dash, subjects.staff_action(sid), b"claim")
    assert reply.data == b"claimed"
    await dash.publish(subjects.STAFF_DUTY, b"off")
    assert (await duty.next()).data == b"off"
    # Speculative transcription: the gateway asks, an stt worker answers.

    async def probe(msg: Msg) -> None:
        await msg.respond(b"text")

    await stt.subscribe(subjects.STT_PROBE, probe, queue=subjects.GROUP_STT_PROBE)
    await stt.nc.flush()
    assert (await _request(gw, subjects.STT_PROBE, b"ulaw")).data == b"text"
    # Stream tokens and hand-offs in the gateway's key-value buckets.
    for bucket in (subjects.KV_STREAM_TOKENS, "dl_handoffs", "dl_call_admissions"):
        kv = await gw.kv(bucket, 60)
        await kv.put("k", b"v")
        assert (await kv.get("k")).value == b"v"
        await kv.delete("k")
    # Events: escalation and the gateway write them, aftercall and the dashboard read them;
    # aftercall queues and sends notifications.
    await esc.publish_durable(subjects.events(sid), b"event")
    events = await _work_one(after, subjects.ALL_EVENTS, subjects.STREAM_EVENTS, "keeper")
    assert (await events.next()).data == b"event"
    psub = await dash.js.pull_subscribe(subjects.ALL_EVENTS, stream=subjects.STREAM_EVENTS)
    (msg,) = await psub.fetch(1, timeout=WAIT_S)
    assert msg.data == b"event"
    await dash.js.delete_consumer(subjects.STREAM_EVENTS, psub._consumer)  # type: ignore[attr-defined]
    mail = await _work_one(after, subjects.NOTIFY_EMAIL, subjects.STREAM_NOTIFY, "email")
    await after.publish_durable(subjects.NOTIFY_EMAIL, b"mail")
    assert (await mail.next()).data == b"mail"
    # The agent texts one-time codes and tells the old phone/email of a contact change.
    sms = await _work_one(after, subjects.NOTIFY_SMS, subjects.STREAM_NOTIFY, "sms")
    await agent.publish_durable(subjects.NOTIFY_SMS, b"code")
    assert (await sms.next()).data == b"code"
    await agent.publish_durable(subjects.NOTIFY_EMAIL, b"notice")
    assert (await mail.next()).data == b"notice"


async def _request(bus: Bus, subject: str, data: bytes) -> Msg:
    """A request, asked again while nobody is subscribed yet: on this loaded machine the
    server now and then answers "no responders" just after the subscriber's flush. A
    subscription the permissions refuse never answers, so this still fails."""
    for _ in range(20):
        try:
            return await bus.nc.request(subject, data, timeout=WAIT_S)
        except nats.errors.NoRespondersError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"nobody answers {subject}")


async def _refused(
    server: NatsServer, user: str, *, publish: str | None = None, subscribe: str | None = None
) -> str:
    """What the server answers ``user`` publishing or subscribing to a subject."""
    errors: asyncio.Queue[Exception] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        await errors.put(exc)

    nc = await nats.connect(
        server.url,
        user=user,
        password=PASSWORDS[user],
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        if publish is not None:
            await nc.publish(publish, b"forged")
        if subscribe is not None:
            await nc.subscribe(subscribe)
        await nc.flush()
        return str(await asyncio.wait_for(errors.get(), WAIT_S))
    finally:
        await nc.close()


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("dashboard-api", subjects.ESCALATION_REQUEST),
        ("dashboard-api", subjects.audio("CAx")),
        ("tts", subjects.ESCALATION_REQUEST),
        ("stt", subjects.command("CAx")),
        ("gateway", subjects.ESCALATION_REQUEST),
        ("aftercall", subjects.say("CAx")),
        ("dashboard-api", "$JS.API.STREAM.DELETE.DL_EVENTS"),
        # Only a stream's owner may change its settings (e.g. republish the codes' queue).
        ("gateway", f"$JS.API.STREAM.UPDATE.{subjects.STREAM_NOTIFY}"),
        ("dashboard-api", f"$JS.API.STREAM.UPDATE.{subjects.STREAM_EVENTS}"),
        ("agent", f"$JS.API.STREAM.UPDATE.{subjects.STREAM_UTTERANCES}"),
    ],
)
async def test_a_service_cannot_publish_what_is_not_its_own(
    secured: NatsServer, fleet: dict[str, Bus], user: str, subject: str
) -> None:
    await fleet["agent"].ensure_streams()
    before = (await fleet["agent"].js.stream_info(subjects.STREAM_ESCALATIONS)).state.messages
    error = await _refused(secured, user, publish=subject)
    assert f'permissions violation for publish to "{subject.lower()}"' in error.lower()
    after = (await fleet["agent"].js.stream_info(subjects.STREAM_ESCALATIONS)).state.messages
    assert after == before, "a refused escalation request must not reach the stream"


async def test_only_a_streams_owner_changes_its_settings(fleet: dict[str, Bus]) -> None:
    """Every service ensures every stream at start; a service that is not the stream's
    owner starts even when the settings differ and leaves them as they are."""
    (notify,) = [spec for spec in STREAMS if spec.name == subjects.STREAM_NOTIFY]
    assert notify.owner == "aftercall"
    await fleet["aftercall"].ensure_streams()
    changed = (dataclasses.replace(notify, max_age_s=3600),)
    await fleet["gateway"].ensure_streams(changed)  # no error, no change
    info = await fleet["gateway"].js.stream_info(notify.name)
    assert info.config.max_age == notify.max_age_s
    await fleet["aftercall"].ensure_streams(changed)
    assert (await fleet["gateway"].js.stream_info(notify.name)).config.max_age == 3600
    await fleet["aftercall"].ensure_streams()  # back as the fleet has it
    assert {spec.owner for spec in STREAMS} <= set(PERMISSIONS)


@pytest.mark.parametrize(
    ("user", "subject"),
    [
        ("tts", subjects.ALL_TRANSCRIPTS),
        ("dashboard-api", subjects.ALL_AUDIO),
        ("stt", "_INBOX.>"),
        ("escalation", "_INBOX.gateway.>"),
        ("aftercall", ">"),
    ],
)
async def test_a_service_cannot_listen_to_what_is_not_its_own(
    secured: NatsServer, user: str, subject: str
) -> None:
    error = await _refused(secured, user, subscribe=subject)
    assert "permissions violation for subscription" in error.lower()


def test_every_key_value_bucket_of_the_services_is_permitted() -> None:
    """A bucket a service adds (``BUCKET = "..."``) needs its user's permissions too."""
    import re

    found = set()
    for path in (REPO / "services").glob("*/src/**/*.py"):
        found |= set(re.findall(r'^BUCKET = "([\w-]+)"', path.read_text(), re.M))
    assert found, "no buckets found: the scan is broken"
    granted = {p for perms in PERMISSIONS.values() for p in perms.publish}
    for bucket in found | {subjects.KV_STREAM_TOKENS}:
        assert f"$KV.{bucket}.>" in granted, f"no NATS user may use the bucket {bucket}"


def test_settings_take_one_nats_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    class Svc(ServiceSettings):
        model_config = {**ServiceSettings.model_config, "env_prefix": "SVC_"}  # type: ignore[typeddict-item]

    monkeypatch.setenv("SVC_NATS_USER", "gateway")
    monkeypatch.setenv("SVC_NATS_PASSWORD", "pw")
    auth = NatsAuth.from_settings(load_settings(Svc))
    assert (auth.user, auth.password, auth.identified) == ("gateway", "pw", True)
    assert "pw" not in repr(auth) and "pw" not in repr(load_settings(Svc))
    monkeypatch.setenv("SVC_NATS_CREDS_FILE", "/x.creds")
    with pytest.raises(SettingsError, match="^Svc: one NATS identity at a time: SVC_NATS_USER"):
        load_settings(Svc)
    monkeypatch.delenv("SVC_NATS_CREDS_FILE")
    monkeypatch.delenv("SVC_NATS_PASSWORD")
    with pytest.raises(SettingsError, match="SVC_NATS_USER and SVC_NATS_PASSWORD are set together"):
        load_settings(Svc)
    monkeypatch.delenv("SVC_NATS_USER")
    monkeypatch.setenv("SVC_NATS_TLS_CA_FILE", "/nonexistent/ca.pem")
    auth = NatsAuth.from_settings(load_settings(Svc))
    assert auth.tls and not auth.identified
    with pytest.raises(SettingsError, match="is not a file"):
        auth.connect_options()
