"""The simulator's REST API through the real twilio client: create / fetch / update / list,
Twilio's response shapes (validated against the vendored twilio-oai schemas), status
codes and error bodies, auth, and the signed status callbacks of a call."""

from __future__ import annotations

import asyncio
import base64
import email.utils
from typing import Any

import httpx
import jsonschema
import pytest
from sim_twilio_kit import DEALER, ESC_PUBLIC, STAFF, TOKEN, FakeApp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from dealerline_sim.humans import HumanScript
from dealerline_sim.twilio_rest import TwilioSim
from dealerline_sim.twilio_schema import CALL, CONFERENCE, PARTICIPANT, resource_schema

EVENTS = ["initiated", "ringing", "answered", "completed"]


def validate(name: str, body: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(resource_schema(name)).validate(body)


def create_params(esc: FakeApp, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "to": STAFF,
        "from_": DEALER,
        "url": esc.url("/api/voice/human-answer?session=s1&task=t1"),
        "status_callback": esc.url("/api/voice/human-status?session=s1&task=t1"),
        "status_callback_event": EVENTS,
        "timeout": 45,
    }
    params.update(extra)
    return params


async def rest(
    tw: TwilioSim, method: str, path: str, *, auth: tuple[str, str] | None = None, **kw: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=tw.rest_url, trust_env=False) as http:
        return await http.request(
            method,
            f"/2010-04-01/Accounts/{tw.account_sid}{path}",
            auth=auth or (tw.account_sid, tw.auth_token),
            **kw,
        )


async def test_sync_client_create_fetch_update_round_trip(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on("/api/voice/human-answer", lambda r: "<Response><Pause length='600'/></Response>")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1))
    client = tw.twilio_client()

    call = await asyncio.to_thread(client.calls.create, **create_params(esc))
    assert call.status == "queued"
    assert call.sid.startswith("CA")
    assert len(call.sid) == 34
    assert call.to == STAFF
    assert call._from == DEALER
    assert call.direction == "outbound-api"
    assert call.account_sid == tw.account_sid
    assert call.to_formatted == "(415) 555-0123"

    await tw.wait_for_status(call.sid, "in-progress")
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.status == "in-progress"
    assert fetched.start_time is not None

    ended = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    assert ended.status == "completed"
    assert ended.end_time is not None
    assert tw.call(call.sid).hangup_by == "api"
    again = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert again.status == "completed"

    await tw.drain_callbacks()
    statuses = [p["CallStatus"] for p in tw.callbacks(call.sid)]
    assert statuses == ["initiated", "ringing", "in-progress", "completed"]
    # the answer webhook: signed POST with Twilio's parameters
    (answer,) = esc.to("/api/voice/human-answer")
    assert answer.valid
    assert answer.query == "session=s1&task=t1"
    assert answer.params["CallSid"] == call.sid
    assert answer.params["CallStatus"] == "in-progress"
    assert answer.params["Direction"] == "outbound-api"
    assert answer.params["From"] == DEALER
    assert answer.params["To"] == STAFF
    assert answer.params["AccountSid"] == tw.account_sid
    assert answer.params["ApiVersion"] == "2010-04-01"
    assert answer.headers["user-agent"] == "TwilioProxy/1.1"
    assert answer.headers["i-twilio-idempotency-token"]


async def test_answers_validate_against_twilio_oai(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.busy(ring_s=1))
    created = await rest(
        tw,
        "POST",
        "/Calls.json",
        data={
            "To": STAFF,
            "From": DEALER,
            "Url": esc.url("/api/voice/human-answer"),
            "StatusCallback": esc.url("/api/voice/human-status"),
            "StatusCallbackEvent": ["initiated", "completed"],
        },
    )
    assert created.status_code == 201
    assert created.headers["content-type"].startswith("application/json")
    body = created.json()
    validate(CALL, body)
    assert body["status"] == "queued"
    assert body["start_time"] is None
    assert body["duration"] is None
    assert body["uri"] == f"/2010-04-01/Accounts/{tw.account_sid}/Calls/{body['sid']}.json"
    assert email.utils.parsedate_to_datetime(body["date_created"]) is not None

    await tw.wait_for_status(body["sid"], "busy")
    fetched = await rest(tw, "GET", f"/Calls/{body['sid']}.json")
    assert fetched.status_code == 200
    validate(CALL, fetched.json())
    assert fetched.json()["status"] == "busy"

    listed = await rest(tw, "GET", "/Calls.json", params={"To": STAFF})
    jsonschema.Draft202012Validator(resource_schema("ListCallResponse", strict=False)).validate(
        listed.json()
    )
    assert [c["sid"] for c in listed.json()["calls"]] == [body["sid"]]
    for c in listed.json()["calls"]:
        validate(CALL, c)
    nobody = await rest(tw, "GET", "/Calls.json", params={"To": "+14155550000"})
    assert nobody.json()["calls"] == []


async def test_async_client_and_rewriting_http_client(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on("/api/voice/human-answer", lambda r: "<Response><Say>Hello there</Say></Response>")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1))
    aclient = tw.twilio_client(async_http=True)
    assert isinstance(aclient.http_client, AsyncTwilioHttpClient)
    call = await aclient.calls.create_async(**create_params(esc))
    assert call.status == "queued"
    await tw.wait_for_status(call.sid, "completed")
    fetched = await aclient.calls(call.sid).fetch_async()
    assert fetched.status == "completed"
    assert fetched.duration is not None
    assert tw.said_to(call.sid) == ["Hello there"]

    # a Client built with the rewriting http_client reaches the simulator unchanged
    plain = Client(tw.account_sid, tw.auth_token, http_client=tw.http_client())
    again = await asyncio.to_thread(plain.calls(call.sid).fetch)
    assert again.sid == call.sid
    async_plain = Client(tw.account_sid, tw.auth_token, http_client=tw.async_http_client())
    again2 = await async_plain.calls(call.sid).fetch_async()
    assert again2.status == "completed"


async def test_basic_auth_and_api_keys(tw: TwilioSim, esc: FakeApp) -> None:
    wrong = Client(tw.account_sid, "not-the-token")
    wrong.api.base_url = tw.rest_url
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(wrong.calls.create, **create_params(esc))
    assert info.value.status == 401
    assert info.value.code == 20003

    raw = await rest(tw, "GET", "/Calls.json", auth=(tw.account_sid, "nope"))
    assert raw.status_code == 401
    assert raw.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert raw.headers["www-authenticate"].startswith("Basic")
    async with httpx.AsyncClient(base_url=tw.rest_url, trust_env=False) as http:
        anonymous = await http.get(f"/2010-04-01/Accounts/{tw.account_sid}/Calls.json")
        bad_header = await http.get(
            f"/2010-04-01/Accounts/{tw.account_sid}/Calls.json",
            headers={"Authorization": "Basic !!!"},
        )
    assert anonymous.status_code == 401
    assert bad_header.status_code == 401

    key, secret = tw.add_api_key()
    keyed = Client(key, secret, account_sid=tw.account_sid)
    keyed.api.base_url = tw.rest_url
    page = await asyncio.to_thread(keyed.calls.list)
    assert page == []
    assert not tw.calls


async def test_not_found_and_foreign_account(tw: TwilioSim) -> None:
    client = tw.twilio_client()
    missing = "CA" + "0" * 32
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls(missing).fetch)
    assert info.value.status == 404
    assert info.value.code == 20404

    raw = await rest(tw, "GET", f"/Calls/{missing}.json")
    assert raw.status_code == 404
    body = raw.json()
    assert body["code"] == 20404
    assert body["status"] == 404
    assert body["more_info"] == "https://www.twilio.com/docs/errors/20404"
    assert missing in body["message"]

    other = "AC" + "1" * 32
    async with httpx.AsyncClient(base_url=tw.rest_url, trust_env=False) as http:
        foreign = await http.get(
            f"/2010-04-01/Accounts/{other}/Calls.json", auth=(tw.account_sid, tw.auth_token)
        )
        unknown_path = await http.get("/2010-04-01/Nope.json", auth=(tw.account_sid, tw.auth_token))
        not_allowed = await http.put(
            f"/2010-04-01/Accounts/{tw.account_sid}/Calls.json",
            auth=(tw.account_sid, tw.auth_token),
        )
    assert foreign.status_code == 404
    assert foreign.json()["code"] == 20404
    assert unknown_path.status_code == 404
    assert unknown_path.json()["code"] == 20404
    assert not_allowed.status_code == 405
    assert not_allowed.json()["code"] == 20004


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"From": DEALER, "Url": "https://esc.example.com/a"}, 21201),
        ({"To": STAFF, "Url": "https://esc.example.com/a"}, 21213),
        ({"To": "4155550123", "From": DEALER, "Url": "https://esc.example.com/a"}, 21211),
        ({"To": STAFF, "From": "dealer", "Url": "https://esc.example.com/a"}, 21212),
        ({"To": STAFF, "From": DEALER}, 21205),
        ({"To": STAFF, "From": DEALER, "Url": "not a url"}, 21205),
        ({"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "Timeout": "0"}, 20001),
        ({"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "Timeout": "x"}, 20001),
        (
            {"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "StatusCallbackEvent": "x"},
            20001,
        ),
        ({"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "Method": "PUT"}, 20001),
        ({"To": STAFF, "From": DEALER, "Twiml": "<Response><Dance/></Response>"}, 12100),
        (
            {"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "StatusCallback": "nope"},
            21609,
        ),
        (
            {"To": STAFF, "From": DEALER, "Url": "https://e.com/a", "MachineDetection": "Yes"},
            20001,
        ),
    ],
)
async def test_create_validation_errors(tw: TwilioSim, data: dict[str, str], code: int) -> None:
    resp = await rest(tw, "POST", "/Calls.json", data=data)
    assert resp.status_code == 400
    body = resp.json()
    assert body["code"] == code
    assert body["status"] == 400
    assert body["more_info"].endswith(str(code))
    assert not tw.calls
    (event,) = tw.events("rest")
    assert event.data["http_status"] == 400
    assert event.data["code"] == code


async def test_owned_numbers_restrict_from(esc: FakeApp) -> None:
    async with TwilioSim(TOKEN, time_scale=0.02, owned_numbers=[DEALER]) as tw:
        tw.add_human(STAFF, HumanScript.busy())
        bad = await rest(
            tw,
            "POST",
            "/Calls.json",
            data={"To": STAFF, "From": "+14155559999", "Url": esc.url("/a")},
        )
        assert bad.status_code == 400
        assert bad.json()["code"] == 21210
        good = await rest(
            tw, "POST", "/Calls.json", data={"To": STAFF, "From": DEALER, "Url": esc.url("/a")}
        )
        assert good.status_code == 201


async def test_redirecting_a_call_not_in_progress_is_21220(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.never_answers())
    client = tw.twilio_client()
    call = await asyncio.to_thread(client.calls.create, **create_params(esc))
    await tw.wait_for_status(call.sid, "ringing")
    with pytest.raises(TwilioRestException) as info:
        await asyncio.to_thread(client.calls(call.sid).update, url=esc.url("/api/voice/other"))
    assert info.value.status == 400
    assert info.value.code == 21220
    assert "not in-progress" in info.value.msg
    with pytest.raises(TwilioRestException) as bad_status:
        await asyncio.to_thread(client.calls(call.sid).update, status="busy")
    assert bad_status.value.code == 20001

    # canceled ends a ringing call; the completed event carries CallStatus=canceled
    canceled = await asyncio.to_thread(client.calls(call.sid).update, status="canceled")
    assert canceled.status == "canceled"
    await tw.drain_callbacks()
    assert [p["CallStatus"] for p in tw.callbacks(call.sid)] == [
        "initiated",
        "ringing",
        "canceled",
    ]
    final = tw.callbacks(call.sid)[-1]
    assert final["CallDuration"] == "0"
    assert esc.to("/api/voice/human-answer") == []

    # a finished call cannot be redirected either; it can be deleted
    with pytest.raises(TwilioRestException) as late:
        await asyncio.to_thread(client.calls(call.sid).update, url=esc.url("/x"))
    assert late.value.code == 21220
    assert await asyncio.to_thread(client.calls(call.sid).delete) is True
    assert call.sid not in tw.calls


async def test_canceled_is_ignored_once_answered(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on("/api/voice/human-answer", lambda r: "<Response><Pause length='600'/></Response>")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1))
    client = tw.twilio_client()
    call = await asyncio.to_thread(client.calls.create, **create_params(esc))
    await tw.wait_for_status(call.sid, "in-progress")
    still = await asyncio.to_thread(client.calls(call.sid).update, status="canceled")
    assert still.status == "in-progress"
    with pytest.raises(TwilioRestException) as busy:
        await asyncio.to_thread(client.calls(call.sid).delete)
    assert busy.value.status == 400
    done = await asyncio.to_thread(client.calls(call.sid).update, status="completed")
    assert done.status == "completed"


async def test_status_callbacks_are_signed_and_sequenced(tw: TwilioSim, esc: FakeApp) -> None:
    esc.on("/api/voice/human-answer", lambda r: "<Response><Pause length='30'/></Response>")
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=3))
    client = tw.twilio_client()
    call = await asyncio.to_thread(client.calls.create, **create_params(esc))
    await tw.wait_for_status(call.sid, "completed", timeout_s=15)
    await tw.drain_callbacks()
    got = esc.to("/api/voice/human-status")
    assert [r.params["CallStatus"] for r in got] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert [r.params["SequenceNumber"] for r in got] == ["0", "1", "2", "3"]
    validator = RequestValidator(TOKEN)
    for r in got:
        assert r.valid
        url = f"{ESC_PUBLIC}/api/voice/human-status?{r.query}"
        assert validator.validate(url, r.params, r.headers["x-twilio-signature"])
        assert r.params["CallbackSource"] == "call-progress-events"
        assert r.params["CallSid"] == call.sid
        assert r.params["AccountSid"] == tw.account_sid
        assert email.utils.parsedate_to_datetime(r.params["Timestamp"]).utcoffset() is not None
        assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    stamps = [email.utils.parsedate_to_datetime(r.params["Timestamp"]) for r in got]
    assert stamps == sorted(stamps)
    completed = got[-1].params
    # 30 s of <Pause> on the simulated clock, however fast the test ran
    assert int(completed["CallDuration"]) >= 30
    assert completed["Duration"] == "1"
    assert completed["SipResponseCode"] == "200"
    assert "CallDuration" not in got[2].params


async def test_default_events_and_get_callbacks(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.busy(ring_s=1))
    resp = await rest(
        tw,
        "POST",
        "/Calls.json",
        data={
            "To": STAFF,
            "From": DEALER,
            "Twiml": "<Response><Say>unused</Say></Response>",
            "StatusCallback": esc.url("/api/voice/human-status?x=1"),
            "StatusCallbackMethod": "GET",
        },
    )
    sid = resp.json()["sid"]
    await tw.wait_for_status(sid, "busy")
    await tw.drain_callbacks()
    (only,) = esc.to("/api/voice/human-status")  # no events given: completed alone
    assert only.method == "GET"
    assert only.valid  # signed over the full URL with the parameters in its query
    assert only.params["CallStatus"] == "busy"
    assert only.params["x"] == "1"
    assert only.params["SequenceNumber"] == "0"


async def test_inline_twiml_and_machine_detection(tw: TwilioSim, esc: FakeApp) -> None:
    tw.add_human(STAFF, HumanScript.call_screening(ring_s=1).with_(answered_by="machine_start"))
    client = tw.twilio_client()
    call = await asyncio.to_thread(
        client.calls.create,
        to=STAFF,
        from_=DEALER,
        twiml="<Response><Say>Your car is ready.</Say><Hangup/></Response>",
        machine_detection="Enable",
        status_callback=esc.url("/api/voice/human-status"),
    )
    await tw.wait_for_status(call.sid, "completed")
    await tw.drain_callbacks()
    assert tw.said_to(call.sid) == ["Your car is ready."]
    assert tw.call(call.sid).hangup_by == "twiml"
    (done,) = esc.to("/api/voice/human-status")
    assert done.params["AnsweredBy"] == "machine_start"
    fetched = await asyncio.to_thread(client.calls(call.sid).fetch)
    assert fetched.answered_by == "machine_start"


async def test_unscripted_number_fails(tw: TwilioSim, esc: FakeApp) -> None:
    client = tw.twilio_client()
    call = await asyncio.to_thread(client.calls.create, **create_params(esc))
    assert await tw.wait_for_status(call.sid) == "failed"
    (error,) = tw.errors
    assert error.data["code"] == 13224
    assert STAFF not in error.data["message"]  # phone numbers are masked


async def test_conference_resources(tw: TwilioSim, esc: FakeApp) -> None:
    room = "<Response><Dial><Conference>room-1</Conference></Dial></Response>"
    tw.add_human(STAFF, HumanScript.accepts_customer_hangs_up_first())
    tw.add_human("+14155550124", HumanScript.accepts_customer_hangs_up_first())
    client = tw.twilio_client()
    a = await asyncio.to_thread(client.calls.create, to=STAFF, from_=DEALER, twiml=room)
    b = await asyncio.to_thread(client.calls.create, to="+14155550124", from_=DEALER, twiml=room)
    conf = await asyncio.to_thread(lambda: client.conferences.list(friendly_name="room-1"))
    while not conf or conf[0].status != "in-progress":
        await asyncio.sleep(0.01)
        conf = await asyncio.to_thread(lambda: client.conferences.list(friendly_name="room-1"))
    sid = conf[0].sid
    raw = await rest(tw, "GET", f"/Conferences/{sid}.json")
    validate(CONFERENCE, raw.json())
    parts = await rest(tw, "GET", f"/Conferences/{sid}/Participants.json")
    assert {p["call_sid"] for p in parts.json()["participants"]} == {a.sid, b.sid}
    for p in parts.json()["participants"]:
        validate(PARTICIPANT, p)
    ended = await asyncio.to_thread(client.conferences(sid).update, status="completed")
    assert ended.status == "completed"
    assert ended.reason_conference_ended == "conference-ended-via-api"
    validate(CONFERENCE, (await rest(tw, "GET", f"/Conferences/{sid}.json")).json())
    # both legs' <Dial> returned; with no more verbs they hang up
    assert await tw.wait_for_status(a.sid) == "completed"
    assert await tw.wait_for_status(b.sid) == "completed"
    missing = await rest(tw, "GET", "/Conferences/CF" + "0" * 32 + ".json")
    assert missing.json()["code"] == 20404


def test_basic_header_format() -> None:
    # the header the twilio client sends is what the simulator decodes
    token = base64.b64encode(b"ACx:secret").decode()
    assert base64.b64decode(token).decode().partition(":") == ("ACx", ":", "secret")
